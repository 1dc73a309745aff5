"""Env families by name: ``env.family`` -> its options dataclass and the builder of its
adapter, both entered by ``register_env_family`` (the built-ins in ``rtrl_rl/envs/__init__.py``,
a plugin's from its own module, ``rtrl_rl.plugins``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import is_dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from rtrl_rl.errors import ConfigError, PluginError, unknown_name

if TYPE_CHECKING:
    from rtrl_rl.envs.base import VecEnv

#: ``(parsed options, num_envs, seed, split) -> VecEnv``; imports its backend when called,
#: so naming a family costs no import of it.
Builder = Callable[[Any, int, int, str], "VecEnv"]

#: ``env.family`` -> the options dataclass (its fields are the family's ``env.*`` keys).
FAMILIES: dict[str, type] = {}
#: ``env.family`` -> the builder of its adapter; the same keys as ``FAMILIES``.
BUILDERS: dict[str, Builder] = {}

O = TypeVar("O", bound=type)


def register_env_family(options: O, build: Builder, preset: bool = True) -> O:
    """Add the family ``options.family``: ``options`` is an ``EnvOptions`` dataclass with
    ``family: ClassVar[str]``, ``build(parsed, num_envs, seed, split)`` returns its
    ``VecEnv``. ``make_env`` wraps what it returns in the shape and finiteness check.

    ``preset``: make ``env=<family>`` a Hydra preset of the options' defaults, as
    ``configs/env/<family>.yaml`` is for the built-ins. A taken or malformed name is a
    one-line ``PluginError``."""
    from rtrl_rl.envs.config import EnvOptions

    family = getattr(options, "family", None)
    if not (isinstance(options, type) and is_dataclass(options)
            and issubclass(options, EnvOptions)):
        raise PluginError(f"register_env_family: {options!r} is not an EnvOptions dataclass")
    if not isinstance(family, str) or not family.isidentifier():
        raise PluginError(f"register_env_family: {options.__qualname__}.family must be a "
                          f"ClassVar[str] identifier (the env.family value), got {family!r}")
    if family in FAMILIES:
        old = FAMILIES[family]
        raise PluginError(f"env family '{family}' is already registered "
                          f"({old.__module__}.{old.__qualname__})")
    if not callable(build):
        raise PluginError(f"register_env_family: the builder of '{family}' is not callable")
    FAMILIES[family], BUILDERS[family] = options, build
    if preset:
        from rtrl_rl.plugins import store_preset

        store_preset("env", family, options, {"family": family})
    return options


def family_config(family: str) -> type:
    """The options dataclass of ``family`` (instantiate it for the defaults)."""
    from rtrl_rl.plugins import load_plugins

    load_plugins()  # a worker process may parse its env config before anything else did
    if family not in FAMILIES:
        raise ConfigError(f"env.family: {unknown_name('env family', str(family), FAMILIES)}")
    return FAMILIES[family]


def build_adapter(parsed: Any, num_envs: int, seed: int, split: str) -> VecEnv:
    """The family's own ``VecEnv`` for the parsed options (not yet checked by the guard)."""
    family_config(parsed.family)
    return BUILDERS[parsed.family](parsed, num_envs, seed, split)
