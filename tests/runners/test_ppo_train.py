"""``algo=ppo`` end to end: every gradient method on the sync runner, the async runner with
batches of some streams only, Atari/ProcGen presets composing, resume, and its config errors."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from rtrl_rl.checkpoint import latest_checkpoint, load_checkpoint
from rtrl_rl.config import validate
from rtrl_rl.runners.loop import train
from rtrl_rl.train import CONFIG_DIR
from tests.runners.helpers import make_cfg

TINY = ["algo=ppo", "env.delay=3", "max_updates=3", "runner.total_frames=100000",
        "runner.num_envs=4", "runner.unroll=5", "algo.minibatches=2", "algo.epochs=2"]


def _rows(run_dir):
    return (run_dir / "metrics.csv").read_text().splitlines()


@pytest.mark.parametrize("grad,core", [
    (g, c) for g in ("rtrl", "bptt", "one_step") for c in ("elstm", "lru")] + [
    ("rtrl_reference", "elstm")])
def test_ppo_runs_with_every_gradient_method(tmp_path, grad, core):
    train(make_cfg(tmp_path, *TINY, f"grad={grad}", f"model.core={core}"))
    ckpt = load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))
    assert ckpt["learner"]["updates"] == 3 and ckpt["config"]["algo"]["name"] == "ppo"
    rows = _rows(tmp_path)
    header = rows[0].split(",")
    last = dict(zip(header, rows[-1].split(","), strict=True))
    assert {"approx_kl", "clip_frac", "loss/total"} <= set(header)
    assert all(math.isfinite(float(last[k])) for k in ("approx_kl", "loss/total", "grad_norm"))


@pytest.mark.parametrize("inference", ["worker", "learner"])
def test_ppo_on_the_async_runner_with_partial_batches(tmp_path, inference):
    cfg = make_cfg(tmp_path, *TINY, "runner=async", "runner.num_envs=8", "runner.num_workers=2",
                   "runner.batch_size=4", f"runner.inference={inference}", "max_updates=4")
    train(cfg)
    assert load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))["learner"]["updates"] == 4


def test_ppo_resume_matches_an_uninterrupted_run(tmp_path):
    base = [*TINY, "max_updates=6", "seed=4"]
    full = train(make_cfg(tmp_path / "full", *base))
    train(make_cfg(tmp_path / "split", *TINY, "max_updates=3", "seed=4"))
    split = train(make_cfg(tmp_path / "split", *base, "resume=true"))
    assert full == split or (math.isnan(full) and math.isnan(split))
    a = load_checkpoint(latest_checkpoint(tmp_path / "full" / "checkpoints"))
    b = load_checkpoint(latest_checkpoint(tmp_path / "split" / "checkpoints"))
    for k, v in a["agent"].items():
        assert (v == b["agent"][k]).all(), k


@pytest.mark.parametrize("preset,envs,minibatches", [("atari_ppo", 8, 4),
                                                     ("procgen_ppo", 64, 8)])
def test_ppo_presets_compose(preset, envs, minibatches):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        raw = compose("config", overrides=[f"experiment={preset}", "run_dir=x"])
    cfg = validate(raw)
    assert cfg.algo.name == "ppo" and cfg.algo.loss_reduction == "mean"
    assert (cfg.runner.num_envs, cfg.algo.minibatches) == (envs, minibatches)


@pytest.mark.parametrize("args,needle", [
    (["algo=ppo", "algo.minibatches=3"], "algo.minibatches"),
    (["algo=ppo", "algo.epochs=0"], "algo.epochs"),
    (["algo.name=sac"], "algo.name"),
])
def test_bad_ppo_options_are_one_line_errors(args, needle):
    run = subprocess.run([sys.executable, "-m", "rtrl_rl.train", *args], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], run.stderr
