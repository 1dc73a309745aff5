"""The actor: steps a vectorized env with the agent and cuts overlapping rollouts.

It keeps, per stream, the core state after the latest observation (``state``) and before it
(``state_prev``); the latter is each rollout's ``core_state``, because entry 0 of a rollout
is the latest observation of the previous one (see ``rtrl_rl.rollout``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rtrl_rl.envs.base import TimeStep, VecEnv
from rtrl_rl.rollout import Rollout

#: (obs [B,...], reward [B], prev_action [B,*S], first [B], state [B,D])
#: -> (action [B,*S], distribution parameters [B,P], state), S the action shape
Policy = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]

#: Old names of rollout fields in the ``entry0`` of saved actor states, and their names
#: now: checkpoints written while ``Rollout.dist_params`` was ``logits`` still resume.
RENAMED = {"logits": "dist_params"}


class Actor:
    def __init__(self, env: VecEnv, policy: Policy, initial_state: torch.Tensor,
                 param_size: int, unroll: int, stream_offset: int = 0) -> None:
        """initial_state: ``[B, D]`` zeros in the policy's dtype, on the CPU; param_size:
        the width ``P`` of the action distribution's parameters."""
        spec = env.spec
        self.env, self.policy, self.unroll = env, policy, unroll
        b, t1 = spec.num_envs, unroll + 1
        self.buf = {
            "obs": torch.zeros(t1, b, *spec.obs_shape, dtype=spec.obs_dtype),
            "reward": torch.zeros(t1, b),
            "first": torch.zeros(t1, b, dtype=torch.bool),
            "prev_action": torch.zeros(t1, b, *spec.action.shape, dtype=spec.action.dtype),
            "action": torch.zeros(t1, b, *spec.action.shape, dtype=spec.action.dtype),
            "dist_params": torch.zeros(t1, b, param_size),
        }
        self.state = initial_state.clone()
        self.state_prev = initial_state.clone()
        self.zero_state = initial_state.clone()
        self.stream_ids = torch.arange(stream_offset, stream_offset + b)
        self.policy_version = 0
        self.episodes: list[tuple[float, int]] = []  # finished (return, length), drained by caller
        self.steps = 0  # agent steps taken (summed over streams)
        defer = getattr(env, "defer", None)  # the env check, once per rollout
        self._check = defer() if defer is not None else None

    def _record(self, t: int, ts: TimeStep, prev_action: torch.Tensor) -> None:
        self.state_prev = self.state
        action, params, self.state = self.policy(
            ts.obs, ts.reward, prev_action, ts.first, self.state)
        buf = self.buf
        buf["obs"][t] = ts.obs
        buf["reward"][t] = ts.reward
        buf["first"][t] = ts.first
        buf["prev_action"][t] = prev_action
        buf["action"][t] = action.cpu()
        buf["dist_params"][t] = params.float().cpu()
        if ts.done.any():
            for i in ts.done.nonzero().flatten().tolist():
                self.episodes.append(
                    (float(ts.episode_return[i]), int(ts.episode_length[i])))

    def start(self, seed: int) -> None:
        """Reset the env and act on the first observations (entry 0 of the first rollout)."""
        ts = self.env.reset(seed=seed)
        self.state = self.zero_state.clone()
        self._record(0, ts, torch.zeros_like(self.buf["action"][0]))

    def collect(self) -> Rollout:
        """Step ``unroll`` times; return a rollout of ``unroll + 1`` entries (copied)."""
        core_state = self.state_prev.clone()
        for t in range(1, self.unroll + 1):
            prev_action = self.buf["action"][t - 1].clone()
            ts = self.env.step(prev_action)
            self._record(t, ts, prev_action)
        self.steps += self.unroll * self.stream_ids.numel()
        if self._check is not None:
            self._check(self.buf["reward"], self.buf["obs"])
        rollout = Rollout(
            **{k: v.clone() for k, v in self.buf.items()},
            core_state=core_state,
            stream_ids=self.stream_ids.clone(),
            policy_version=torch.full_like(self.stream_ids, self.policy_version),
        )
        for v in self.buf.values():
            v[0] = v[-1]
        return rollout

    def drain_episodes(self) -> list[tuple[float, int]]:
        out, self.episodes = self.episodes, []
        return out

    def state_dict(self) -> dict:
        state = {"state": self.state, "state_prev": self.state_prev,
                 "entry0": {k: v[0].clone() for k, v in self.buf.items()}}
        env_state = getattr(self.env, "state_dict", None)
        if env_state is not None:
            state["env"] = env_state()
        return state

    def load_state_dict(self, state: dict) -> bool:
        """Restore; returns False (and leaves the actor untouched) when the env cannot be
        restored, in which case the caller should ``start`` afresh."""
        if "env" not in state or not hasattr(self.env, "load_state_dict"):
            return False
        self.env.load_state_dict(state["env"])
        self.state, self.state_prev = state["state"].clone(), state["state_prev"].clone()
        for k, v in state["entry0"].items():
            self.buf[RENAMED.get(k, k)][0] = v
        return True
