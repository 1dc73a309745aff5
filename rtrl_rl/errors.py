"""Errors shown to users as one line."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ConfigError(ValueError):
    """A bad user-facing option; the message is one line naming the key or value."""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> ConfigError:
    """``ConfigError`` for an unknown name, listing close matches (or all choices)."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=4, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"choices: {', '.join(choices)}"
    return ConfigError(f"unknown {kind} '{name}'; {hint}")


class PluginError(ConfigError):
    """A plugin that does not import, or a registration that is refused (a name already
    taken, a class without what its registry reads); the message is one line naming it."""


class EnvDataError(RuntimeError):
    """An env returned data the agent must not learn from (a non-finite reward or
    observation, a wrong shape or dtype); the message is one line naming the env, the
    stream, the step, the field and the value. The run stops with exit 2."""


class TrainingDiverged(RuntimeError):
    """Too many updates in a row were skipped for non-finite losses or gradients; the
    message is one line. The run stops with exit 1, its weights those of the last good
    update."""


def check(cond: bool, key: str, msg: str) -> None:
    """Raise ``ConfigError("key: msg")`` unless ``cond``."""
    if not cond:
        raise ConfigError(f"{key}: {msg}")


def choice(value: str, key: str, choices: Iterable[str]) -> None:
    """Raise a one-line ``ConfigError`` naming ``key`` unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{key}: {unknown_name(key, value, choices)}")
