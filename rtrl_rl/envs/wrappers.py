"""Gymnasium wrappers named in the config, and the project's own observation mask.

``env.wrappers`` is a list of Hydra instantiation specs, applied in order to each sub-env
right after ``gymnasium.make``::

    env:
      wrappers:
        - {_target_: rtrl_rl.envs.wrappers.MaskObservation, keep: [0, 2]}
        - {_target_: gymnasium.wrappers.TimeAwareObservation}

Each spec is checked before any env is built: its ``_target_`` must import and be callable,
and its options must fit the target's signature (the env itself is passed as ``env``).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from rtrl_rl.errors import ConfigError

__all__ = ["MaskObservation", "apply_wrappers", "check_wrappers"]


class MaskObservation(gymnasium.ObservationWrapper):
    """Keep only the entries ``keep`` of a flat ``Box`` observation, e.g. CartPole's
    positions without its velocities (``keep=[0, 2]``), which turns an MDP into a POMDP."""

    def __init__(self, env: gymnasium.Env, keep: Sequence[int]) -> None:
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, spaces.Box) or len(space.shape) != 1:
            raise ConfigError(f"MaskObservation: needs a flat Box observation, got {space}")
        self.keep = np.asarray(list(keep), dtype=np.int64)
        d = space.shape[0]
        if self.keep.size == 0 or self.keep.min() < -d or self.keep.max() >= d:
            raise ConfigError(f"MaskObservation: keep must be non-empty indices in [0, {d}), "
                              f"got {list(keep)}")
        self.observation_space = spaces.Box(space.low[self.keep], space.high[self.keep],
                                            dtype=space.dtype)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[self.keep]


def _locate(path: str):
    """The object at a dotted path: the longest importable module prefix, then attributes."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)  # AttributeError names the missing part
        return obj
    raise ImportError(f"no module named '{parts[0]}'")


def _target(spec: Any, where: str):
    if not isinstance(spec, Mapping) or not isinstance(spec.get("_target_"), str):
        raise ConfigError(f"{where}: expected a mapping with a '_target_' string, got {spec!r}")
    try:
        target = _locate(spec["_target_"])
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"{where}: cannot import '{spec['_target_']}': {e}") from None
    if not callable(target):
        raise ConfigError(f"{where}: '{spec['_target_']}' is not callable")
    return target


def check_wrappers(specs: Sequence[Any], key: str = "env.wrappers") -> None:
    """Raise a one-line ``ConfigError`` for a spec that cannot be instantiated."""
    if not isinstance(specs, (list, tuple)):
        raise ConfigError(f"{key}: expected a list of wrapper specs, got {specs!r}")
    for i, spec in enumerate(specs):
        where = f"{key}[{i}]"
        target = _target(spec, where)
        options = {k: v for k, v in spec.items() if not str(k).startswith("_")}
        try:
            inspect.signature(target).bind(None, **options)
        except TypeError as e:
            raise ConfigError(f"{where}: {spec['_target_']} does not take these options: "
                              f"{e}") from None
        except ValueError:  # no signature to inspect (a builtin): instantiation will tell
            pass


#: Why a wrapper of a known package fails on the env ``gymnasium.make`` returns, and what to
#: use instead.
_HINTS = {
    "popgym.": "POPGym's wrappers need its raw env, which gymnasium.make returns wrapped; "
               "model.prev_action=true and model.first_input=true give the agent the same "
               "inputs as PreviousAction and Antialias",
}


def apply_wrappers(env: gymnasium.Env, specs: Sequence[Mapping[str, Any]],
                   key: str = "env.wrappers") -> gymnasium.Env:
    """Wrap ``env`` with each spec in order (``hydra.utils.instantiate(spec, env)``).

    A wrapper that raises while it is built is a one-line ``ConfigError`` naming it and why.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    for i, spec in enumerate(specs):
        try:
            env = instantiate(dict(spec), env, _convert_="all")
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001  (any failure of third-party code is reported)
            cause = e.__cause__ if isinstance(e, InstantiationException) and e.__cause__ else e
            if isinstance(cause, ConfigError):
                raise cause from None
            target = spec.get("_target_", "?")
            reason = str(cause).splitlines()[0] if str(cause) else "assertion failed"
            hint = next((h for prefix, h in _HINTS.items() if target.startswith(prefix)), "")
            raise ConfigError(f"{key}[{i}]: {target} failed to wrap the env: "
                              f"{type(cause).__name__}: {reason}"
                              + (f" ({hint})" if hint else "")) from None
    return env
