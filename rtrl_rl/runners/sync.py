"""The sync runner: one process steps the envs, acts, and hands rollouts to the learner."""

from __future__ import annotations

import logging

import torch

from rtrl_rl.envs import make_env
from rtrl_rl.envs.guard import COUNTERS, add_counts, take_counts
from rtrl_rl.models.agent import Agent
from rtrl_rl.rollout import Rollout
from rtrl_rl.runners.actor import Actor

log = logging.getLogger(__name__)


class SyncRunner:
    """Acts with the learner's own agent (so the policy lag is always zero)."""

    def __init__(self, env_cfg: dict, runner_cfg, agent: Agent, device: torch.device,
                 seed: int, env=None) -> None:
        self.env = env if env is not None else make_env(env_cfg, runner_cfg.num_envs, seed)
        self.agent, self.device, self.seed = agent, device, seed
        b = self.env.spec.num_envs
        dtype = next(agent.parameters()).dtype
        init = agent.core.initial_state(b, dtype=dtype)
        self.actor = Actor(self.env, self._policy, init, agent.dist.param_size,
                           runner_cfg.unroll)
        self.started = False
        self.env_counts = dict.fromkeys(COUNTERS, 0)
        log.info("policy inference: in the learner process, on %s, between updates", device)

    def _policy(self, obs, reward, prev_action, first, state):
        d = self.device
        action, params, state = self.agent.act(obs.to(d), reward.to(d), prev_action.to(d),
                                               first.to(d), state.to(d))
        return action.cpu(), params.cpu(), state.cpu()

    def next_rollout(self, policy_version: int) -> tuple[Rollout, list[tuple[float, int]]]:
        if not self.started:
            self.actor.start(self.seed)
            self.started = True
        self.actor.policy_version = policy_version
        rollout = self.actor.collect()
        return rollout, self.actor.drain_episodes()

    def metrics(self) -> dict[str, float]:
        """The env check's counters (``env.nonfinite``), totals since the start."""
        return dict(add_counts(self.env_counts, take_counts(self.env)))

    def after_update(self) -> None:
        """Nothing to publish: the actor uses the learner's agent directly."""

    def state_dict(self) -> dict:
        return {"actor": self.actor.state_dict()} if self.started else {}

    def load_state_dict(self, state: dict) -> bool:
        if state and self.actor.load_state_dict(state["actor"]):
            self.started = True
            return True
        return False

    def close(self) -> None:
        self.env.close()
