"""Small gymnasium envs, one per kind of space; importing this module registers them.

Each episode lasts ``LENGTH`` steps of random observations; the reward is 1 when the action
(or its first component) equals the observation's first discrete value, so a policy can
learn it without memory. Ids: ``MultiDiscreteObs-v0``, ``MultiBinaryObs-v0``, ``DictObs-v0``,
``DictImageObs-v0``, ``TupleObs-v0``, ``MultiDiscreteAct-v0``, ``BoxAct-v0``, ``TextObs-v0``
(refused), ``MultiBinaryAct-v0`` (refused).
"""

from __future__ import annotations

import copy

import gymnasium
import numpy as np
from gymnasium import spaces

LENGTH = 8


def _first_value(space, obs) -> int:
    """The first discrete value in an observation (0 where there is none)."""
    if isinstance(space, spaces.Dict):
        key = next(iter(space.spaces))
        return _first_value(space.spaces[key], obs[key])
    if isinstance(space, spaces.Tuple):
        return _first_value(space.spaces[0], obs[0])
    if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)):
        return int(np.asarray(obs).reshape(-1)[0])
    return 0


class SpaceEnv(gymnasium.Env):
    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space) -> None:
        self.observation_space, self.action_space = observation_space, action_space
        self._t, self._obs = 0, None

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.observation_space.seed(int(self.np_random.integers(2**31)))
        self._t = 0
        self._obs = self.observation_space.sample()
        return self._obs, {}

    def step(self, action):
        assert self.action_space.contains(np.asarray(action, dtype=self.action_space.dtype)
                                          if not isinstance(self.action_space, spaces.Discrete)
                                          else action), action
        first = int(np.asarray(action).reshape(-1)[0]) if not isinstance(
            self.action_space, spaces.Box) else 0
        reward = float(first == _first_value(self.observation_space, self._obs))
        if isinstance(self.action_space, spaces.Box):  # best near the upper bound
            reward = -float(np.abs(np.asarray(action) - self.action_space.high).sum())
        self._t += 1
        self._obs = self.observation_space.sample()
        return self._obs, reward, False, self._t >= LENGTH, {}


SPACES = {
    "MultiDiscreteObs-v0": (spaces.MultiDiscrete([2, 2]), spaces.Discrete(2)),
    "MultiBinaryObs-v0": (spaces.MultiBinary(3), spaces.Discrete(2)),
    "DictObs-v0": (spaces.Dict({"flag": spaces.Discrete(3),
                                "pos": spaces.Box(-1.0, 1.0, (2,), np.float32)}),
                   spaces.Discrete(3)),
    "DictImageObs-v0": (spaces.Dict({"flag": spaces.Discrete(2),
                                     "image": spaces.Box(0, 255, (12, 12, 3), np.uint8)}),
                        spaces.Discrete(2)),
    "TupleObs-v0": (spaces.Tuple((spaces.Discrete(2), spaces.Discrete(4))), spaces.Discrete(2)),
    "MultiDiscreteAct-v0": (spaces.MultiDiscrete([3, 2]), spaces.MultiDiscrete([3, 2])),
    "BoxAct-v0": (spaces.Discrete(2), spaces.Box(-1.0, 1.0, (2,), np.float32)),
    "TextObs-v0": (spaces.Text(5), spaces.Discrete(2)),
    "MultiBinaryAct-v0": (spaces.Box(-1.0, 1.0, (2,), np.float32), spaces.MultiBinary(2)),
}


def _make(env_id: str):
    def make(**kwargs) -> SpaceEnv:
        obs, act = SPACES[env_id]
        return SpaceEnv(copy.deepcopy(obs), copy.deepcopy(act), **kwargs)

    return make


for _id in SPACES:
    if _id not in gymnasium.registry:
        gymnasium.register(_id, entry_point=_make(_id), max_episode_steps=LENGTH)
