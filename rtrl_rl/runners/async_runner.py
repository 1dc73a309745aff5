"""The async runner: env worker processes keep stepping while the learner updates.

- ``runner.num_workers`` processes (spawned) each own ``num_envs / num_workers`` streams.
- Policy inference runs where ``runner.inference`` says (``rtrl_rl.runners.placement``):
  in the learner process on its device, batched over all workers, with each worker's streams
  split into two env groups that step in turn (double buffering); or in each worker on a
  private CPU copy of the weights. V-trace corrects the resulting policy lag, which is logged.
- Rollouts come back through preallocated shared-memory slots (``queue_size`` per env
  group); each worker has its own pipes, so no process shares a lock with another.
- A learner batch is ``runner.batch_size`` streams (default: all): the oldest ready rollouts,
  at most one per env group, with no barrier on the others. A group's rollouts are taken in
  the order it made them, so each stream's chunks reach the temporal-gradient module in
  order, and never two of them in one batch.
- A worker that dies (an exception, or SIGKILL at any moment) is restarted at once with the
  same stream ids. Its streams start new episodes (``first = 1`` at entry 0, so RTRL resets
  their sensitivities, and the policy's core state is reset) and act with the newest
  weights; the frames it lost are counted. A worker that keeps dying before its first
  rollout stops the run. A worker that is alive but silent for ``runner.worker_timeout_s``
  while the learner waits for it (a stuck env) is killed and restarted the same way. Any
  learner error stops all workers: ``close`` runs from the training loop's ``finally``; a
  learner that is killed closes its pipes, and the workers exit on their own.
- Bad env data (``rtrl_rl.envs.guard``) is not a crash: a worker whose env check raises
  reports it as fatal, and the learner raises the same ``EnvDataError``; the counters of
  the other ``env.nonfinite`` modes come with each rollout.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections import deque
from multiprocessing.connection import wait

import torch
import torch.multiprocessing as mp

from rtrl_rl.envs.guard import COUNTERS, add_counts
from rtrl_rl.errors import EnvDataError
from rtrl_rl.rollout import Rollout
from rtrl_rl.runners import affinity
from rtrl_rl.runners.placement import LearnerInference, WorkerInference
from rtrl_rl.runners.procs import alloc_slots

log = logging.getLogger(__name__)
#: A worker that dies this many times in a row without delivering a rollout stops the run.
MAX_FAILED_STARTS = 10
#: A worker silent since its start is restarted after max(worker_timeout_s, this) seconds.
STARTUP_S = 60.0


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
        self.frames_per_step = int(getattr(probe_env, "frames_per_step", 1))
        if probe_env is not None:
            probe_env.close()
        self.cfg, self.agent, self.device = cfg, agent, device
        self.num_workers, self.per_worker = rc.num_workers, rc.num_envs // rc.num_workers
        self.groups, self.group_size = rc.groups_per_worker, rc.group_size
        self.batch_units = rc.streams_per_batch // self.group_size  # validated: divides
        self.ctx = mp.get_context("spawn")
        dtype = next(agent.parameters()).dtype
        self.slots = [[alloc_slots(spec, self.group_size, rc.unroll, agent.core.state_size,
                                   rc.queue_size, dtype, agent.dist.param_size)
                       for _ in range(self.groups)] for _ in range(self.num_workers)]
        self._pinned = self._pin(rc)
        actors = self._pinned[0].actors if self._pinned else ()
        try:
            if rc.inference == "learner":
                self.placement = LearnerInference(cfg, agent, self.slots, self.per_worker,
                                                  self.ctx, device, actors)
            else:
                self.placement = WorkerInference(cfg, agent, self.slots, self.per_worker,
                                                 self.ctx, actors)
        except BaseException:
            self._unpin()
            raise
        log.info("policy inference: %s", self.placement.describe())
        if self._pinned:
            log.info("cpu affinity: %s", self._pinned[0].describe())
        n = self.num_workers
        self.procs: list = [None] * n
        self.conns: list = [None] * n
        self.generation = [0] * n
        self.failed_starts = [0] * n  # deaths since the worker's last delivered rollout
        # per env group u = w * groups + g: (arrival, slot, episodes)
        self.pending: list[deque] = [deque() for _ in range(n * self.groups)]
        self._arrivals = 0
        self.restarts, self.lost_frames, self.inference_failures = 0, 0, 0
        self.env_counts = dict.fromkeys(COUNTERS, 0)  # the env check's, over all workers
        self.restart_seconds: list[float] = []  # death noticed -> first rollout of the new one
        self._died_at: dict[int, float] = {}
        self._heard = [0.0] * n  # when each worker last sent something (or was started)
        self._spoke = [False] * n  # whether it sent anything since its last start
        self._crash_after = dict(crash_after or {})
        try:
            for w in range(n):
                self._start(w)
        except BaseException:
            self.close()
            raise

    def _pin(self, rc) -> tuple[affinity.CpuPlan, list[int], int] | None:
        """Pin this (the learner's) process per ``runner.cpu_affinity``; returns the plan
        and what to restore on close (the CPUs and torch's thread count), or None."""
        if not affinity.wanted(rc.cpu_affinity, rc.kind, rc.inference, self.device.type):
            return None
        before, threads = affinity.available(), torch.get_num_threads()
        plan = affinity.make_plan(affinity.rank_share(before, os.environ), threads)
        if plan is None:
            log.info("cpu affinity: fewer than 2 CPUs for this process, nothing pinned")
            return None
        affinity.pin_process(plan.learner)
        if threads > len(plan.learner):  # more threads than cores only makes them wait
            torch.set_num_threads(len(plan.learner))
        return plan, before, threads

    def _unpin(self) -> None:
        if getattr(self, "_pinned", None):
            _, cpus, threads = self._pinned
            affinity.pin_process(cpus)
            torch.set_num_threads(threads)
            self._pinned = None

    @property
    def version(self) -> int:
        """Weight versions published so far."""
        return self.placement.version

    def _units(self, w: int) -> range:
        return range(w * self.groups, (w + 1) * self.groups)

    def _start(self, w: int) -> None:
        ours, theirs = self.ctx.Pipe(duplex=True)
        seed = self.cfg.seed + 1000 * w + 7919 * self.generation[w]
        target, handles = self.placement.worker(
            w, theirs, seed, self._crash_after.pop(w, 0), generation=self.generation[w])
        proc = self.ctx.Process(target=target, args=(handles,), daemon=True,
                                name=f"rtrl-env-worker-{w}")
        proc.start()
        theirs.close()  # the worker holds the only other end: EOF tells either side
        self.procs[w], self.conns[w] = proc, ours
        self._heard[w], self._spoke[w] = time.monotonic(), False

    def _restart(self, w: int, why: str, own_failure: bool = True) -> None:
        """Restart worker ``w``. ``own_failure=False``: it is restarted for another
        process's death (the inference process), which does not count towards the deaths
        in a row that stop the run."""
        self.restarts += 1
        self.failed_starts[w] += int(own_failure)
        if self.failed_starts[w] >= MAX_FAILED_STARTS:
            raise RuntimeError(f"env worker {w} died {self.failed_starts[w]} times in a row "
                               f"before delivering a rollout; last: {why}")
        waiting = sum(len(self.pending[u]) + 1 for u in self._units(w))
        lost = waiting * self.cfg.runner.unroll * self.group_size * self.frames_per_step
        self.lost_frames += lost
        log.warning("env worker %d died (%s); restarting it, ~%d frames lost", w, why, lost)
        for u in self._units(w):
            self.pending[u].clear()
        self._stop_worker(w, grace=0.5)
        self.generation[w] += 1
        self._died_at[w] = time.monotonic()
        self._start(w)

    def _send(self, w: int, msg: tuple[int, int] | None) -> None:
        """A freed ``(group, slot)``, or None (stop), to worker ``w``; a dead one is handled
        at the next poll."""
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
                self._heard[w], self._spoke[w] = time.monotonic(), True
                if msg[0] == "fatal":  # bad env data: a restart would not cure it
                    raise EnvDataError(msg[1])
                if msg[0] == "error":
                    self._restart(w, msg[1].strip().splitlines()[-1])
                    return
                _, g, slot, episodes, _, counts = msg
                add_counts(self.env_counts, counts)
                self._arrivals += 1
                self.pending[w * self.groups + g].append((self._arrivals, slot, episodes))
                self.failed_starts[w] = 0
                self.inference_failures = 0
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
        inference = self.placement.sentinel
        if inference is not None:
            owner[inference] = -1
        touched = sorted({owner[r] for r in wait(list(owner), timeout)})
        if touched and touched[0] == -1:
            why = self.placement.death()
            self._restart_inference(why if isinstance(why, str) else _exit_reason(why))
            return
        for w in touched:
            if self.procs[w].is_alive():
                self._receive(w)
                continue
            generation = self.generation[w]
            self._receive(w)  # its last words first: a fatal error, or rollouts, then EOF
            if self.generation[w] == generation:
                self._restart(w, _exit_reason(self.procs[w].exitcode))

    def _restart_inference(self, why: str) -> None:
        """The inference process died: restart it, and every worker (the streams' core
        states died with it, and the workers wait for replies that will not come)."""
        self.inference_failures += 1
        if self.inference_failures >= MAX_FAILED_STARTS:
            raise RuntimeError(f"the policy inference process died {self.inference_failures} "
                               f"times in a row before a rollout arrived; last: {why}")
        log.warning("policy inference process died (%s); restarting it and every env worker",
                    why)
        self.placement.restart()
        for w in range(self.num_workers):
            self._restart(w, "policy inference restarted", own_failure=False)

    def _restart_silent(self) -> None:
        """Kill and restart each worker the learner waits for that has been silent too long.
        A worker that has not spoken since it started gets at least ``STARTUP_S``: spawning
        and importing torch takes seconds on a loaded machine, and is not a hang."""
        timeout = self.cfg.runner.worker_timeout_s
        now = time.monotonic()
        for w in range(self.num_workers):
            waited = any(not self.pending[u] for u in self._units(w))  # a group it lacks
            limit = timeout if self._spoke[w] else max(timeout, STARTUP_S)
            if timeout and waited and now - self._heard[w] > limit:
                self._restart(w, f"alive but silent for {now - self._heard[w]:.0f} s")

    def next_rollout(self, policy_version: int) -> tuple[Rollout, list[tuple[float, int]]]:
        """Wait until ``batch_units`` env groups have a rollout ready; return the oldest
        ones (one per group) as one batch, in stream order."""
        self._poll(timeout=0.0)  # take what has arrived, so "oldest" sees all of it
        while sum(1 for p in self.pending if p) < self.batch_units:
            self._poll(timeout=1.0)
            self._restart_silent()
        ready = sorted((p[0][0], u) for u, p in enumerate(self.pending) if p)
        chosen = sorted(u for _, u in ready[: self.batch_units])
        taken, episodes = [], []
        for u in chosen:
            _, slot, eps = self.pending[u].popleft()
            taken.append((u, slot))
            episodes.extend(eps)
        pin = self.device.type == "cuda"  # so that the copy to the device does not block
        batch = Rollout.cat([self.slots[u // self.groups][u % self.groups][s]
                             for u, s in taken], pin_memory=pin)
        for u, slot in taken:
            self._send(u // self.groups, (u % self.groups, slot))
        return batch, episodes

    def after_update(self) -> None:
        """Publish the learner's weights to the policy (never waits on the workers)."""
        self.placement.after_update()

    def metrics(self) -> dict[str, float]:
        return {**self.env_counts,
                "worker_restarts": self.restarts, "lost_frames": self.lost_frames,
                "restart_s_max": max(self.restart_seconds, default=0.0),
                **self.placement.metrics()}

    def state_dict(self) -> dict:
        return {}  # worker envs cannot be captured: episodes restart on resume

    def load_state_dict(self, state: dict) -> bool:
        return False

    def close(self) -> None:
        if getattr(self, "placement", None) is not None:
            self.placement.close()
        for w, conn in enumerate(getattr(self, "conns", ())):
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
        if getattr(self, "placement", None) is not None:
            self.placement.close_pipes()
        self._unpin()
