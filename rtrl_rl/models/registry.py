"""The recurrent cores by name: the one list that ``model.core``, ``make_core``, ``grad=rtrl``'s
error message and the docs read.

A core class says itself what it supports: ``Core.elementwise`` (every unit's recurrence is
its own, so exact RTRL is tractable). Adding a cell is its module and one entry here.
"""

from __future__ import annotations

import math

from rtrl_rl.errors import ConfigError, unknown_name
from rtrl_rl.models.cells import ELSTM, LSTM, Core, FeedForward
from rtrl_rl.models.pair_cells import LRU, RTU

CORES: dict[str, type[Core]] = {c.name: c for c in (ELSTM, RTU, LRU, LSTM, FeedForward)}


def rtrl_cores() -> list[str]:
    """The cores ``grad=rtrl`` can train: those whose class is element-wise."""
    return [name for name, cls in CORES.items() if cls.elementwise]


def make_core(
    kind: str, input_size: int, hidden_size: int, layers: int = 1, forget_bias: float = 1.0,
    *, recurrence: str = "linear", rtu_readout: str = "relu", r_min: float = 0.9,
    r_max: float = 0.999, max_phase: float = 2 * math.pi,
) -> Core:
    """Build a core by name: ``elstm`` (``layers`` > 1 stacks), ``lstm``, ``none``, ``rtu``
    or ``lru`` (``rtrl_rl.models.pair_cells``). ``forget_bias`` is for the eLSTM and LSTM;
    ``recurrence`` (linear | nonlinear) and ``rtu_readout`` (relu | gelu: the LRU's readout
    layer) for the RTU; ``r_min, r_max, max_phase`` set the
    initial ring of eigenvalues of the RTU and LRU."""
    if kind not in CORES:
        raise unknown_name("core", kind, CORES)
    if kind != "none" and (hidden_size < 1 or layers < 1):
        raise ConfigError(f"model.hidden_size and model.layers must be >= 1 for core '{kind}'")
    ring = {"r_min": r_min, "r_max": r_max, "max_phase": max_phase}
    if kind == "rtu":
        return RTU(input_size, hidden_size, layers, recurrence, rtu_readout, **ring)
    if kind == "lru":
        return LRU(input_size, hidden_size, layers, **ring)
    return CORES[kind](input_size, hidden_size, layers, forget_bias)
