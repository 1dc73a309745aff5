"""Skipping an update whose loss or gradient is not finite, as ``GradScaler`` does.

``LearnerBase.step`` measures the gradient's norm before it clips, and steps the optimizer
only where that norm and the loss are finite: one read of two numbers that the step waits
for anyway. Under torchrun the gradients are averaged over ranks before the norm, and a rank
whose loss is not finite makes its gradient NaN first, so every rank sees the same
non-finite norm and takes the same decision.

``SkipCounter`` counts the skips, names the first non-finite quantity in a warning, and
raises ``TrainingDiverged`` after ``algo.max_skipped_updates`` of them in a row.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from rtrl_rl.errors import TrainingDiverged

log = logging.getLogger(__name__)


def poison_if_nonfinite(loss: torch.Tensor, params: Iterable[nn.Parameter]) -> None:
    """Make the first gradient NaN when ``loss`` is not finite, before the gradients are
    averaged over ranks, so that every rank sees a non-finite norm."""
    if math.isfinite(float(loss.detach())):
        return
    for p in params:
        if p.grad is not None:
            p.grad.fill_(math.nan)
            return


def first_nonfinite(terms: Mapping[str, torch.Tensor | float],
                    named_params: Iterable[tuple[str, nn.Parameter]]) -> str:
    """What to name in the warning: the first loss term that is not finite, else the first
    parameter whose gradient is not (``terms``: name -> 0-d value)."""
    for name, value in terms.items():
        if not math.isfinite(float(value)):
            return f"loss term '{name}' = {float(value)}"
    for name, p in named_params:
        if p.grad is not None and not torch.isfinite(p.grad).all():
            bad = int((~torch.isfinite(p.grad)).sum())
            return f"the gradient of {name} ({bad} of {p.grad.numel()} entries not finite)"
    return "the gradient (another rank's part of it)"


class SkipCounter:
    """Skipped updates: in total (logged as ``skipped_updates``) and in a row."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self.in_row = 0

    def ok(self) -> None:
        self.in_row = 0

    def skip(self, what: str, update: int, extra: str = "") -> None:
        """Count one skip of update ``update`` for ``what``; raise ``TrainingDiverged``
        at ``limit`` in a row."""
        self.total += 1
        self.in_row += 1
        log.warning("update %d skipped: %s is not finite; weights, optimizer state and LR "
                    "schedule kept%s (%d in a row, %d in all)", update, what, extra,
                    self.in_row, self.total)
        if self.in_row >= self.limit:
            raise TrainingDiverged(
                f"{self.in_row} updates in a row skipped for non-finite values (last: {what} "
                f"at update {update}); the weights are those of the last good update "
                "(lower algo.lr, or raise algo.max_skipped_updates)")
