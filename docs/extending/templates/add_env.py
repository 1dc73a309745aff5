"""A new env family as a plugin: ``env=echo``, a small memory task vectorized in torch.

Each step shows one of ``num_symbols`` symbols (one-hot); from step ``lag`` on, the action
is rewarded +1 when it names the symbol shown ``lag`` steps before. An episode is ``length``
actions: a random policy earns ``(length - lag) / num_symbols``, a perfect one
``length - lag``. With ``lag >= 1`` the agent must remember.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from rtrl_rl.envs import EnvOptions, EnvSpec, EpisodeTracker, TimeStep, register_env_family
from rtrl_rl.envs.base import check_actions
from rtrl_rl.envs.seeding import SeedStream
from rtrl_rl.errors import ConfigError


@dataclass
class EchoConfig(EnvOptions):
    """Name the symbol shown ``lag`` steps ago."""

    family: ClassVar[str] = "echo"
    num_symbols: int = 4
    """Symbols to choose from (the actions)."""
    lag: int = 1
    """How many steps back the rewarded symbol was shown (0: the current one)."""
    length: int = 20
    """Actions per episode."""

    def check(self) -> None:
        if self.num_symbols < 2:
            raise ConfigError(f"env.num_symbols: must be >= 2, got {self.num_symbols}")
        if not 0 <= self.lag < self.length:
            raise ConfigError(f"env.lag: must be in [0, length), got {self.lag}")


class EchoEnv:
    """The ``VecEnv`` of the family (``rtrl_rl/envs/base.py`` states the protocol)."""

    def __init__(self, cfg: EchoConfig, num_envs: int, seed: int, split: str = "train") -> None:
        self.cfg = cfg
        self.spec = EnvSpec(obs_shape=(cfg.num_symbols,), obs_dtype=torch.float32,
                            num_envs=num_envs, num_actions=cfg.num_symbols)
        self._seeds = SeedStream(seed, split)  # (seed, split) -> unrelated backend seeds
        self._gen = torch.Generator()
        self._tracker = EpisodeTracker(num_envs)
        self._t = torch.zeros(num_envs, dtype=torch.int64)  # actions taken this episode
        self._shown = torch.zeros(num_envs, cfg.lag + 1, dtype=torch.int64)  # newest first

    def _draw(self, *shape: int) -> torch.Tensor:
        return torch.randint(self.cfg.num_symbols, (self.spec.num_envs, *shape),
                             generator=self._gen)

    def _obs(self) -> torch.Tensor:
        return torch.nn.functional.one_hot(self._shown[:, 0], self.cfg.num_symbols).float()

    def reset(self, seed: int | None = None) -> TimeStep:
        self._gen.manual_seed(self._seeds.next(seed))
        self._shown = self._draw(self.cfg.lag + 1)
        self._t.zero_()
        self._tracker.reset()
        return TimeStep.at_reset(self._obs())

    def step(self, actions: torch.Tensor) -> TimeStep:
        check_actions(actions, self.spec.num_envs)
        actions = actions.detach().to("cpu", torch.int64)
        hit = (actions == self._shown[:, self.cfg.lag]).float()
        reward = torch.where(self._t >= self.cfg.lag, hit, torch.zeros_like(hit))
        self._t += 1
        done = self._t == self.cfg.length
        self._t[done] = 0  # auto-reset: the next observation starts a new episode
        self._shown = torch.cat([self._draw(1), self._shown[:, :-1]], dim=1)
        episode_return, episode_length = self._tracker.update(reward, done)
        return TimeStep(obs=self._obs(), reward=reward, first=done, done=done.clone(),
                        episode_return=episode_return, episode_length=episode_length)

    def close(self) -> None:
        pass


register_env_family(EchoConfig, EchoEnv)
