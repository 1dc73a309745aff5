"""The recurrent cores by name: the one list that ``model.core``, ``make_core``, ``grad=rtrl``'s
error message and the docs read.

A core class says itself what it supports (``Core.elementwise``: every unit's recurrence is
its own, so exact RTRL is tractable) and which options it takes (``Core.options``, a
dataclass: the config block ``model.<name>``). Adding a cell is its module and one entry
here.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

from rtrl_rl.errors import ConfigError, unknown_name
from rtrl_rl.models.cells import ELSTM, LSTM, Core, FeedForward
from rtrl_rl.models.pair_cells import LRU, RTU

CORES: dict[str, type[Core]] = {c.name: c for c in (ELSTM, RTU, LRU, LSTM, FeedForward)}


def rtrl_cores() -> list[str]:
    """The cores ``grad=rtrl`` can train: those whose class is element-wise."""
    return [name for name, cls in CORES.items() if cls.elementwise]


def make_core(kind: str, input_size: int, hidden_size: int, layers: int = 1,
              **options: Any) -> Core:
    """Build a core by name, with its own options (``CORES[kind].options``'s fields, e.g.
    ``forget_bias`` for the eLSTM, ``r_min`` for the LRU) as keywords; what is not given keeps
    its default. A bad name, size or option is a one-line ``ConfigError``."""
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
    try:
        opts.check()
    except ConfigError as e:
        raise ConfigError(f"model.{kind}.{e}") from None
    return cls(input_size, hidden_size, layers, **asdict(opts))
