"""Temporal-gradient modules: the one place the gradient method is chosen.

``make_grad(name, core, num_streams)`` with name in ``rtrl | bptt | one_step`` (and
``rtrl_reference``, the slow step-by-step RTRL kept for tests and benchmarks).
"""

from __future__ import annotations

from rtrl_rl.errors import unknown_name
from rtrl_rl.grad.base import TemporalGrad
from rtrl_rl.grad.bptt import BPTT, OneStep
from rtrl_rl.grad.rtrl import RTRL
from rtrl_rl.grad.rtrl_reference import RTRLReference
from rtrl_rl.models.cells import Core

GRADS: dict[str, type[TemporalGrad]] = {
    "rtrl": RTRL,
    "bptt": BPTT,
    "one_step": OneStep,
    "rtrl_reference": RTRLReference,
}


def make_grad(name: str, core: Core, num_streams: int) -> TemporalGrad:
    """Build the temporal-gradient module ``name`` for ``core`` carrying ``num_streams``."""
    if name not in GRADS:
        raise unknown_name("grad", name, GRADS)
    return GRADS[name](core, num_streams)


__all__ = ["GRADS", "TemporalGrad", "make_grad", "BPTT", "OneStep", "RTRL", "RTRLReference"]
