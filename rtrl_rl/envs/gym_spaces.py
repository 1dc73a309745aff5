"""Gymnasium spaces to the tensors of ``base.py``, and agent actions back to the env.

Observations: every space ``gymnasium.spaces.flatten`` handles, nested too, becomes one
``float32 [B, D]`` vector, in flatten's order and encoding (Box flattened, Discrete and each
MultiDiscrete component one-hot, MultiBinary as 0/1). One exception to that order: a Dict or
Tuple space with exactly one image part (a ``uint8`` Box of shape ``(H, W, C)``, ``(C, H, W)``
or ``(H, W)``) puts that image first, as ``C x H x W`` pixels, and records its shape in
``EnvSpec.image_shape``, so that an image stem can read it (``stems.SplitStem``). Text,
Graph, Sequence and OneOf spaces are refused.

Actions: ``Discrete``, ``MultiDiscrete`` (a factored categorical) and ``Box`` (a diagonal
Gaussian, whose samples are clipped to the bounds here, when the env steps).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from rtrl_rl.envs.base import ActionSpec
from rtrl_rl.errors import ConfigError

__all__ = ["ActionCodec", "ObsCodec", "action_codec", "obs_codec"]

#: ``(batched obs) -> float32 [B, d]`` for one leaf of the space.
_Leaf = Callable[[object], np.ndarray]


@dataclass(frozen=True)
class ObsCodec:
    """``encode`` maps the vector env's batched observation to ``float32 [B, dim]``."""

    dim: int
    image_shape: tuple[int, int, int] | None
    encode: Callable[[object], torch.Tensor]


def _image_layout(space) -> tuple[tuple[int, ...], tuple[int, int, int]] | None:
    """``(transpose of a batched [B, *shape] array, (C, H, W))`` for an image Box."""
    from gymnasium import spaces

    if not isinstance(space, spaces.Box) or space.dtype != np.uint8:
        return None
    shape = space.shape
    if len(shape) == 2:
        return (0, 1, 2), (1, shape[0], shape[1])
    if len(shape) != 3:
        return None
    if shape[-1] <= 4 < shape[0]:  # channels last, as most gymnasium image spaces
        return (0, 3, 1, 2), (shape[2], shape[0], shape[1])
    return (0, 1, 2, 3), (shape[0], shape[1], shape[2])


def _leaves(space, env_id: str, path: tuple = ()) -> list[tuple[tuple, object]]:
    """``(path, leaf space)`` in flatten's order; refuses the spaces it cannot encode."""
    from gymnasium import spaces

    if isinstance(space, spaces.Tuple):
        return [leaf for i, s in enumerate(space.spaces) for leaf in _leaves(s, env_id, (*path, i))]
    if isinstance(space, spaces.Dict):
        return [leaf for k, s in space.spaces.items() for leaf in _leaves(s, env_id, (*path, k))]
    if isinstance(space, (spaces.Box, spaces.Discrete, spaces.MultiDiscrete,
                          spaces.MultiBinary)):
        return [(path, space)]
    shown = str(space) if len(str(space)) <= 60 else str(space)[:57] + "..."
    raise ConfigError(f"env.id: '{env_id}' has a {type(space).__name__} observation space "
                      f"({shown}); supported: Box, Discrete, MultiDiscrete, MultiBinary and "
                      "Tuple or Dict of those")


def _leaf_encoder(space, transpose: tuple[int, ...] | None = None) -> tuple[int, _Leaf]:
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        n, start = int(space.n), int(space.start)

        def discrete(x) -> np.ndarray:
            idx = np.asarray(x, dtype=np.int64).reshape(-1) - start
            out = np.zeros((len(idx), n), np.float32)
            out[np.arange(len(idx)), idx] = 1.0
            return out

        return n, discrete
    if isinstance(space, spaces.MultiDiscrete):
        nvec = np.asarray(space.nvec, np.int64).reshape(-1)
        start = np.asarray(space.start, np.int64).reshape(-1)
        offsets = np.concatenate([[0], np.cumsum(nvec)[:-1]])
        width = int(nvec.sum())

        def multi_discrete(x) -> np.ndarray:
            idx = np.asarray(x, dtype=np.int64).reshape(-1, len(nvec)) - start + offsets
            out = np.zeros((len(idx), width), np.float32)
            np.put_along_axis(out, idx, 1.0, axis=1)
            return out

        return width, multi_discrete
    dim = int(np.prod(space.shape, dtype=np.int64))

    def flat(x) -> np.ndarray:
        arr = np.asarray(x)
        if transpose is not None:
            arr = arr.transpose(transpose)
        return arr.reshape(len(arr), dim).astype(np.float32)

    return dim, flat


def _get(obs, path: tuple):
    for key in path:
        obs = obs[key]
    return obs


def obs_codec(space, env_id: str) -> ObsCodec:
    """The encoder of a (single-env) observation space; see the module docstring."""
    from gymnasium import spaces

    leaves = _leaves(space, env_id)
    image_shape, transpose = None, None
    if isinstance(space, (spaces.Tuple, spaces.Dict)):
        images = [i for i, (_, s) in enumerate(leaves) if _image_layout(s) is not None]
        if len(images) == 1:
            leaves.insert(0, leaves.pop(images[0]))
            transpose, image_shape = _image_layout(leaves[0][1])
    parts, dim = [], 0
    for i, (path, leaf) in enumerate(leaves):
        width, enc = _leaf_encoder(leaf, transpose if i == 0 else None)
        parts.append((path, enc))
        dim += width

    def encode(obs) -> torch.Tensor:
        arrays = [enc(_get(obs, path)) for path, enc in parts]
        return torch.from_numpy(arrays[0] if len(arrays) == 1 else np.concatenate(arrays, 1))

    return ObsCodec(dim, image_shape, encode)


@dataclass(frozen=True)
class ActionCodec:
    """``to_env`` maps agent actions ``[B, *spec.shape]`` to what the vector env steps."""

    spec: ActionSpec
    to_env: Callable[[torch.Tensor], np.ndarray]


def action_codec(space, env_id: str) -> ActionCodec:
    """Discrete -> ints, MultiDiscrete -> int vectors (offset by ``start``), Box -> floats
    clipped to the bounds and cast to the space's dtype and shape."""
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        start = int(space.start)
        return ActionCodec(ActionSpec.discrete(int(space.n)),
                           lambda a: a.detach().to("cpu", torch.int64).numpy() + start)
    if isinstance(space, spaces.MultiDiscrete):
        shape = space.nvec.shape
        nvec = tuple(int(n) for n in np.asarray(space.nvec).reshape(-1))
        start = np.asarray(space.start, np.int64)

        def multi_discrete(a: torch.Tensor) -> np.ndarray:
            acts = a.detach().to("cpu", torch.int64).numpy().reshape(len(a), *shape)
            return (acts + start).astype(space.dtype)

        return ActionCodec(ActionSpec("multi_discrete", nvec), multi_discrete)
    if isinstance(space, spaces.Box):
        low = np.asarray(space.low, np.float64).reshape(-1)
        high = np.asarray(space.high, np.float64).reshape(-1)

        def box(a: torch.Tensor) -> np.ndarray:
            acts = np.clip(a.detach().to("cpu", torch.float64).numpy(), low, high)
            return acts.reshape(len(a), *space.shape).astype(space.dtype)

        return ActionCodec(ActionSpec("box", low=tuple(low.tolist()),
                                      high=tuple(high.tolist())), box)
    raise ConfigError(f"env.id: '{env_id}' has action space {space}; "
                      "supported: Discrete, MultiDiscrete, Box")
