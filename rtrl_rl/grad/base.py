"""The temporal-gradient module interface: how recurrent credit crosses time steps.

A module drives a ``Core`` over one chunk (a rollout of ``T`` steps) and decides what the
autograd graph of the returned outputs contains. The learner calls ``unroll`` and then
``loss.backward()``; nothing outside ``rtrl_rl/grad`` knows which method is in use.

Modules own their per-stream carried state (RTRL sensitivities; nothing for BPTT) and
save/restore it with ``state_dict`` / ``load_state_dict`` so checkpoints resume exactly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from rtrl_rl.errors import ConfigError
from rtrl_rl.models.cells import Core


class TemporalGrad(ABC):
    """Base class. ``num_streams`` is the number of distinct streams whose carried state is
    kept; ``unroll`` may receive any subset of them via ``stream_ids``."""

    name: str = "base"
    #: One line for logs: what the gradient is (exact, truncated, approximate ...).
    description: str = ""
    #: What a core must be for this module, in words (for the error when it is not).
    requirement: str = "a recurrent core"

    @classmethod
    def supports(cls, core: type[Core]) -> bool:
        """Whether this module can train cores of class ``core`` (every core, here)."""
        return True

    @classmethod
    def core_error(cls, core: str) -> ConfigError:
        """The one-line error for a core it cannot train, naming every core it can."""
        from rtrl_rl.models.registry import CORES

        able = [name for name, c in CORES.items() if cls.supports(c)]
        return ConfigError(f"grad={cls.name} needs {cls.requirement}, not model.core={core}; "
                           f"cores that support it: {', '.join(able)}")

    def __init__(self, core: Core, num_streams: int) -> None:
        if not self.supports(type(core)):
            raise self.core_error(core.name)
        self.core = core
        self.num_streams = num_streams

    @abstractmethod
    def unroll(
        self,
        x: torch.Tensor,
        state: torch.Tensor,
        first: torch.Tensor,
        stream_ids: torch.Tensor | None = None,
        advance: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the core over a chunk and advance the carried per-stream state.

        x: ``[T, B, I]`` core inputs (with grad to the stem); state: ``[B, D]`` the core
        state before ``x[0]``; first: ``[T, B]`` bool episode starts; stream_ids: ``[B]``
        long, which carried streams these are (default ``0..B-1``; each stream's chunks
        must arrive in order). Returns ``h [T, B, H]`` and the state after ``x[T-1]``.
        ``advance=False`` reads the carried state (for the gradient) and leaves it as it
        was, so the same chunk can be unrolled again (several epochs over one rollout).
        """

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state:
            raise ValueError(f"grad={self.name} carries no state, got keys {sorted(state)}")

    def reset_streams(self, stream_ids: torch.Tensor) -> None:  # noqa: B027 (optional hook)
        """Forget the carried state of these streams (e.g. a restarted env worker)."""

    def nonfinite_streams(self) -> torch.Tensor:
        """``[K]`` long: the streams whose carried state holds a non-finite value (none for
        a module that carries nothing). Looked at only when an update is skipped and before
        a checkpoint, so the common path pays nothing."""
        return torch.empty(0, dtype=torch.long)

    def _ids(self, stream_ids: torch.Tensor | None, batch: int,
             device: torch.device | None = None) -> torch.Tensor | None:
        """None for the whole batch in order, else the ids on ``device``. Decided on the
        host (a rollout's ``stream_ids`` stay there), so it never waits for the device."""
        if stream_ids is None:
            if batch != self.num_streams:
                raise ValueError(
                    f"chunk has {batch} streams but the module carries {self.num_streams}; "
                    "pass stream_ids"
                )
            return None
        host = stream_ids if stream_ids.device.type == "cpu" else stream_ids.cpu()
        if host.numel() == self.num_streams and torch.equal(
                host, torch.arange(self.num_streams)):
            return None  # every stream, in order: the modules' faster whole-batch path
        return stream_ids.to(device or stream_ids.device, non_blocking=True)
