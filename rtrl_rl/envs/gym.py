"""Registered gymnasium ids through ``gymnasium.vector`` (sync or async).

Supported: ``Discrete`` actions; ``Box`` observations (flattened to ``float32 [B, D]``) or
``Discrete(n)`` observations (one-hot ``float32 [B, n]``). Anything else is a ``ConfigError``.

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
from rtrl_rl.envs.seeding import SeedStream
from rtrl_rl.errors import ConfigError


def _obs_encoder(space, env_id: str):
    """``(obs_dim, encode)``: ``encode`` maps a batched numpy obs to ``float32 [B, D]``."""
    from gymnasium import spaces

    if isinstance(space, spaces.Box):
        dim = int(np.prod(space.shape, dtype=np.int64))

        def encode_box(obs: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.array(obs, dtype=np.float32).reshape(len(obs), dim))

        return dim, encode_box
    if isinstance(space, spaces.Discrete):
        n, start = int(space.n), int(space.start)

        def encode_discrete(obs: np.ndarray) -> torch.Tensor:
            idx = torch.as_tensor(np.asarray(obs, dtype=np.int64) - start)
            return torch.nn.functional.one_hot(idx, n).to(torch.float32)

        return n, encode_discrete
    raise ConfigError(f"env.id: '{env_id}' has observation space {space}; "
                      "supported: Box (flattened) or Discrete (one-hot)")


class GymEnv:
    """``VecEnv`` over ``num_envs`` copies of a gymnasium id; see the module docstring."""

    def __init__(self, cfg: GymConfig, num_envs: int, seed: int, split: str = "train") -> None:
        import gymnasium
        from gymnasium import spaces
        from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

        self.cfg = cfg
        self._seeds = SeedStream(seed, split)
        kwargs = dict(cfg.make_kwargs)
        if cfg.max_episode_steps is not None:
            kwargs["max_episode_steps"] = cfg.max_episode_steps

        def make_one():
            return gymnasium.make(cfg.id, **kwargs)

        vec_cls = SyncVectorEnv if cfg.vectorization == "sync" else AsyncVectorEnv
        self._env = vec_cls([make_one] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)
        try:
            act_space = self._env.single_action_space
            if not isinstance(act_space, spaces.Discrete):
                raise ConfigError(f"env.id: '{cfg.id}' has action space {act_space}; "
                                  "only Discrete actions are supported")
            obs_dim, self._encode = _obs_encoder(self._env.single_observation_space, cfg.id)
        except ConfigError:
            self._env.close()
            raise
        self._act_start = int(act_space.start)
        self.spec = EnvSpec(
            obs_shape=(obs_dim,), obs_dtype=torch.float32, num_actions=int(act_space.n),
            num_envs=num_envs,
        )
        self._tracker = EpisodeTracker(num_envs)

    def reset(self, seed: int | None = None) -> TimeStep:
        """All streams start new episodes: ``first = 1``, ``done = 0``."""
        obs, _ = self._env.reset(seed=self._seeds.next(seed))
        self._tracker.reset()
        return TimeStep.at_reset(self._encode(obs))

    def step(self, actions: torch.Tensor) -> TimeStep:
        """``actions``: int ``[B]`` in ``[0, num_actions)``. Returns the next ``TimeStep``."""
        b = self.spec.num_envs
        check_actions(actions, b)
        acts = actions.detach().to("cpu", torch.int64).numpy() + self._act_start
        obs, reward, terminated, truncated, _ = self._env.step(acts)
        ended = torch.from_numpy(np.logical_or(terminated, truncated))
        reward_t = torch.from_numpy(np.asarray(reward, dtype=np.float32).copy())
        ep_ret, ep_len = self._tracker.update(reward_t, ended)
        return TimeStep(
            obs=self._encode(obs), reward=reward_t, first=ended, done=ended.clone(),
            episode_return=ep_ret, episode_length=ep_len,
        )

    def close(self) -> None:
        self._env.close()
