"""The async runner: env worker processes keep stepping while the learner updates.

- ``runner.num_workers`` processes (spawned) each own ``num_envs / num_workers`` streams.
- Policy inference runs in the workers on a private copy of the weights, refreshed from a
  lock-free ``WeightBoard`` after every update. On CPU machines this avoids a per-step round
  trip to the learner; V-trace corrects the resulting policy lag, which is logged.
- Rollouts come back through preallocated shared-memory slots (``queue_size`` per worker);
  each worker has its own pipe for slot numbers, so no process shares a lock with another.
- A learner batch is ``runner.batch_size`` streams (default: all): the oldest ready rollouts,
  at most one per worker, with no barrier on the others. A worker's rollouts are taken in the
  order it made them, so each stream's chunks reach the temporal-gradient module in order,
  and never two of them in one batch.
- A worker that dies (an exception, or SIGKILL at any moment) is restarted at once with the
  same stream ids. Its streams start new episodes (``first = 1`` at entry 0, so RTRL resets
  their sensitivities) and act with the newest weights; the frames it lost are counted.
  A worker that keeps dying before its first rollout stops the run. A worker that is alive
  but silent for ``runner.worker_timeout_s`` while the learner waits for it (a stuck env)
  is killed and restarted the same way. Any learner error stops
  all workers: ``close`` runs from the training loop's ``finally``; a learner that is killed
  closes its pipes, and the workers exit on their own.
"""

from __future__ import annotations

import copy
import logging
import signal
import time
from collections import deque
from multiprocessing.connection import wait

import torch
import torch.multiprocessing as mp

from rtrl_rl.rollout import Rollout
from rtrl_rl.runners.async_worker import WorkerHandles, alloc_slots, worker_main
from rtrl_rl.runners.weights import WeightBoard

log = logging.getLogger(__name__)
#: A worker that dies this many times in a row without delivering a rollout stops the run.
MAX_FAILED_STARTS = 10


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            pass
    return f"exit code {code}"


class AsyncRunner:
    def __init__(self, cfg, agent, device: torch.device, spec, probe_env=None,
                 crash_after: dict[int, int] | None = None) -> None:
        rc = cfg.runner  # validated: num_envs is a multiple of num_workers
        if rc.inference != "worker":
            log.info("runner=async runs policy inference in the workers "
                     "(runner.inference=%s is used by the sync runner only)", rc.inference)
        self.frames_per_step = int(getattr(probe_env, "frames_per_step", 1))
        if probe_env is not None:
            probe_env.close()
        self.cfg, self.agent, self.device = cfg, agent, device
        self.num_workers, self.per_worker = rc.num_workers, rc.num_envs // rc.num_workers
        self.batch_workers = rc.streams_per_batch // self.per_worker  # validated: divides
        self.ctx = mp.get_context("spawn")
        self.template = copy.deepcopy(agent).cpu()
        self.board = WeightBoard(agent)
        dtype = next(agent.parameters()).dtype
        self.slots = [alloc_slots(spec, self.per_worker, rc.unroll, agent.core.state_size,
                                  rc.queue_size, dtype) for _ in range(self.num_workers)]
        n = self.num_workers
        self.procs: list = [None] * n
        self.conns: list = [None] * n
        self.generation = [0] * n
        self.failed_starts = [0] * n  # deaths since the worker's last delivered rollout
        self.pending: list[deque] = [deque() for _ in range(n)]  # (arrival, slot, eps, ver)
        self._arrivals = 0
        self.restarts, self.lost_frames = 0, 0
        self.restart_seconds: list[float] = []  # death noticed -> first rollout of the new one
        self._died_at: dict[int, float] = {}
        self._heard = [0.0] * n  # when each worker last sent something (or was started)
        self._crash_after = dict(crash_after or {})
        for w in range(n):
            self._start(w)

    @property
    def version(self) -> int:
        """Weight versions published so far."""
        return self.board.latest

    def _start(self, w: int) -> None:
        ours, theirs = self.ctx.Pipe(duplex=True)
        handles = WorkerHandles(
            index=w, stream_offset=w * self.per_worker, num_envs=self.per_worker,
            seed=self.cfg.seed + 1000 * w + 7919 * self.generation[w], cfg=self.cfg,
            slots=self.slots[w], template=self.template, board=self.board, conn=theirs,
            crash_after=self._crash_after.pop(w, 0),
        )
        proc = self.ctx.Process(target=worker_main, args=(handles,), daemon=True,
                                name=f"rtrl-env-worker-{w}")
        proc.start()
        theirs.close()  # the worker holds the only other end: EOF tells either side
        self.procs[w], self.conns[w] = proc, ours
        self._heard[w] = time.monotonic()

    def _restart(self, w: int, why: str) -> None:
        self.restarts += 1
        self.failed_starts[w] += 1
        if self.failed_starts[w] >= MAX_FAILED_STARTS:
            raise RuntimeError(f"env worker {w} died {self.failed_starts[w]} times in a row "
                               f"before delivering a rollout; last: {why}")
        unroll = self.cfg.runner.unroll
        lost = (len(self.pending[w]) + 1) * unroll * self.per_worker * self.frames_per_step
        self.lost_frames += lost
        log.warning("env worker %d died (%s); restarting it, ~%d frames lost", w, why, lost)
        self.pending[w].clear()
        self._stop_worker(w, grace=0.5)
        self.generation[w] += 1
        self._died_at[w] = time.monotonic()
        self._start(w)

    def _send(self, w: int, msg: int | None) -> None:
        """A freed slot, or None (stop), to worker ``w``; a dead one is handled at the next
        poll."""
        try:
            self.conns[w].send(msg)
        except OSError:
            pass

    def _stop_worker(self, w: int, grace: float) -> None:
        proc, conn = self.procs[w], self.conns[w]
        self._send(w, None)
        proc.join(timeout=grace)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=2)
        conn.close()

    def _receive(self, w: int) -> None:
        """Take every message waiting on worker ``w``'s pipe."""
        conn = self.conns[w]
        try:
            while conn.poll(0):
                msg = conn.recv()
                self._heard[w] = time.monotonic()
                if msg[0] == "error":
                    self._restart(w, msg[1].strip().splitlines()[-1])
                    return
                _, slot, episodes, version = msg
                self._arrivals += 1
                self.pending[w].append((self._arrivals, slot, episodes, version))
                self.failed_starts[w] = 0
                if w in self._died_at:
                    took = time.monotonic() - self._died_at.pop(w)
                    self.restart_seconds.append(took)
                    log.info("env worker %d is back after %.1f s", w, took)
        except (EOFError, OSError):  # died, possibly in the middle of a message
            self._restart(w, _exit_reason(self._exitcode(w)))

    def _exitcode(self, w: int) -> int | None:
        self.procs[w].join(timeout=1)
        return self.procs[w].exitcode

    def _poll(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for messages or deaths, then handle them."""
        owner = {}
        for w in range(self.num_workers):
            owner[self.conns[w]] = owner[self.procs[w].sentinel] = w
        touched = sorted({owner[r] for r in wait(list(owner), timeout)})
        for w in touched:
            if self.procs[w].is_alive():
                self._receive(w)
            else:
                self._restart(w, _exit_reason(self.procs[w].exitcode))

    def _restart_silent(self) -> None:
        """Kill and restart each worker the learner waits for that has been silent too long."""
        limit = self.cfg.runner.worker_timeout_s
        now = time.monotonic()
        for w in range(self.num_workers):
            if limit and not self.pending[w] and now - self._heard[w] > limit:
                self._restart(w, f"alive but silent for {now - self._heard[w]:.0f} s")

    def next_rollout(self, policy_version: int) -> tuple[Rollout, list[tuple[float, int]]]:
        """Wait until ``batch_workers`` workers have a rollout ready; return the oldest ones
        (one per worker) as one batch, in worker order."""
        self._poll(timeout=0.0)  # take what has arrived, so "oldest" sees all of it
        while sum(1 for p in self.pending if p) < self.batch_workers:
            self._poll(timeout=1.0)
            self._restart_silent()
        ready = sorted((p[0][0], w) for w, p in enumerate(self.pending) if p)
        chosen = sorted(w for _, w in ready[: self.batch_workers])
        taken, episodes = [], []
        for w in chosen:
            _, slot, eps, _ = self.pending[w].popleft()
            taken.append((w, slot))
            episodes.extend(eps)
        batch = Rollout.cat([self.slots[w][s] for w, s in taken])  # copies
        for w, slot in taken:
            self._send(w, slot)
        return batch, episodes

    def after_update(self) -> None:
        """Publish the learner's weights to the workers (never waits on them)."""
        self.board.publish(self.agent.state_dict())

    def metrics(self) -> dict[str, float]:
        return {"worker_restarts": self.restarts, "lost_frames": self.lost_frames,
                "restart_s_max": max(self.restart_seconds, default=0.0)}

    def state_dict(self) -> dict:
        return {}  # worker envs cannot be captured: episodes restart on resume

    def load_state_dict(self, state: dict) -> bool:
        return False

    def close(self) -> None:
        for w, conn in enumerate(self.conns):
            if conn is not None:
                self._send(w, None)
        deadline = time.time() + 5
        for proc in self.procs:
            if proc is not None:
                proc.join(timeout=max(0.1, deadline - time.time()))
        for w, proc in enumerate(self.procs):
            if proc is not None and proc.is_alive():
                proc.kill()
                proc.join(timeout=2)
            if self.conns[w] is not None:
                self.conns[w].close()
