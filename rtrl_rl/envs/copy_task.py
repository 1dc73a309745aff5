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
With ``min_length`` below ``length`` each episode draws its pattern length uniformly from
``[min_length, length]``: the reference paper's copy task ("level 50") uses lengths 1..50.
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
    """``B`` independent streams of back-to-back copy-task episodes (see the module doc).

    Each stream draws its episodes from its own generator (seeded by ``seed`` and the stream
    index), so a stream's content does not depend on how it is cut into chunks. With
    ``min_length < length`` every episode draws its pattern length uniformly from
    ``[min_length, length]`` (the reference paper's protocol uses ``min_length = 1``).
    """

    def __init__(
        self,
        length: int,
        batch_size: int,
        *,
        num_symbols: int = 2,
        seed: int = 0,
        stagger: bool = False,
        min_length: int | None = None,
    ) -> None:
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        if num_symbols < 2:
            raise ValueError(f"num_symbols must be >= 2, got {num_symbols}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        min_length = length if min_length is None else min_length
        if not 1 <= min_length <= length:
            raise ValueError(f"min_length must be in [1, {length}], got {min_length}")
        self.length, self.min_length = length, min_length
        self.batch_size = batch_size
        self.num_symbols = num_symbols
        self.episode_len = 2 * length + 1  # the longest episode
        self.in_dim = copy_task_in_dim(num_symbols)
        self._gens = [torch.Generator().manual_seed(int(seed) * 100_003 + b)
                      for b in range(batch_size)]
        # Per stream: the steps not yet handed out, int64 [K, 4] (token, target, mask, first).
        self._bufs = [self._episode(b) for b in range(batch_size)]
        if stagger:  # start each stream at a random phase of its first episode
            phase_gen = torch.Generator().manual_seed(int(seed))
            for b, buf in enumerate(self._bufs):
                phase = int(torch.randint(len(buf), (1,), generator=phase_gen))
                if phase > 0:
                    buf = buf[phase:].clone()
                    buf[:, 2] = 0  # the pattern was (partly) unseen: nothing to learn from
                self._bufs[b] = buf
        self._stream_start = True

    def _episode(self, b: int) -> torch.Tensor:
        """One episode of stream ``b``: int64 ``[E, 4]`` rows (token, target, mask, first)."""
        gen, V = self._gens[b], self.num_symbols
        n = self.length
        if self.min_length < self.length:
            n = int(torch.randint(self.min_length, self.length + 1, (1,), generator=gen))
        pattern = torch.randint(V, (n,), generator=gen)
        steps = torch.zeros(2 * n + 1, 4, dtype=torch.int64)
        steps[:n, 0] = pattern
        steps[n, 0] = V
        steps[n + 1:, 0] = V + 1
        steps[n + 1:, 1] = pattern
        steps[n + 1:, 2] = 1
        steps[0, 3] = 1
        return steps

    def next(self, num_steps: int) -> CopyBatch:
        """The next ``num_steps`` steps of every stream."""
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        cols = []
        for b in range(self.batch_size):
            buf = self._bufs[b]
            if len(buf) < num_steps:
                parts = [buf]
                have = len(buf)
                while have < num_steps:
                    parts.append(self._episode(b))
                    have += len(parts[-1])
                buf = torch.cat(parts)
            cols.append(buf[:num_steps])
            self._bufs[b] = buf[num_steps:]
        steps = torch.stack(cols, dim=1)  # [T, B, 4]
        if self._stream_start:
            steps[0, :, 3] = 1
            self._stream_start = False
        return _as_batch(steps, self.in_dim)


def copy_task_batch(
    length: int,
    batch_size: int,
    *,
    num_symbols: int = 2,
    seed: int = 0,
    min_length: int | None = None,
) -> CopyBatch:
    """One aligned episode per column, ``T = 2 * length + 1`` steps; ``first[0]`` is all
    True. Shorter episodes (``min_length < length``) are padded at the end with blanks that
    carry no target (``mask`` False)."""
    stream = CopyTaskStream(length, batch_size, num_symbols=num_symbols, seed=seed,
                            min_length=min_length)
    steps = torch.zeros(2 * length + 1, batch_size, 4, dtype=torch.int64)
    steps[..., 0] = num_symbols + 1  # blank
    for b, episode in enumerate(stream._bufs):  # each stream's first, whole episode
        steps[: len(episode), b] = episode
    return _as_batch(steps, stream.in_dim)


def _as_batch(steps: torch.Tensor, in_dim: int) -> CopyBatch:
    """int64 ``[T, B, 4]`` rows (token, target, mask, first) -> a one-hot ``CopyBatch``."""
    return CopyBatch(
        inputs=torch.nn.functional.one_hot(steps[..., 0], in_dim).to(torch.float32),
        targets=steps[..., 1].contiguous(),
        mask=steps[..., 2].bool(),
        first=steps[..., 3].bool(),
    )
