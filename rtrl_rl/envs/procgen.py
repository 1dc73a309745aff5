"""ProcGen: the compiled games of the ``procgen`` package, driven through their C interface
(``rtrl_rl.envs.procgen_lib``; no ``gym3``, so numpy 2 works).

Observations: ``uint8 [B, 3, 64, 64]`` RGB (the backend's HWC frames transposed to CHW);
15 actions for every game.

Auto-reset: the games already follow ``base.py``'s convention. After ``act``, ``observe``
returns ``(reward, obs, first)`` where a stream whose episode just ended (death, success or
the game's own time limit) reports that episode's last reward, ``first = 1`` and the first
frame of its next level (the C++ game resets inside the same ``step``). So ``first`` is taken
as is and ``done = first`` after a step.

Levels: the train split plays ``[start_level, start_level + num_levels)`` (``num_levels = 0``:
the full level distribution); the eval split plays ``ProcgenConfig.eval_levels()``, by default
every level from ``start_level + num_levels`` upward (levels never seen in training). In
``exploration`` mode the library fixes one level per game, for both splits.
"""

from __future__ import annotations

import numpy as np
import torch

from rtrl_rl.envs.base import EnvSpec, EpisodeTracker, TimeStep, check_actions
from rtrl_rl.envs.config import ProcgenConfig
from rtrl_rl.envs.procgen_lib import ProcgenLib
from rtrl_rl.envs.seeding import SeedStream

NUM_ACTIONS = 15


class ProcgenEnv:
    """``VecEnv`` over ``num_envs`` streams of one ProcGen game; see the module docstring."""

    def __init__(
        self, cfg: ProcgenConfig, num_envs: int, seed: int, split: str = "train"
    ) -> None:
        self.cfg = cfg
        self.split = split
        self._seeds = SeedStream(seed, split)
        self.spec = EnvSpec(
            obs_shape=(3, 64, 64), obs_dtype=torch.uint8, num_actions=NUM_ACTIONS,
            num_envs=num_envs,
        )
        self._tracker = EpisodeTracker(num_envs)
        self._built_seed = self._seeds.next()
        self._env = self._build(self._built_seed)
        self._fresh = True  # built and not stepped: reset() need not rebuild

    def _build(self, rand_seed: int) -> ProcgenLib:
        cfg = self.cfg
        kwargs = dict(
            num=self.spec.num_envs,
            env_name=cfg.game,
            distribution_mode=cfg.distribution_mode,
            num_threads=cfg.num_threads,
            rand_seed=rand_seed,
            use_backgrounds=cfg.use_backgrounds,
            center_agent=cfg.center_agent,
            paint_vel_info=cfg.paint_vel_info,
        )
        if cfg.distribution_mode != "exploration":  # exploration fixes the level itself
            if self.split == "train":
                start, count = cfg.start_level, cfg.num_levels
            else:
                start, count = cfg.eval_levels()
            kwargs.update(start_level=start, num_levels=count)
        env = ProcgenLib(**kwargs)
        if env.num_actions != NUM_ACTIONS:
            raise RuntimeError(f"expected {NUM_ACTIONS} ProcGen actions, got {env.num_actions}")
        return env

    def _observe(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        reward, obs, first = self._env.observe()
        # views of the backend's buffers: copy each once. [B, H, W, C] -> [B, C, H, W]
        obs_t = torch.from_numpy(np.ascontiguousarray(obs["rgb"].transpose(0, 3, 1, 2)))
        reward_t = torch.from_numpy(reward.copy())
        first_t = torch.from_numpy(first.copy())
        return obs_t, reward_t, first_t

    def reset(self, seed: int | None = None) -> TimeStep:
        """Start every stream on a new level: ``first = 1``, ``done = 0``. libenv has no reset,
        so this rebuilds the backend (unless it was just built and never stepped)."""
        if not (self._fresh and seed is None):
            rand_seed = self._seeds.next(seed)
            if not (self._fresh and rand_seed == self._built_seed):
                self._env.close()
                self._built_seed = rand_seed
                self._env = self._build(rand_seed)
        self._fresh = False
        self._tracker.reset()
        obs, _, _ = self._observe()
        return TimeStep.at_reset(obs)

    def step(self, actions: torch.Tensor) -> TimeStep:
        """``actions``: int ``[B]`` in ``[0, 15)``. Returns the next ``TimeStep``."""
        b = self.spec.num_envs
        check_actions(actions, b)
        self._fresh = False
        self._env.act(actions.detach().to("cpu", torch.int32).numpy())
        obs, reward, first = self._observe()
        ep_ret, ep_len = self._tracker.update(reward, first)
        return TimeStep(
            obs=obs, reward=reward, first=first, done=first.clone(),
            episode_return=ep_ret, episode_length=ep_len,
        )

    def state_dict(self) -> dict:
        """The games' serialized states (levels, RNGs, positions) and episode counters."""
        return {
            "games": self._env.get_state(), "fresh": self._fresh,
            "episode_return": self._tracker.ret.clone(),
            "episode_length": self._tracker.len.clone(),
            "seed": self._seeds.seed, "resets": self._seeds.resets,
            "built_seed": self._built_seed,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly where ``state`` was taken; the next ``step`` matches."""
        if len(state["games"]) != self.spec.num_envs:
            raise ValueError(f"state is for {len(state['games'])} streams, "
                             f"this env has {self.spec.num_envs}")
        self._env.set_state(state["games"])
        self._fresh = bool(state["fresh"])
        self._tracker.ret = state["episode_return"].clone()
        self._tracker.len = state["episode_length"].clone()
        self._seeds.seed, self._seeds.resets = int(state["seed"]), int(state["resets"])
        self._built_seed = int(state["built_seed"])

    def close(self) -> None:
        self._env.close()  # frees the C env and joins its stepping threads; idempotent
