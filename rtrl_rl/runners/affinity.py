"""CPU affinity of the async runner's processes (``runner.cpu_affinity``).

With the learner and the policy inference both on the CPU, the learner's update and the
actor side (env workers and the inference process, which pass every env step between them)
compete for the same cores. Left to the scheduler, a waking worker or the inference process
appears to preempt the learner in mid-update. Giving the learner cores of its own
and the actor side the rest (as Sample Factory's ``set_workers_cpu_affinity`` does for its
workers) removes that. On the 2-core CPU, the default job with ``runner.inference=learner``
went from slower than the sync runner unpinned to slightly faster pinned, and faster still
once the actor side polled for a shorter time before sleeping. With inference in the
workers, where each worker runs the policy itself, pinning made it slower, so ``auto`` pins
only the learner placement on the CPU (measurements: docs/performance.md,
docs/results/inference_cpu).

A plan is made from the CPUs the process may use (``os.sched_getaffinity``, so a Slurm or
``taskset`` mask is respected). Under torchrun each local rank first takes its contiguous
share of them. The learner keeps ``min(threads, cpus // 2)`` (at least one); its intra-op
threads are capped to that many. Child processes pin themselves at start, before any
thread pool of theirs exists, so that a restarted one is pinned too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MODES = ("auto", "always", "never")


@dataclass(frozen=True)
class CpuPlan:
    """The learner's CPUs and the CPUs shared by the env workers and inference process."""

    learner: tuple[int, ...]
    actors: tuple[int, ...]

    def describe(self) -> str:
        return (f"learner on {_ranges(self.learner)}, env workers and policy inference on "
                f"{_ranges(self.actors)}")


def wanted(mode: str, kind: str, inference: str, device_type: str) -> bool:
    """Whether a run pins its processes: ``always``/``never``, or ``auto`` (the async
    runner with policy inference in the learner's process set, on the CPU)."""
    if mode not in MODES:
        raise ValueError(f"cpu_affinity must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "auto":
        return kind == "async" and inference == "learner" and device_type == "cpu"
    return mode == "always" and kind == "async"


def rank_share(cpus: Sequence[int], environ: Mapping[str, str]) -> list[int]:
    """This torchrun local rank's contiguous share of ``cpus`` (all of them outside
    torchrun); the last rank takes any remainder."""
    world = int(environ.get("LOCAL_WORLD_SIZE", "1"))
    rank = int(environ.get("LOCAL_RANK", "0"))
    cpus = sorted(cpus)
    if world <= 1:
        return cpus
    size = len(cpus) // world
    return cpus[rank * size: len(cpus) if rank == world - 1 else (rank + 1) * size]


def make_plan(cpus: Sequence[int], learner_threads: int) -> CpuPlan | None:
    """Split ``cpus``: the learner takes ``min(learner_threads, len // 2)`` of them (at
    least one), the actor side the rest. None with fewer than two CPUs."""
    cpus = sorted(cpus)
    if len(cpus) < 2:
        return None
    n = max(1, min(learner_threads, len(cpus) // 2))
    return CpuPlan(tuple(cpus[:n]), tuple(cpus[n:]))


def available() -> list[int]:
    """The CPUs this process may run on (empty where the OS cannot say)."""
    getter = getattr(os, "sched_getaffinity", None)
    return sorted(getter(0)) if getter else []


def pin_process(cpus: Sequence[int]) -> None:
    """Restrict every thread of this process to ``cpus`` (threads made later inherit it
    from the thread that makes them). A thread that exits meanwhile is skipped."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        return
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cpus)
        except (ProcessLookupError, PermissionError):
            pass


def _ranges(cpus: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``CPUs 0-2,5``; ``[3]`` -> ``CPU 3``."""
    parts, start = [], None
    for k, c in enumerate(cpus):
        if start is None:
            start = c
        if k + 1 == len(cpus) or cpus[k + 1] != c + 1:
            parts.append(str(start) if start == c else f"{start}-{c}")
            start = None
    return ("CPU " if len(cpus) == 1 else "CPUs ") + ",".join(parts)
