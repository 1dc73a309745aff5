"""The copy task (Irie et al., 2023, "Exploring the Promise and Limits of RTRL") as a
supervised sequence generator, for diagnostics that train a recurrent cell directly.

Token layout of one episode with pattern length ``L`` over ``V = num_symbols`` symbols
(``V = 2``: bits), ``E = 2L + 1`` steps:

    step        0 .. L-1         L            L+1 .. 2L
    input       symbol x_s       delimiter    blank
    target      -                -            x_{s-L-1}     (mask True only here)

Inputs are one-hot over ``V + 2`` tokens: ``0 .. V-1`` the symbols, ``V`` the delimiter,
``V + 1`` the blank of the recall phase. Targets are symbol ids in ``[0, V)``; outside the
recall phase they are 0 and must be ignored through ``mask``. So a model must output, at each
recall step, the symbol it saw ``L + 1`` steps earlier.

``copy_task_batch`` returns one aligned episode per column. ``CopyTaskStream`` produces
back-to-back episodes per stream for online training, chunk by chunk, with ``first`` marking
episode starts (the recurrent state is reset there); with ``stagger=True`` each stream starts
at a random phase, and the recall targets of that first, partly unseen episode are masked out.
All randomness comes from one seeded ``torch.Generator``: a stream is a deterministic function
of its seed and the sequence of chunk sizes requested.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class CopyBatch:
    """``inputs float32 [T, B, V + 2]``; ``targets int64``, ``mask bool``, ``first bool``:
    ``[T, B]``."""

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    first: torch.Tensor


def copy_task_in_dim(num_symbols: int = 2) -> int:
    """Input width: the symbols, the delimiter and the blank."""
    return num_symbols + 2


class CopyTaskStream:
    """``B`` independent streams of back-to-back copy-task episodes (see the module doc)."""

    def __init__(
        self,
        length: int,
        batch_size: int,
        *,
        num_symbols: int = 2,
        seed: int = 0,
        stagger: bool = False,
    ) -> None:
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        if num_symbols < 2:
            raise ValueError(f"num_symbols must be >= 2, got {num_symbols}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.length = length
        self.batch_size = batch_size
        self.num_symbols = num_symbols
        self.episode_len = 2 * length + 1
        self.in_dim = copy_task_in_dim(num_symbols)
        self._gen = torch.Generator().manual_seed(int(seed))
        b = batch_size
        if stagger:
            self._phase = torch.randint(self.episode_len, (b,), generator=self._gen)
        else:
            self._phase = torch.zeros(b, dtype=torch.int64)
        self._valid = self._phase == 0  # the current episode was seen from its start
        self._pattern = self._patterns(1)[:, 0]  # [B, L]: the current episode's pattern
        self._stream_start = True

    def _patterns(self, n: int) -> torch.Tensor:
        """``n`` fresh patterns per stream: int64 ``[B, n, L]``."""
        shape = (self.batch_size, n, self.length)
        return torch.randint(self.num_symbols, shape, generator=self._gen)

    def next(self, num_steps: int) -> CopyBatch:
        """The next ``num_steps`` steps of every stream."""
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        b, L, E, V = self.batch_size, self.length, self.episode_len, self.num_symbols
        pos = self._phase.unsqueeze(1) + torch.arange(num_steps + 1)  # [B, T + 1]
        ep = pos // E  # 0 = the episode in progress
        ph = pos % E
        # Column T is the step after this chunk: its pattern is carried to the next call.
        n_new = int(ep[:, -1].max())
        patterns = torch.cat([self._pattern.unsqueeze(1), self._patterns(n_new)], dim=1)
        rows = torch.arange(b).unsqueeze(1)
        slot = torch.where(ph < L, ph, (ph - L - 1).clamp(min=0))
        sym = patterns[rows, ep, slot]  # [B, T + 1]

        self._pattern = patterns[torch.arange(b), ep[:, -1]]
        valid_ep = (ep > 0) | self._valid.unsqueeze(1)
        self._valid = valid_ep[:, -1]
        self._phase = ph[:, -1]
        ep, ph, sym, valid_ep = ep[:, :-1], ph[:, :-1], sym[:, :-1], valid_ep[:, :-1]

        token = torch.where(ph < L, sym, torch.where(ph == L, V, V + 1))
        recall = ph > L
        first = ph == 0
        if self._stream_start:
            first[:, 0] = True
            self._stream_start = False
        inputs = torch.nn.functional.one_hot(token, self.in_dim).to(torch.float32)
        return CopyBatch(
            inputs=inputs.transpose(0, 1).contiguous(),
            targets=torch.where(recall, sym, 0).t().contiguous(),
            mask=(recall & valid_ep).t().contiguous(),
            first=first.t().contiguous(),
        )


def copy_task_batch(
    length: int, batch_size: int, *, num_symbols: int = 2, seed: int = 0
) -> CopyBatch:
    """One aligned episode per column: ``T = 2 * length + 1``; ``first[0]`` is all True."""
    stream = CopyTaskStream(length, batch_size, num_symbols=num_symbols, seed=seed)
    return stream.next(2 * length + 1)
