"""The async runner: batches in stream order, survives a worker crash, leaves no orphans."""

from __future__ import annotations

import os

import pytest
import torch

from rtrl_rl.algos.learner import Learner
from rtrl_rl.envs import make_env
from rtrl_rl.grad import make_grad
from rtrl_rl.models.agent import Agent
from rtrl_rl.runners.async_runner import AsyncRunner
from tests.runners.helpers import make_cfg

ASYNC = ["runner=async", "runner.num_workers=2", "runner.num_envs=4", "runner.unroll=5",
         "env.delay=3", "model.hidden_size=16"]


def _build(tmp_path, crash_after=None):
    cfg = make_cfg(tmp_path, *ASYNC)
    env = make_env(cfg.env, cfg.runner.num_envs, cfg.seed)
    agent = Agent(env.spec, cfg.model, cfg.algo.reward_clip)
    runner = AsyncRunner(cfg, agent, torch.device("cpu"), env.spec, probe_env=env,
                         crash_after=crash_after)
    return cfg, agent, runner


def _alive(pids):
    out = []
    for pid in pids:
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split()[2] != "Z":
                    out.append(pid)
        except (ProcessLookupError, FileNotFoundError):
            pass
    return out


def test_batches_tile_time_per_stream(tmp_path):
    cfg, agent, runner = _build(tmp_path)
    grad = make_grad("rtrl", agent.core, cfg.runner.num_envs)
    learner = Learner(agent, grad, cfg.algo, 100)
    try:
        prev = None
        for _ in range(4):
            rollout, _ = runner.next_rollout(learner.updates)
            assert rollout.stream_ids.tolist() == [0, 1, 2, 3]
            if prev is not None:  # entry T of one rollout is entry 0 of the next
                assert torch.equal(prev.obs[-1], rollout.obs[0])
                assert torch.equal(prev.action[-1], rollout.action[0])
            learner.update(rollout)
            runner.after_update()
            prev = rollout
        assert runner.version.value == 4
    finally:
        runner.close()
    assert not _alive([p.pid for p in runner.procs])


def test_worker_crash_is_restarted_and_counted(tmp_path):
    cfg, agent, runner = _build(tmp_path, crash_after={1: 2})
    try:
        for _ in range(6):
            rollout, _ = runner.next_rollout(0)
            assert rollout.batch == 4
        assert runner.restarts == 1 and runner.lost_frames > 0
        assert runner.metrics()["worker_restarts"] == 1
    finally:
        runner.close()
    assert not _alive([p.pid for p in runner.procs])


def test_learner_error_stops_all_workers(tmp_path):
    from rtrl_rl.runners.loop import train

    cfg = make_cfg(tmp_path, *ASYNC, "max_updates=50", "runner.total_frames=100000")
    pids = []
    original = AsyncRunner.after_update

    def boom(self):
        pids.extend(p.pid for p in self.procs)
        original(self)
        if self.version.value == 2:
            raise RuntimeError("learner exploded")

    AsyncRunner.after_update = boom
    try:
        with pytest.raises(RuntimeError, match="learner exploded"):
            train(cfg)
    finally:
        AsyncRunner.after_update = original
    assert pids and not _alive(pids)
