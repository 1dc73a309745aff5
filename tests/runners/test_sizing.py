"""``runner=auto``: the plan for machines described, not detected (a 16-core GPU machine
like the one the fast path was measured on, a small GPU box, a CPU-only machine)."""

from __future__ import annotations

import pytest

from rtrl_rl.config import validate
from rtrl_rl.errors import ConfigError
from rtrl_rl.runners import sizing
from rtrl_rl.runners.runner_config import AsyncRunnerConfig, RunnerConfig
from rtrl_rl.runners.sizing import Machine, plan
from rtrl_rl.train import compose_config

R2AC = {"kind": "auto", "num_envs": 32, "unroll": 50, "total_frames": 100,
        "num_workers": 0, "streams_per_worker": 0}
PPO = {**R2AC, "num_envs": 8}
H200 = Machine(cpus=16, cuda=True, gpu="NVIDIA H200")


def test_a_16_core_gpu_machine_gets_the_measured_fast_path():
    runner, line = plan(R2AC, H200, lag_ok=True)
    assert runner == {"kind": "async", "num_envs": 128, "num_workers": 16,
                      "inference": "learner", "env_groups": 2, "batch_size": 32,
                      "unroll": 50, "total_frames": 100}
    assert "16 env workers x 8 streams" in line and "NVIDIA H200" in line


def test_a_cpu_machine_keeps_the_sync_runner():
    runner, line = plan(R2AC, Machine(cpus=2, cuda=False))
    assert runner == {"kind": "sync", "num_envs": 32, "unroll": 50, "total_frames": 100}
    assert "sync" in line


def test_ppo_gets_no_streams_beyond_its_batch():
    runner, _ = plan(PPO, H200)
    assert (runner["num_workers"], runner["num_envs"], runner["batch_size"]) == (8, 8, 0)
    runner, _ = plan({**PPO, "num_envs": 64}, H200)
    assert (runner["num_workers"], runner["num_envs"], runner["env_groups"]) == (16, 64, 2)


def test_a_small_gpu_machine_gives_each_worker_more_streams():
    runner, _ = plan(R2AC, Machine(cpus=3, cuda=True), lag_ok=True)
    assert runner["num_workers"] == 3 and runner["num_envs"] >= 32
    assert runner["num_envs"] % 3 == 0


def test_explicit_sizes_that_cannot_hold_a_batch_are_one_line():
    with pytest.raises(ConfigError, match="fewer than the batch"):
        plan({**R2AC, "num_workers": 2, "streams_per_worker": 4}, H200, lag_ok=True)
    with pytest.raises(ConfigError, match="divisible"):
        plan({**PPO, "num_workers": 3}, H200)


@pytest.mark.parametrize("machine, kind", [(H200, AsyncRunnerConfig),
                                           (Machine(cpus=2, cuda=False), RunnerConfig)])
def test_presets_resolve_to_a_valid_runner(monkeypatch, machine, kind):
    monkeypatch.setattr(sizing.Machine, "detect", staticmethod(lambda device: machine))
    for preset in ("atari_r2ac", "procgen_r2ac", "atari_ppo", "procgen_ppo"):
        cfg = validate(compose_config([f"experiment={preset}", "device=cpu"], "r"))
        assert type(cfg.runner) is kind, preset
    cfg = validate(compose_config(["experiment=atari_r2ac", "device=cpu"], "r"))
    assert cfg.runner.streams_per_batch == 32
    if machine.cuda:  # IMPALA corrects for lag: 8 streams per worker; PPO: its batch only
        assert cfg.runner.num_envs == 128
        ppo = validate(compose_config(["experiment=atari_ppo", "device=cpu"], "r"))
        assert ppo.runner.num_envs == 8
