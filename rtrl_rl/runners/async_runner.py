"""The async runner: env worker processes keep stepping while the learner updates.

- ``runner.num_workers`` processes (spawned) each own ``num_envs / num_workers`` streams.
- Policy inference runs in the workers on a private copy of the weights, refreshed from a
  shared-memory agent after every update. On CPU machines this avoids a per-step round trip
  to the learner; V-trace corrects the resulting policy lag, which is logged.
- Rollouts come back through preallocated shared-memory slots (``queue_size`` per worker).
  A learner batch takes the oldest ready rollout of *every* worker, so each stream's chunks
  reach the temporal-gradient module in order and exactly once per batch.
- A worker that dies is restarted (its streams start new episodes; RTRL resets their
  sensitivities at the episode start) and the frames it lost are counted. Any learner error
  stops all workers: ``close`` runs from the training loop's ``finally``.
"""

from __future__ import annotations

import copy
import logging
import queue
import time
from collections import deque

import torch
import torch.multiprocessing as mp

from rtrl_rl.errors import ConfigError
from rtrl_rl.rollout import Rollout
from rtrl_rl.runners.async_worker import WorkerHandles, alloc_slots, worker_main

log = logging.getLogger(__name__)
MAX_RESTARTS = 20


class AsyncRunner:
    def __init__(self, cfg, agent, device: torch.device, spec, probe_env=None,
                 crash_after: dict[int, int] | None = None) -> None:
        rc = cfg.runner
        if rc.num_envs % rc.num_workers:
            raise ConfigError(f"runner.num_envs ({rc.num_envs}) must be divisible by "
                              f"runner.num_workers ({rc.num_workers})")
        if rc.inference != "worker":
            log.info("runner=async runs policy inference in the workers "
                     "(runner.inference=%s is used by the sync runner only)", rc.inference)
        self.frames_per_step = int(getattr(probe_env, "frames_per_step", 1))
        if probe_env is not None:
            probe_env.close()
        self.cfg, self.agent, self.device = cfg, agent, device
        self.num_workers, self.per_worker = rc.num_workers, rc.num_envs // rc.num_workers
        self.ctx = mp.get_context("spawn")
        self.shared = copy.deepcopy(agent).cpu()
        self.shared.share_memory()
        self.version = self.ctx.Value("l", 0)
        self.lock = self.ctx.Lock()
        self.stop = self.ctx.Event()
        self.full = self.ctx.Queue()
        dtype = next(agent.parameters()).dtype
        self.slots = [alloc_slots(spec, self.per_worker, rc.unroll, agent.core.state_size,
                                  rc.queue_size, dtype) for _ in range(self.num_workers)]
        self.free: list = [None] * self.num_workers
        self.procs: list = [None] * self.num_workers
        self.generation = [0] * self.num_workers
        self.pending: list[deque] = [deque() for _ in range(self.num_workers)]
        self.restarts, self.lost_frames = 0, 0
        self._crash_after = dict(crash_after or {})
        for w in range(self.num_workers):
            self._start(w)

    def _start(self, w: int) -> None:
        gen = self.generation[w]
        self.free[w] = self.ctx.Queue()
        for s in range(len(self.slots[w])):
            self.free[w].put(s)
        handles = WorkerHandles(
            index=w, stream_offset=w * self.per_worker, num_envs=self.per_worker,
            seed=self.cfg.seed + 1000 * w + 7919 * gen, cfg=self.cfg, slots=self.slots[w],
            shared_agent=self.shared, version=self.version, lock=self.lock, free=self.free[w],
            full=self.full, stop=self.stop, crash_after=self._crash_after.pop(w, 0),
            generation=gen,
        )
        proc = self.ctx.Process(target=worker_main, args=(handles,), daemon=True,
                                name=f"rtrl-env-worker-{w}")
        proc.start()
        self.procs[w] = proc

    def _restart(self, w: int, why: str) -> None:
        self.restarts += 1
        if self.restarts > MAX_RESTARTS:
            raise RuntimeError(f"env workers failed {self.restarts} times; last: {why}")
        unroll = self.cfg.runner.unroll
        lost = (len(self.pending[w]) + 1) * unroll * self.per_worker * self.frames_per_step
        self.lost_frames += lost
        log.warning("env worker %d died (%s); restarting it, ~%d frames lost", w, why, lost)
        self.pending[w].clear()
        proc = self.procs[w]
        proc.join(timeout=2)
        if proc.is_alive():
            proc.kill()
        self.generation[w] += 1
        self._start(w)

    def _check_workers(self) -> None:
        for w, proc in enumerate(self.procs):
            if not proc.is_alive():
                self._restart(w, f"exit code {proc.exitcode}")

    def next_rollout(self, policy_version: int) -> tuple[Rollout, list[tuple[float, int]]]:
        """Wait until every worker has a rollout ready; return them as one batch."""
        while any(not p for p in self.pending):
            try:
                msg = self.full.get(timeout=1.0)
            except queue.Empty:
                self._check_workers()
                continue
            if msg[0] == "error":
                _, w, gen, text = msg
                if gen == self.generation[w]:
                    self._restart(w, text.strip().splitlines()[-1])
                continue
            w, gen, slot, episodes, version = msg
            if gen == self.generation[w]:
                self.pending[w].append((slot, episodes, version))
        taken, episodes = [], []
        for w in range(self.num_workers):
            slot, eps, _ = self.pending[w].popleft()
            taken.append(slot)
            episodes.extend(eps)
        batch = Rollout.cat([self.slots[w][s] for w, s in enumerate(taken)])  # copies
        for w, slot in enumerate(taken):
            self.free[w].put(slot)
        return batch, episodes

    def after_update(self) -> None:
        """Publish the learner's weights to the workers."""
        with self.lock, torch.no_grad():
            for dst, src in zip(self.shared.state_dict().values(),
                                self.agent.state_dict().values(), strict=True):
                dst.copy_(src)
            self.version.value += 1

    def metrics(self) -> dict[str, float]:
        return {"worker_restarts": self.restarts, "lost_frames": self.lost_frames}

    def state_dict(self) -> dict:
        return {}  # worker envs cannot be captured: episodes restart on resume

    def load_state_dict(self, state: dict) -> bool:
        return False

    def close(self) -> None:
        self.stop.set()
        deadline = time.time() + 5
        for proc in self.procs:
            if proc is not None:
                proc.join(timeout=max(0.1, deadline - time.time()))
        for proc in self.procs:
            if proc is not None and proc.is_alive():
                proc.kill()
                proc.join(timeout=2)
        for q in [self.full, *self.free]:
            if q is not None:
                q.cancel_join_thread()
                q.close()
