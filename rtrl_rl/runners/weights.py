"""Lock-free weight publication from the learner to env workers (a two-buffer seqlock).

The learner writes version ``v`` into buffer ``v % 2`` and then announces it; a worker copies
the announced buffer and checks that nobody began overwriting it meanwhile, retrying if so.
No process ever waits on another, so a worker killed mid-copy or a learner killed mid-write
cannot block anyone, and a reader never keeps a half-written copy.

Shared state: two dicts of tensors (one per buffer, the agent's ``state_dict`` layout) and a
``meta`` int64 tensor ``[latest, seq_0, seq_1]``. ``seq_b == 2 v`` means buffer ``b`` holds
version ``v`` complete; ``2 v - 1`` means version ``v`` is being written into it. Ordering
relies on the stores of one process becoming visible in program order (x86-TSO); each copy
and each counter store is a separate call, so neither the compiler nor Python reorders them.
"""

from __future__ import annotations

import time

import torch
from torch import nn

LATEST = 0


class WeightBoard:
    """Build in the learner from its agent, pass to workers (picklable under spawn)."""

    def __init__(self, module: nn.Module) -> None:
        with torch.no_grad():
            self.buffers = [
                {k: v.detach().to("cpu", copy=True).share_memory_()
                 for k, v in module.state_dict().items()}
                for _ in range(2)
            ]
        self.meta = torch.tensor([0, 0, -1], dtype=torch.int64).share_memory_()

    @property
    def latest(self) -> int:
        """The newest complete version (0: the weights the board was built from)."""
        return int(self.meta[LATEST])

    @torch.no_grad()
    def publish(self, state: dict[str, torch.Tensor]) -> int:
        """Learner side: write ``state`` (any device) as the next version; returns it."""
        v = self.latest + 1
        b, seq = v % 2, 1 + v % 2
        self.meta[seq] = 2 * v - 1
        for k, dst in self.buffers[b].items():
            dst.copy_(state[k])
        self.meta[seq] = 2 * v
        self.meta[LATEST] = v
        return v

    @torch.no_grad()
    def read_into(self, module: nn.Module, max_tries: int = 1000) -> int:
        """Worker side: copy the newest complete version into ``module``; returns it."""
        params = module.state_dict()
        for attempt in range(max_tries):
            v = self.latest
            b, seq = v % 2, 1 + v % 2
            before = int(self.meta[seq])
            if before == 2 * v:
                for k, src in self.buffers[b].items():
                    params[k].copy_(src)
                if int(self.meta[seq]) == before:
                    return v
            if attempt > 10:  # the learner outpaces this copy: let it get ahead
                time.sleep(0.001)
        raise RuntimeError(f"could not read a consistent copy of the weights in {max_tries} "
                           "tries")
