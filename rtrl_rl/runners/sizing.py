"""``runner=auto``: the runner the machine calls for. With the learner on CUDA, the async
runner with the policy batched on the GPU (the fast path), its env workers and streams
sized from the CPU cores; on a CPU-only machine, the sync runner with the batch's streams
(a small machine gains nothing from worker processes there).

The plan is made from a ``Machine`` description, so it can be tested for machines we do
not have; ``Machine.detect`` reads the one we are on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from rtrl_rl.errors import ConfigError, check
from rtrl_rl.runners.runner_config import RunnerConfig

#: Streams per env worker on the fast path: two env groups of 4, the setting that ran Atari
#: at its best on a 16-core GPU machine (docs/performance-gpu.md).
STREAMS_PER_WORKER = 8


@dataclass
class AutoRunnerConfig(RunnerConfig):
    """Sized for the machine: ``async`` with the policy on the GPU when the learner is on
    CUDA, else ``sync``. ``num_envs`` is the learner batch (all the streams, with sync)."""

    kind: str = "auto"
    """The runner (``rtrl_rl.runners.RUNNERS``); selects the rest of this group's fields."""
    num_workers: int = 0
    """With CUDA: env worker processes (0: one per CPU core; with ``streams_per_worker=0``
    the most that split the batch evenly)."""
    streams_per_worker: int = 0
    """With CUDA: streams per worker (0: 8, more streams than a batch, for a learner that
    corrects for policy lag (IMPALA's V-trace); else the batch split over the workers)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.num_workers >= 0, "runner.num_workers", "must be >= 0 (0: auto)")
        check(self.streams_per_worker >= 0, "runner.streams_per_worker",
              "must be >= 0 (0: auto)")


@dataclass(frozen=True)
class Machine:
    """What the plan depends on: CPU cores for this process, and the learner's GPU."""

    cpus: int
    cuda: bool
    gpu: str = ""

    @staticmethod
    def detect(device: str) -> Machine:
        import torch

        cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        return Machine(cpus=len(os.sched_getaffinity(0)), cuda=cuda,
                       gpu=torch.cuda.get_device_name() if cuda else "")


def _workers_for(batch: int, cpus: int) -> int:
    """The most workers, at most one per core, that split ``batch`` streams evenly."""
    return max(w for w in range(1, min(batch, cpus) + 1) if batch % w == 0)


def plan(runner: dict[str, Any], machine: Machine,
         lag_ok: bool = False) -> tuple[dict[str, Any], str]:
    """The concrete ``runner`` group for ``runner`` (``kind: auto``, as composed) on
    ``machine``, and one line that says what it is. ``lag_ok``: the learner corrects for
    policy lag, so workers may hold more streams than a batch (``STREAMS_PER_WORKER``)."""
    own = {k: runner[k] for k in ("unroll", "total_frames") if k in runner}
    batch = int(runner.get("num_envs", 32))
    workers, per = int(runner.get("num_workers", 0)), int(runner.get("streams_per_worker", 0))
    explicit = bool(per)
    per = per or (STREAMS_PER_WORKER if lag_ok else 0)
    if not machine.cuda:
        return ({"kind": "sync", "num_envs": batch, **own},
                f"runner=auto: sync, {batch} streams (no CUDA learner)")
    if not workers:
        workers = machine.cpus if per else _workers_for(batch, machine.cpus)
    if not per:
        if batch % workers:
            raise ConfigError(f"runner.num_envs ({batch}) must be divisible by "
                              f"runner.num_workers ({workers}) with runner=auto")
        per = batch // workers
    if workers * per < batch and not (explicit and runner.get("num_workers")):
        per = -(-batch // workers)  # a small machine: more streams per worker, not fewer
        per += per % 2
    total = workers * per
    groups = 2 if per % 2 == 0 else 1
    partial = total > batch and batch % (per // groups) == 0
    if total < batch:
        raise ConfigError(f"runner=auto: {workers} workers x {per} streams = {total} streams, "
                          f"fewer than the batch of runner.num_envs={batch}")
    out = {"kind": "async", "num_envs": total, "num_workers": workers, "inference": "learner",
           "env_groups": groups, "batch_size": batch if partial else 0, **own}
    line = (f"runner=auto: async on {machine.gpu or 'CUDA'} with {machine.cpus} CPUs: "
            f"{workers} env workers x {per} streams ({groups} env group(s) each), learner "
            f"batches of {batch if partial else total} streams, the policy on the GPU")
    return out, line
