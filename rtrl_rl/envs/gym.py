"""Registered gymnasium ids through ``gymnasium.vector`` (sync or async).

Spaces: observations become ``float32 [B, D]`` vectors and actions are Discrete,
MultiDiscrete or Box (``gym_spaces.py`` says how); any other space is a ``ConfigError``
before the first step. ``env.wrappers`` wrap each sub-env (``wrappers.py``).

Auto-reset: the vector env runs with ``AutoresetMode.SAME_STEP``: when a sub-env terminates or
is truncated, the same ``step`` call resets it and returns the new episode's first observation
(the final one goes to ``info["final_obs"]``, dropped here) with the last reward and the
``terminated``/``truncated`` flags of the episode that ended. That is ``base.py``'s
convention, so ``first = done = terminated | truncated``. (The default ``NEXT_STEP`` mode would
instead spend one extra ``step`` call, whose action is ignored, on each reset.)
"""

from __future__ import annotations

import numpy as np
import torch

from rtrl_rl.envs.base import EnvSpec, EpisodeTracker, TimeStep, check_actions
from rtrl_rl.envs.config import GymConfig
from rtrl_rl.envs.gym_spaces import action_codec, obs_codec
from rtrl_rl.envs.seeding import SeedStream
from rtrl_rl.envs.wrappers import apply_wrappers
from rtrl_rl.errors import ConfigError, EnvDataError


class GymEnv:
    """``VecEnv`` over ``num_envs`` copies of a gymnasium id; see the module docstring."""

    def __init__(self, cfg: GymConfig, num_envs: int, seed: int, split: str = "train") -> None:
        import gymnasium
        from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

        self.cfg = cfg
        self._seeds = SeedStream(seed, split)
        kwargs = dict(cfg.make_kwargs)
        if cfg.max_episode_steps is not None:
            kwargs["max_episode_steps"] = cfg.max_episode_steps

        def make_one():
            return apply_wrappers(gymnasium.make(cfg.id, **kwargs), cfg.wrappers)

        vec_cls = SyncVectorEnv if cfg.vectorization == "sync" else AsyncVectorEnv
        self._env = vec_cls([make_one] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)
        try:
            self._act = action_codec(self._env.single_action_space, cfg.id)
            obs = obs_codec(self._env.single_observation_space, cfg.id)
        except ConfigError:
            self._env.close()
            raise
        self._encode = obs.encode
        self.spec = EnvSpec(obs_shape=(obs.dim,), obs_dtype=torch.float32, num_envs=num_envs,
                            action=self._act.spec, image_shape=obs.image_shape)
        self._tracker = EpisodeTracker(num_envs)

    def reset(self, seed: int | None = None) -> TimeStep:
        """All streams start new episodes: ``first = 1``, ``done = 0``."""
        obs, _ = self._env.reset(seed=self._seeds.next(seed))
        self._tracker.reset()
        return TimeStep.at_reset(self._encode(obs))

    def step(self, actions: torch.Tensor) -> TimeStep:
        """``actions``: ``[B, *spec.action.shape]`` (Box actions are clipped to the bounds
        here). Returns the next ``TimeStep``."""
        check_actions(actions, self.spec.num_envs, self.spec.action.shape)
        try:
            obs, reward, terminated, truncated, _ = self._env.step(self._act.to_env(actions))
        except ValueError as e:  # gymnasium stacking sub-env observations of the wrong shape
            if "shape" not in str(e) and "broadcast" not in str(e):
                raise
            raise EnvDataError(f"a sub-env's observation does not fit its observation_space "
                               f"{self._env.single_observation_space} ({e})") from None
        ended = torch.from_numpy(np.logical_or(terminated, truncated))
        reward_t = torch.from_numpy(np.asarray(reward, dtype=np.float32).copy())
        ep_ret, ep_len = self._tracker.update(reward_t, ended)
        return TimeStep(
            obs=self._encode(obs), reward=reward_t, first=ended, done=ended.clone(),
            episode_return=ep_ret, episode_length=ep_len,
        )

    def reset_streams(self, mask: torch.Tensor) -> torch.Tensor:
        """Restart the streams where ``mask`` (``[B]`` bool) is set; returns the observation
        of every stream ``[B, D]``, fresh where ``mask``."""
        keep = mask.numpy().copy()
        obs, _ = self._env.reset(options={"reset_mask": keep})
        self._tracker.ret[mask] = 0.0
        self._tracker.len[mask] = 0
        return self._encode(obs)

    def close(self) -> None:
        self._env.close()
