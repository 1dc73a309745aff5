"""Where the async runner's policy inference runs (``runner.inference``).

- ``worker``: each env worker acts with a private CPU copy of the agent, refreshed from a
  lock-free ``WeightBoard`` after every update. No per-step round trip; suits CPU-only
  machines and small MLP policies.
- ``learner``: env workers only step envs (two groups each, double-buffered) and one
  ``InferenceServer`` process acts for all of them on the learner's device, in batches,
  with weights from the same board. Suits a GPU learner and conv policies.

Both hand the runner a process target for worker ``w`` and fill the same shared-memory
rollout slots, so the runner's batching, restarts and accounting are the same for both.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch

from rtrl_rl.rollout import Rollout
from rtrl_rl.runners.env_worker import EnvWorkerHandles, env_worker_main
from rtrl_rl.runners.inference_server import InferenceHandles, inference_main
from rtrl_rl.runners.policy_worker import WorkerHandles, worker_main
from rtrl_rl.runners.weights import WeightBoard


class _Placement:
    """What both placements share: the agent's CPU template and the weight board."""

    def __init__(self, cfg, agent, slots: list[list[list[Rollout]]], per_worker: int,
                 ctx, cpus: tuple[int, ...] = ()) -> None:
        """cpus: the CPUs the processes it starts pin themselves to (empty: none)."""
        self.cfg, self.agent, self.slots, self.per_worker, self.ctx = (
            cfg, agent, slots, per_worker, ctx)
        self.cpus = cpus
        self.template = copy.deepcopy(agent).cpu()
        self.board = WeightBoard(agent)

    @property
    def version(self) -> int:
        return self.board.latest

    def after_update(self) -> None:
        """Publish the learner's weights (never waits on a reader)."""
        self.board.publish(self.agent.state_dict())


class WorkerInference(_Placement):
    name = "worker"

    def describe(self) -> str:
        return (f"in each of the {self.cfg.runner.num_workers} env workers, on the CPU, "
                "with weights refreshed after every update")

    sentinel = None  # no process of its own

    def worker(self, w: int, conn, seed: int, crash_after: int,
               generation: int = 0) -> tuple[Callable, object]:
        """(process target, its argument) for worker ``w``."""
        h = WorkerHandles(index=w, stream_offset=w * self.per_worker, num_envs=self.per_worker,
                          seed=seed, cfg=self.cfg, slots=self.slots[w][0],
                          template=self.template, board=self.board, conn=conn,
                          crash_after=crash_after, cpus=self.cpus)
        return worker_main, h

    def metrics(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        """The board's shared memory goes with the last process that maps it."""

    def close_pipes(self) -> None:
        """No pipes of its own."""


class LearnerInference(_Placement):
    name = "learner"

    def __init__(self, cfg, agent, slots: list[list[list[Rollout]]], per_worker: int,
                 ctx, device: torch.device, cpus: tuple[int, ...] = ()) -> None:
        super().__init__(cfg, agent, slots, per_worker, ctx, cpus)
        self.device = device
        self.group_size = cfg.runner.group_size
        pipes = [ctx.Pipe(duplex=True) for _ in range(cfg.runner.num_workers)]
        # Both ends stay open here for the whole run, so that a restarted worker or
        # inference process is handed the same pipe; generations tell stale messages apart.
        self.server_ends, self.worker_ends = [a for a, _ in pipes], [b for _, b in pipes]
        self.generations = torch.zeros(len(pipes), dtype=torch.int64).share_memory_()
        self.stats = torch.zeros(2, dtype=torch.int64).share_memory_()
        self._since = (time.monotonic(), 0, 0)
        self.proc, self.control, self.starts = None, None, 0
        self.start()

    def describe(self) -> str:
        rc = self.cfg.runner
        return (f"on the learner's device ({self.device}), in one inference process: a "
                f"batched step for {rc.num_workers} env workers x {rc.groups_per_worker} "
                f"env groups of {self.group_size} streams")

    def start(self) -> None:
        ours, theirs = self.ctx.Pipe(duplex=True)
        h = InferenceHandles(template=self.template, device=str(self.device),
                             slots=self.slots, group_size=self.group_size,
                             seed=self.cfg.seed + 4242 + 7919 * self.starts, board=self.board,
                             generations=self.generations, stats=self.stats,
                             conns=self.server_ends, control=theirs, cpus=self.cpus)
        self.proc = self.ctx.Process(target=inference_main, args=(h,), daemon=True,
                                     name="rtrl-inference")
        self.proc.start()
        theirs.close()
        self.control = ours
        self.starts += 1

    @property
    def sentinel(self) -> int | None:
        """Becomes ready when the inference process exits."""
        return self.proc.sentinel

    def death(self) -> str | int | None:
        """Why the inference process ended: its last error line, else its exit code."""
        try:
            while self.control.poll(0):
                msg = self.control.recv()
                if isinstance(msg, tuple) and msg[0] == "error":
                    return msg[1].strip().splitlines()[-1]
        except (EOFError, OSError):
            pass
        self.proc.join(timeout=1)
        return self.proc.exitcode

    def restart(self) -> None:
        self.close()
        self.start()

    def worker(self, w: int, conn, seed: int, crash_after: int,
               generation: int = 0) -> tuple[Callable, object]:
        self.generations[w] = generation  # before the worker exists: older requests drop
        h = EnvWorkerHandles(index=w, stream_offset=w * self.per_worker,
                             group_size=self.group_size, seed=seed, cfg=self.cfg,
                             slots=self.slots[w], conn=conn, step_conn=self.worker_ends[w],
                             generation=generation, crash_after=crash_after, cpus=self.cpus)
        return env_worker_main, h

    def metrics(self) -> dict[str, float]:
        """Observations per batched step and batched steps per second, since last asked."""
        t0, c0, o0 = self._since
        now, calls, obs = time.monotonic(), int(self.stats[0]), int(self.stats[1])
        self._since = (now, calls, obs)
        steps = calls - c0
        return {"inference_batch_mean": (obs - o0) / steps if steps else 0.0,
                "policy_steps_per_s": steps / max(now - t0, 1e-9)}

    def close(self) -> None:
        if self.proc is None:
            return
        try:
            self.control.send(None)
        except OSError:
            pass
        self.proc.join(timeout=3)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=2)
        self.control.close()
        self.proc = None

    def close_pipes(self) -> None:
        for conn in (*self.server_ends, *self.worker_ends):
            conn.close()
