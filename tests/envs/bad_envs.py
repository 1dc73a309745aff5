"""Gymnasium envs that go bad at a chosen step; importing this module registers them.

``BadData-v0`` returns a 4-float observation and reward 1 for 20-step episodes, until one
sub-env, the ``stream``-th one built in its process, reaches its ``at``-th step (counted over
episodes; an episode's last observation is dropped by the vector env's autoreset, so pick
an ``at`` that is not a multiple of 20 for ``obs``): from there (``once=False``) or there
only (``once=True``) its ``field`` (``reward``, ``obs`` or ``shape``) goes bad with
``value``.
"""

from __future__ import annotations

import gymnasium
import numpy as np
from gymnasium import spaces

LENGTH = 20


class BadData(gymnasium.Env):
    built = 0  # sub-envs built in this process: the first is stream 0

    def __init__(self, field: str = "reward", value: float = float("nan"), at: int = 300,
                 stream: int = 0, once: bool = True) -> None:
        self.observation_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.field, self.value, self.at, self.once = field, value, at, once
        self.bad = BadData.built == stream
        BadData.built += 1
        self.steps, self._t = 0, 0

    def _obs(self) -> np.ndarray:
        return self.np_random.uniform(-1, 1, 4).astype(np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        self.steps += 1
        self._t += 1
        obs, reward = self._obs(), 1.0
        now = self.bad and (self.steps == self.at if self.once else self.steps >= self.at)
        if now and self.field == "reward":
            reward = self.value
        elif now and self.field == "obs":
            obs[2] = self.value
        elif now and self.field == "shape":
            obs = np.zeros(5, np.float32)
        return obs, reward, self._t >= LENGTH, False, {}


gymnasium.register("BadData-v0", entry_point=BadData)
