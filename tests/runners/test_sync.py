"""The sync runner acts with the learner's own agent: each rollout is stamped with the policy
version it is handed (the learner's update count), so the logged policy lag is exactly 0."""

from __future__ import annotations

import torch

from rtrl_rl.algos.impala import ImpalaLearner
from rtrl_rl.envs import make_env
from rtrl_rl.grad import make_grad
from rtrl_rl.models.agent import Agent
from rtrl_rl.runners.sync import SyncRunner
from tests.runners.helpers import make_cfg


def _build(tmp_path):
    cfg = make_cfg(tmp_path, "env.delay=3", "model.hidden_size=8")
    env = make_env(cfg.env, cfg.runner.num_envs, cfg.seed)
    agent = Agent(env.spec, cfg.model, cfg.algo.reward_clip)
    runner = SyncRunner(cfg.env, cfg.runner, agent, torch.device("cpu"), cfg.seed, env=env)
    return cfg, agent, runner


def test_rollouts_carry_the_version_they_are_handed(tmp_path):
    cfg, _, runner = _build(tmp_path)
    try:
        for version in (7, 8, 3):
            rollout, _ = runner.next_rollout(version)
            assert rollout.policy_version.tolist() == [version] * cfg.runner.num_envs
    finally:
        runner.close()


def test_policy_lag_is_zero_in_a_training_loop(tmp_path):
    cfg, agent, runner = _build(tmp_path)
    learner = ImpalaLearner(agent, make_grad("bptt", agent.core, cfg.runner.num_envs), cfg.algo, 10)
    try:
        for k in range(3):
            rollout, _ = runner.next_rollout(learner.updates)
            assert rollout.policy_version.tolist() == [k] * cfg.runner.num_envs
            assert learner.update(rollout)["policy_lag"] == 0.0
            runner.after_update()
    finally:
        runner.close()
