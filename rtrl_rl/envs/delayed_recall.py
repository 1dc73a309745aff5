"""Delayed recall: a built-in memory task, vectorized over streams in torch.

One episode per stream, ``D + 2`` agent steps (``D = delay``, or uniform in
``[delay, delay_max]`` per episode):

    obs index   0          1 .. D        D + 1
    obs         cue c      blank         query flag
    reward of   0          0             +1 if action == c else -1   (action at the query)

The episode ends with the query action; the same ``step`` returns the next episode's cue with
``first = 1`` (``base.py``'s convention). Actions before the query are ignored. A uniformly
random policy earns ``(1 - (K - 1)) / K`` per episode (-0.5 for ``K = 4``).

Observation ``float32 [B, K + 1]`` (``[B, K + 2]`` with ``cue_flag``): columns ``0 .. K-1``
are the one-hot cue (non-zero only on the episode's first observation), column ``K`` is the
query flag, column ``K + 1`` the cue flag. Blank steps are all zeros.

Harder variants (both off by default):

- ``distractors``: each delay step shows a random one-hot in the cue columns instead of a
  blank, so the cue is only the episode's *first* cue-like observation and a cell must
  close its memory after it (POPGym's RepeatFirst is this task with a dense reward).
- ``dense_reward``: every action is scored, ``(+1 if action == c else -1) / (D + 2)``, so an
  episode's return is still in ``[-1, 1]`` and a random policy still earns -0.5 for K = 4.
- ``cue_flag``: one more column, 1 on the cue's observation only, so that which observation
  to store is in the input and not only in the episode start. With distractors the cue is
  then the flagged one: a gated cell can open its memory on the flag and must hold it
  closed through the delay (the classic gated-recall form), where a linear recurrence
  cannot gate at all.

Randomness: one seeded ``torch.Generator``. Every ``step`` draws a new cue (and delay, when
``delay_max`` is set) for all ``B`` streams and uses the draws of the streams whose episode just
ended, so a run depends only on the seed, never on timing. With distractors, every new
observation also draws one cue-like value per stream.
"""

from __future__ import annotations

import torch

from rtrl_rl.envs.base import EnvSpec, EpisodeTracker, TimeStep, check_actions
from rtrl_rl.envs.config import DelayedRecallConfig
from rtrl_rl.envs.seeding import SeedStream


class DelayedRecallEnv:
    """``VecEnv`` for the delayed-recall task; see the module docstring."""

    def __init__(
        self, cfg: DelayedRecallConfig, num_envs: int, seed: int, split: str = "train"
    ) -> None:
        self.cfg = cfg
        self.num_cues = cfg.num_cues
        self.delay_min = cfg.delay
        self.delay_max = cfg.delay if cfg.delay_max is None else cfg.delay_max
        self.distractors, self.dense_reward = cfg.distractors, cfg.dense_reward
        self.cue_flag = cfg.cue_flag
        self.spec = EnvSpec(
            obs_shape=(cfg.num_cues + 1 + int(cfg.cue_flag),), obs_dtype=torch.float32,
            num_actions=cfg.num_cues,
            num_envs=num_envs,
        )
        self._seeds = SeedStream(seed, split)
        self._gen = torch.Generator()
        self._tracker = EpisodeTracker(num_envs)
        self._t = torch.zeros(num_envs, dtype=torch.int64)  # index of the current obs
        self._cue = torch.zeros(num_envs, dtype=torch.int64)
        self._delay = torch.full((num_envs,), self.delay_min, dtype=torch.int64)
        self._started = False

    def _draw(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A fresh ``(cue, delay)`` for every stream, ``[B]`` each."""
        b = self.spec.num_envs
        cue = torch.randint(self.num_cues, (b,), generator=self._gen)
        if self.delay_max > self.delay_min:
            delay = torch.randint(self.delay_min, self.delay_max + 1, (b,), generator=self._gen)
        else:
            delay = torch.full((b,), self.delay_min, dtype=torch.int64)
        return cue, delay

    def _obs(self) -> torch.Tensor:
        """``float32 [B, K + 1]`` (``[B, K + 2]`` with the cue flag) for the current
        ``(t, cue, delay)``."""
        b, k = self.spec.num_envs, self.num_cues
        obs = torch.zeros(b, k + 1 + int(self.cue_flag), dtype=torch.float32)
        if self.cue_flag:
            obs[:, k + 1] = (self._t == 0).to(torch.float32)
        shown, visible = self._cue, self._t == 0
        if self.distractors:
            during = (self._t >= 1) & (self._t <= self._delay)
            shown = torch.where(during, torch.randint(k, (b,), generator=self._gen), shown)
            visible = visible | during
        obs[:, :k] = torch.nn.functional.one_hot(shown, k) * visible.unsqueeze(1)
        obs[:, k] = (self._t == self._delay + 1).to(torch.float32)
        return obs

    def reset(self, seed: int | None = None) -> TimeStep:
        """All streams start new episodes: ``first = 1``, ``done = 0``."""
        self._gen.manual_seed(self._seeds.next(seed))
        self._cue, self._delay = self._draw()
        self._t.zero_()
        self._tracker.reset()
        self._started = True
        return TimeStep.at_reset(self._obs())

    def step(self, actions: torch.Tensor) -> TimeStep:
        """``actions``: int ``[B]`` in ``[0, K)``. Returns the next ``TimeStep``."""
        b = self.spec.num_envs
        check_actions(actions, b)
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions = actions.detach().to("cpu", torch.int64)
        done = self._t == self._delay + 1
        hit = (actions == self._cue).to(torch.float32)
        if self.dense_reward:
            reward = (2.0 * hit - 1.0) / (self._delay + 2).to(torch.float32)
        else:
            reward = torch.where(done, 2.0 * hit - 1.0, torch.zeros_like(hit))
        new_cue, new_delay = self._draw()
        self._cue = torch.where(done, new_cue, self._cue)
        self._delay = torch.where(done, new_delay, self._delay)
        self._t = torch.where(done, torch.zeros_like(self._t), self._t + 1)
        ep_ret, ep_len = self._tracker.update(reward, done)
        return TimeStep(
            obs=self._obs(), reward=reward, first=done, done=done.clone(),
            episode_return=ep_ret, episode_length=ep_len,
        )

    def state_dict(self) -> dict:
        """Everything needed to continue the streams exactly (for checkpoints)."""
        return {
            "t": self._t.clone(), "cue": self._cue.clone(), "delay": self._delay.clone(),
            "generator": self._gen.get_state(), "started": self._started,
            "episode_return": self._tracker.ret.clone(),
            "episode_length": self._tracker.len.clone(),
            "seed": self._seeds.seed, "resets": self._seeds.resets,
        }

    def load_state_dict(self, state: dict) -> None:
        if tuple(state["t"].shape) != (self.spec.num_envs,):
            raise ValueError(f"state is for {state['t'].shape[0]} streams, "
                             f"this env has {self.spec.num_envs}")
        self._t, self._cue = state["t"].clone(), state["cue"].clone()
        self._delay = state["delay"].clone()
        self._gen.set_state(state["generator"])
        self._started = bool(state["started"])
        self._tracker.ret = state["episode_return"].clone()
        self._tracker.len = state["episode_length"].clone()
        self._seeds.seed, self._seeds.resets = int(state["seed"]), int(state["resets"])

    def close(self) -> None:
        pass
