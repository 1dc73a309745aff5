"""The one vectorized-environment protocol every adapter implements.

Conventions (shared by all runners and the learner):

- ``B`` streams step in lock-step. ``step(actions)`` applies ``actions[b]`` to stream ``b`` and
  returns the *next* observation of every stream. Actions are ``[B, *spec.action.shape]``:
  ints for discrete and multi-discrete spaces, floats for a box.
- Auto-reset happens inside the same ``step`` call: when stream ``b``'s episode ends, the
  returned ``obs[b]`` is already the first observation of its next episode, ``first[b] = 1``,
  and ``reward[b]`` is the last reward of the episode that just ended (gym3's and libenv's
  convention).
  So a transition ``t -> t+1`` must not be bootstrapped across when ``first[t+1] = 1``, and
  the recurrent core zeroes its state (and RTRL its sensitivities) before consuming
  ``obs[t+1]``.
- ``reset`` returns ``first = 1`` everywhere and ``done = 0``.
- ``done[b] = 1`` marks that an episode finished on this step; ``episode_return[b]`` and
  ``episode_length[b]`` are valid only there (the raw, unclipped return and the number of
  agent steps).
- Image observations stay ``uint8`` ``[B, C, H, W]`` until the model; vector observations are
  ``float32`` ``[B, D]``. All tensors live on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

ACTION_KINDS = ("discrete", "multi_discrete", "box")


@dataclass(frozen=True)
class ActionSpec:
    """What one stream's action is.

    kind: ``discrete`` (an int in ``[0, n)``, shape ``()``), ``multi_discrete`` (ints
    ``[K]``, component ``k`` in ``[0, nvec[k])``) or ``box`` (floats ``[D]``).
    nvec: category counts (``(n,)`` for discrete); empty for box.
    low, high: box bounds per component (``-inf`` / ``inf`` where unbounded); empty otherwise.
    """

    kind: str
    nvec: tuple[int, ...] = ()
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ACTION_KINDS:
            raise ValueError(f"ActionSpec.kind: one of {ACTION_KINDS}, got {self.kind!r}")
        if self.kind == "box":
            if not self.low or len(self.low) != len(self.high):
                raise ValueError("ActionSpec: a box needs low and high of one length >= 1")
        elif not self.nvec or min(self.nvec) < 1 or (self.kind == "discrete"
                                                     and len(self.nvec) != 1):
            raise ValueError(f"ActionSpec: bad nvec {self.nvec} for {self.kind}")

    @staticmethod
    def discrete(n: int) -> ActionSpec:
        return ActionSpec("discrete", (int(n),))

    @property
    def shape(self) -> tuple[int, ...]:
        """Per-stream action shape: ``()``, ``(K,)`` or ``(D,)``."""
        if self.kind == "discrete":
            return ()
        return (len(self.nvec),) if self.kind == "multi_discrete" else (len(self.low),)

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32 if self.kind == "box" else torch.long


@dataclass(frozen=True)
class EnvSpec:
    """What the agent is built from.

    obs_shape: per-stream observation shape, e.g. ``(4, 84, 84)`` or ``(D,)``.
    obs_dtype: ``torch.uint8`` for images, ``torch.float32`` for vectors.
    num_envs: number of streams ``B``.
    num_actions: size of the discrete action set (0 for other action kinds).
    action: the action space; ``ActionSpec.discrete(num_actions)`` when not given.
    image_shape: ``(C, H, W)`` when a vector observation starts with a flattened image
        (a Dict or Tuple space with one image part): the first ``C * H * W`` entries are that
        image's pixels, which an image stem reads, and the rest are concatenated after it.
    """

    obs_shape: tuple[int, ...]
    obs_dtype: torch.dtype
    num_envs: int
    num_actions: int = 0
    action: ActionSpec | None = None
    image_shape: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.action is None:
            object.__setattr__(self, "action", ActionSpec.discrete(self.num_actions))
        elif self.action.kind == "discrete":
            object.__setattr__(self, "num_actions", self.action.nvec[0])

    @property
    def is_image(self) -> bool:
        return len(self.obs_shape) == 3


@dataclass
class TimeStep:
    """One batched step. Shapes: obs ``[B, *obs_shape]``; the rest ``[B]``."""

    obs: torch.Tensor
    reward: torch.Tensor  # float32
    first: torch.Tensor  # bool: obs starts an episode
    done: torch.Tensor  # bool: an episode ended on this step
    episode_return: torch.Tensor  # float32, valid where done
    episode_length: torch.Tensor  # int64, valid where done

    @staticmethod
    def at_reset(obs: torch.Tensor) -> TimeStep:
        """The step ``reset`` returns: every stream starts an episode, none ended."""
        b = obs.shape[0]
        return TimeStep(
            obs=obs,
            reward=torch.zeros(b, dtype=torch.float32),
            first=torch.ones(b, dtype=torch.bool),
            done=torch.zeros(b, dtype=torch.bool),
            episode_return=torch.zeros(b, dtype=torch.float32),
            episode_length=torch.zeros(b, dtype=torch.int64),
        )


def check_actions(actions: torch.Tensor, num_envs: int, shape: tuple[int, ...] = ()) -> None:
    """Raise if ``actions`` is not ``[B, *shape]``."""
    want = (num_envs, *shape)
    if tuple(actions.shape) != want:
        raise ValueError(f"actions must have shape {list(want)}, got {list(actions.shape)}")


@runtime_checkable
class VecEnv(Protocol):
    spec: EnvSpec

    def reset(self, seed: int | None = None) -> TimeStep: ...

    def step(self, actions: torch.Tensor) -> TimeStep: ...

    def close(self) -> None: ...


class EpisodeTracker:
    """Running per-stream return/length bookkeeping for adapters whose backend does not
    report finished episodes itself."""

    def __init__(self, num_envs: int) -> None:
        self.ret = torch.zeros(num_envs, dtype=torch.float32)
        self.len = torch.zeros(num_envs, dtype=torch.int64)

    def reset(self) -> None:
        self.ret.zero_()
        self.len.zero_()

    def update(
        self, reward: torch.Tensor, done: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Add this step's reward; return (episode_return, episode_length) valid where done,
        and restart the counters of the streams that finished."""
        self.ret += reward
        self.len += 1
        ep_ret = torch.where(done, self.ret, torch.zeros_like(self.ret))
        ep_len = torch.where(done, self.len, torch.zeros_like(self.len))
        self.ret = torch.where(done, torch.zeros_like(self.ret), self.ret)
        self.len = torch.where(done, torch.zeros_like(self.len), self.len)
        return ep_ret, ep_len
