"""The check at the door: every ``TimeStep`` an env returns is checked before any runner
or learner sees it.

``make_env`` wraps every adapter in ``CheckedEnv``, so every family and every runner (the
sync one and both async placements, whose workers build their envs with ``make_env``) goes
through the same check:

- the observation's shape and dtype must be the ``EnvSpec``'s (always an ``EnvDataError``:
  there is nothing sensible to repair);
- the reward and, for float observations, the observation must be finite. What happens
  otherwise is ``env.nonfinite``:

  - ``error`` (the default): ``EnvDataError``, one line naming the env, the stream, the
    step, the field and the value; the run saves its last good state and exits 2;
  - ``zero``: the non-finite entries become 0, counted in ``env/nonfinite_zeroed``;
  - ``reset``: the stream's episode ends there: its reward becomes 0, ``first`` is set (the
    core state and RTRL's sensitivities restart) and the env restarts that stream where the
    adapter can (``reset_streams``; gymnasium ids can), else only its non-finite entries
    are zeroed. Counted in ``env/nonfinite_resets``; the cut episode is not reported.

An episode whose reported return is not finite is left out of the returns in every mode
but ``error`` (``env/nonfinite_episodes``): its return has no value to average.

The fast path is one sum per field (a non-finite entry makes the sum non-finite); only then
is each entry looked at, so a huge but finite sum is not an error. A caller that collects
whole rollouts (the actor, an env worker's group) may take the ``error`` mode's finiteness
check over with ``defer``: it then checks each rollout once, before anyone learns from it,
instead of each step (a tenth of the cost at T = 10). The policy may act on a non-finite
observation for the rest of that rollout; the run stops at its end all the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from rtrl_rl.envs.base import EnvSpec, TimeStep, VecEnv
from rtrl_rl.errors import EnvDataError

#: What ``env.nonfinite`` may say, with what each does (see the module docstring).
NONFINITE_MODES = {
    "error": "stop the run with one line and exit 2",
    "zero": "replace the non-finite entries with 0",
    "reset": "end that stream's episode (its reward 0, first set, the env restarted)",
}
#: The counters ``CheckedEnv`` adds to ``metrics.csv`` (through the runner).
COUNTERS = ("env/nonfinite_zeroed", "env/nonfinite_resets", "env/nonfinite_episodes")


def take_counts(env) -> dict[str, int]:
    """``env``'s counter increments since the last call (none for an unchecked env)."""
    take = getattr(env, "take_counts", None)
    return take() if take is not None else {}


def add_counts(total: dict[str, int], new: dict[str, int]) -> dict[str, int]:
    """Add ``new`` into ``total`` (in place); returns ``total``."""
    for k, v in new.items():
        total[k] = total.get(k, 0) + v
    return total


def _finite(x: torch.Tensor) -> bool:
    return math.isfinite(float(x.sum()))


class CheckedEnv:
    """A ``VecEnv`` whose ``reset`` and ``step`` return only checked data.

    env: the adapter; label: the env's name in messages (e.g. ``gym:CartPole-v1``);
    mode: one of ``NONFINITE_MODES``. ``first_stream``: the global index of stream 0, set
    by workers that own a slice of the streams, so messages name the run's stream.
    Other attributes (``frames_per_step``, ``state_dict`` ...) are the adapter's.
    """

    def __init__(self, env: VecEnv, label: str, mode: str = "error") -> None:
        if mode not in NONFINITE_MODES:
            raise ValueError(f"mode: one of {sorted(NONFINITE_MODES)}, got {mode!r}")
        self.env, self.label, self.mode = env, label, mode
        self.spec: EnvSpec = env.spec
        self.first_stream = 0
        self.steps = 0  # step calls since the last reset
        self._deferred = False
        self._obs_shape = (self.spec.num_envs, *self.spec.obs_shape)
        self._float_obs = self.spec.obs_dtype.is_floating_point
        self._new = dict.fromkeys(COUNTERS, 0)  # increments not yet taken

    def __getattr__(self, name: str):
        if name == "env":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.env, name)

    def reset(self, seed: int | None = None) -> TimeStep:
        self.steps = 0
        return self._check(self.env.reset(seed=seed))

    def step(self, actions: torch.Tensor) -> TimeStep:
        self.steps += 1
        try:
            ts = self.env.step(actions)
        except EnvDataError as e:  # the adapter's own finding: say where
            raise EnvDataError(f"env {self.label}: step {self.steps}: {e}") from None
        return self._check(ts)

    def close(self) -> None:
        self.env.close()

    def defer(self) -> Callable[[torch.Tensor, torch.Tensor], None] | None:
        """Take the per-step finiteness check off, for a caller that runs the returned
        ``check_rollout`` on every whole rollout; None (and nothing deferred) in the modes
        that repair, which must act before the policy sees a step."""
        if self.mode != "error":
            return None
        self._deferred = True
        return self.check_rollout

    def check_rollout(self, reward: torch.Tensor, obs: torch.Tensor) -> None:
        """Raise ``EnvDataError`` if the rollout's ``reward [T+1, B]`` or float ``obs
        [T+1, B, ...]`` holds a non-finite value; entry ``T`` is the latest step."""
        if self._finite(reward, obs):
            return
        last = reward.shape[0] - 1
        for t in range(last + 1):
            ts = TimeStep.at_reset(obs[t])
            ts.reward = reward[t]
            steps, self.steps = self.steps, self.steps - (last - t)
            try:
                self._repair(ts)  # error mode: raises at the first bad entry
            finally:
                self.steps = steps

    def take_counts(self) -> dict[str, int]:
        """The counters' increments since the last call (``COUNTERS``)."""
        out, self._new = self._new, dict.fromkeys(COUNTERS, 0)
        return out

    def _finite(self, reward: torch.Tensor, obs: torch.Tensor) -> bool:
        """The fast path: the reward and (float) observation sums are finite."""
        return _finite(reward) and (not self._float_obs or _finite(obs))

    def _where(self, stream: int) -> str:
        return f"env {self.label}: stream {self.first_stream + stream}, step {self.steps}"

    def _check(self, ts: TimeStep) -> TimeStep:
        obs = ts.obs
        if tuple(obs.shape) != self._obs_shape or obs.dtype != self.spec.obs_dtype:
            raise EnvDataError(
                f"env {self.label}: step {self.steps}: observation has shape "
                f"{list(obs.shape)} and dtype {obs.dtype}, expected {list(self._obs_shape)} "
                f"and {self.spec.obs_dtype}")
        if not self._deferred and not self._finite(ts.reward, obs):
            ts = self._repair(ts)
        if self.mode != "error" and bool(ts.done.any()):  # a return summed over a repair
            ts = self._drop_nonfinite_returns(ts)
        return ts

    def _repair(self, ts: TimeStep) -> TimeStep:
        """The slow path: find the non-finite entries; raise, zero or reset."""
        bad_reward = ~torch.isfinite(ts.reward)
        bad_obs = (~torch.isfinite(ts.obs).flatten(1) if self._float_obs
                   else torch.zeros(ts.obs.shape[0], 1, dtype=torch.bool))
        streams = (bad_reward | bad_obs.any(1)).nonzero().flatten()
        if streams.numel() == 0:
            return ts  # a huge sum, not a non-finite entry
        b = int(streams[0])
        if self.mode == "error":
            if bad_reward[b]:
                field, value = "reward", float(ts.reward[b])
            else:
                i = int(bad_obs[b].nonzero()[0])
                field, value = f"observation[{i}]", float(ts.obs[b].flatten()[i])
            raise EnvDataError(f"{self._where(b)}: {field} is {value} (env.nonfinite=error; "
                               "zero or reset to go on)")
        ts.reward[bad_reward] = 0.0
        if self._float_obs:
            ts.obs.view(ts.obs.shape[0], -1)[bad_obs] = 0.0
        if self.mode == "zero":
            self._new["env/nonfinite_zeroed"] += int(bad_reward.sum() + bad_obs.sum())
            return ts
        mask = torch.zeros_like(ts.first)
        mask[streams] = True
        reset = getattr(self.env, "reset_streams", None)
        if reset is not None:
            fresh = reset(mask)
            ts.obs[mask] = fresh[mask]
            if self._float_obs:  # a fresh start that is not finite either: zeroed
                ts.obs[~torch.isfinite(ts.obs)] = 0.0
        ts.reward[mask] = 0.0
        ts.first[mask] = True
        ts.done[mask] = False  # the cut episode is not reported
        self._new["env/nonfinite_resets"] += int(streams.numel())
        return ts

    def _drop_nonfinite_returns(self, ts: TimeStep) -> TimeStep:
        bad = ts.done & ~torch.isfinite(ts.episode_return)
        if bad.any():
            ts.done[bad] = False
            self._new["env/nonfinite_episodes"] += int(bad.sum())
        return ts
