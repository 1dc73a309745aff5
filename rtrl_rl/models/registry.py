"""The recurrent cores by name: the one list that ``model.core``, ``make_core``, ``grad=rtrl``'s
error message and the docs read.

A core class says itself what it supports (``Core.elementwise``: every unit's recurrence is
its own, so exact RTRL is tractable) and which options it takes (``Core.options``, a
dataclass: the config block ``model.<name>``). A built-in cell is one entry below; a cell
in a plugin calls ``register_core`` from its own module (``rtrl_rl.plugins``).
"""

from __future__ import annotations

from dataclasses import asdict, fields, is_dataclass
from typing import Any, TypeVar

from rtrl_rl.errors import ConfigError, PluginError, unknown_name
from rtrl_rl.models.cells import ELSTM, LSTM, Core, FeedForward
from rtrl_rl.models.options import CoreOptions
from rtrl_rl.models.pair_cells import LRU, RTU

CORES: dict[str, type[Core]] = {c.name: c for c in (ELSTM, RTU, LRU, LSTM, FeedForward)}

C = TypeVar("C", bound=type[Core])


def register_core(cls: C) -> C:
    """Add the core class ``cls`` under ``cls.name`` (also usable as a class decorator).

    ``cls.options`` (a ``CoreOptions`` dataclass) becomes the block ``model.<name>``; the
    config reads the registry when ``rtrl_rl.config`` is first imported, so a plugin
    registers before that (``rtrl_rl.plugins``). A taken or malformed name is a one-line
    ``PluginError``."""
    name = getattr(cls, "name", None)
    if not (isinstance(cls, type) and issubclass(cls, Core)):
        raise PluginError(f"register_core: {cls!r} is not a Core subclass")
    if not isinstance(name, str) or not name.isidentifier() or cls.name == Core.name:
        raise PluginError(f"register_core: {cls.__qualname__}.name must be an identifier of "
                          f"its own (the model.core value), got {name!r}")
    if name in CORES:
        raise PluginError(f"core '{name}' is already registered "
                          f"({CORES[name].__module__}.{CORES[name].__qualname__})")
    if not (is_dataclass(cls.options) and issubclass(cls.options, CoreOptions)):
        raise PluginError(f"register_core: {cls.__qualname__}.options must be a CoreOptions "
                          f"dataclass")
    CORES[name] = cls
    return cls


def rtrl_cores() -> list[str]:
    """The cores ``grad=rtrl`` can train: those whose class is element-wise."""
    return [name for name, cls in CORES.items() if cls.elementwise]


def check_options(kind: str, opts: CoreOptions) -> None:
    """``opts.check()``, its one-line ``ConfigError`` naming the block ``model.<kind>``."""
    try:
        opts.check()
    except ConfigError as e:
        raise ConfigError(f"model.{kind}.{e}") from None


def make_core(kind: str, input_size: int, hidden_size: int, layers: int = 1,
              **options: Any) -> Core:
    """Build a core by name, with its own options (``CORES[kind].options``'s fields, e.g.
    ``forget_bias`` for the eLSTM, ``r_min`` for the LRU) as keywords; what is not given keeps
    its default. A bad name, size or option is a one-line ``ConfigError``."""
    from rtrl_rl.plugins import load_plugins

    load_plugins()  # a worker process may build the agent before anything else loads them
    if kind not in CORES:
        raise unknown_name("core", kind, CORES)
    cls = CORES[kind]
    if kind != "none" and (hidden_size < 1 or layers < 1):
        raise ConfigError(f"model.hidden_size and model.layers must be >= 1 for core '{kind}'")
    known = {f.name for f in fields(cls.options)}
    for key in options:
        if key not in known:
            why = unknown_name(f"option of core '{kind}'", key, known) if known else \
                f"core '{kind}' has no options"
            raise ConfigError(f"model.{kind}.{key}: {why}")
    opts = cls.options(**options)
    check_options(kind, opts)
    return cls(input_size, hidden_size, layers, **asdict(opts))
