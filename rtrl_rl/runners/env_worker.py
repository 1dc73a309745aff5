"""The env-only worker of the async runner with ``runner.inference=learner``.

A worker's streams form one or two env groups, each a vectorized env of its own. A group
writes each new observation into entry ``t`` of its current rollout slot (shared memory),
asks the ``InferenceServer`` process for actions with a ``(group, slot, t, generation)``
request on the step pipe, and steps when the reply says the actions are in the slot. While
one group waits, the other steps: the env CPU and the policy device are both kept busy (double
buffering). Nothing is pickled per step; the request and the reply are a few bytes.

A group whose rollout is complete (entry ``T`` acted on) sends it over the control pipe as
``("rollout", group, slot, episodes, -1, env_counts)``, carries entry ``T`` over as entry 0
of a free slot, and goes on; with no free slot it waits while the other group runs. The control pipe
is the one the policy-in-worker placement uses (``rtrl_rl.runners.policy_worker``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rtrl_rl.envs.base import TimeStep, VecEnv
from rtrl_rl.envs.guard import take_counts
from rtrl_rl.rollout import Rollout
from rtrl_rl.runners.inference_server import REPLY, REQUEST, SPIN_S
from rtrl_rl.runners.procs import (
    LearnerGone,
    Waiter,
    guarded,
    recv_frame,
    send_frame,
    take_messages,
)

#: Rollout fields an env group writes; the server writes action, dist_params, core_state and
#: policy_version. Entry T of all of them is carried over to entry 0 of the next slot.
CARRIED = ("obs", "reward", "first", "prev_action", "action", "dist_params")


@dataclass
class EnvWorkerHandles:
    """What an env-only worker process gets (picklable under spawn)."""

    index: int
    stream_offset: int
    group_size: int
    seed: int
    cfg: object  # TrainConfig
    slots: list[list[Rollout]]  # [group][slot], shared memory
    conn: object  # control pipe: rollouts and errors out, freed slots and stop in
    step_conn: object  # step pipe to the inference server
    generation: int = 0  # this worker's restart count: tags its requests
    crash_after: int = 0  # tests: raise after this many rollouts (0 = never)
    cpus: tuple[int, ...] = ()  # CPUs to pin this process to (empty: no pinning)


class EnvGroup:
    """One group's env and its place in the current slot."""

    def __init__(self, env: VecEnv, stream_offset: int, unroll: int) -> None:
        self.env, self.unroll = env, unroll
        self.stream_ids = torch.arange(stream_offset, stream_offset + env.spec.num_envs)
        self.slot: Rollout | None = None
        self.slot_index, self.t = -1, 0
        self.episodes: list[tuple[float, int]] = []
        defer = getattr(env, "defer", None)  # the env check, once per rollout
        self._check = defer() if defer is not None else None

    def _write(self, ts: TimeStep, prev_action) -> None:
        r = self.slot
        r.obs[self.t] = ts.obs
        r.reward[self.t] = ts.reward
        r.first[self.t] = ts.first
        r.prev_action[self.t] = prev_action
        if ts.done.any():
            for i in ts.done.nonzero().flatten().tolist():
                self.episodes.append((float(ts.episode_return[i]), int(ts.episode_length[i])))

    def _enter(self, slot: Rollout, index: int) -> None:
        self.slot, self.slot_index = slot, index
        slot.stream_ids.copy_(self.stream_ids)

    def start(self, seed: int, slot: Rollout, index: int) -> tuple[int, int]:
        """Reset the env into entry 0 of ``slot``; returns the request ``(slot, t=0)``."""
        self._enter(slot, index)
        self.t = 0
        ts = self.env.reset(seed=seed)
        self._write(ts, slot.prev_action[0].zero_())
        return index, 0

    def check(self) -> None:
        """The deferred env check, on the complete rollout in the slot."""
        if self._check is not None:
            self._check(self.slot.reward, self.slot.obs)

    @property
    def complete(self) -> bool:
        """Entry T has its action: the slot is a whole rollout."""
        return self.t == self.unroll

    def rotate(self, slot: Rollout, index: int) -> None:
        """Carry entry T of the finished slot over as entry 0 of ``slot``."""
        old = self.slot
        for name in CARRIED:
            getattr(slot, name)[0] = getattr(old, name)[self.unroll]
        self._enter(slot, index)
        self.t = 0

    def step(self) -> tuple[int, int]:
        """Step with the actions at entry t; write entry t+1; returns its request."""
        action = self.slot.action[self.t].clone()
        ts = self.env.step(action)
        self.t += 1
        self._write(ts, action)
        return self.slot_index, self.t

    def drain_episodes(self) -> list[tuple[float, int]]:
        out, self.episodes = self.episodes, []
        return out


def env_worker_main(h: EnvWorkerHandles) -> None:
    """Entry point of an env-only worker process."""
    guarded(h.conn, lambda parent: _run(h, parent), h.cpus)


def _request(h: EnvWorkerHandles, g: int, slot: int, t: int) -> None:
    try:
        send_frame(h.step_conn, REQUEST.pack(g, slot, t, h.generation))
    except OSError:
        raise LearnerGone from None


def _run(h: EnvWorkerHandles, parent: int) -> None:
    from rtrl_rl.envs import make_env

    unroll = h.cfg.runner.unroll
    groups: list[EnvGroup] = []
    free = [list(range(len(s))) for s in h.slots]
    produced = 0
    try:
        for g in range(len(h.slots)):
            env = make_env(h.cfg.env, h.group_size, h.seed + 104729 * g)
            env.first_stream = h.stream_offset + g * h.group_size
            groups.append(EnvGroup(env, h.stream_offset + g * h.group_size, unroll))
            slot = free[g].pop(0)
            _request(h, g, *groups[g].start(h.seed + 104729 * g, h.slots[g][slot], slot))
        stalled: set[int] = set()  # complete groups waiting for a free slot
        waiter = Waiter([h.conn, h.step_conn], SPIN_S)
        while True:
            ready = waiter.wait(0.5)
            if h.conn in ready or stalled or not ready:  # freed slots, stop, or a check
                take_messages(h.conn, free, parent, 0.0)
            replied = []
            if h.step_conn in ready:
                try:
                    while h.step_conn.poll(0):
                        g, gen = REPLY.unpack(recv_frame(h.step_conn, REPLY.size))
                        if gen == h.generation:  # not a reply meant for a dead predecessor
                            replied.append(g)
                except (EOFError, OSError):
                    raise LearnerGone from None
            for g in replied:
                group = groups[g]
                if group.complete:
                    group.check()
                    produced += 1
                    if h.crash_after and produced >= h.crash_after:
                        raise RuntimeError(
                            f"worker {h.index}: injected crash after {produced} rollouts")
                    try:
                        h.conn.send(("rollout", g, group.slot_index, group.drain_episodes(),
                                     -1, take_counts(group.env)))
                    except OSError:
                        raise LearnerGone from None
                    stalled.add(g)
                else:
                    _request(h, g, *group.step())
            for g in sorted(stalled):
                if free[g]:
                    stalled.discard(g)
                    slot = free[g].pop(0)
                    groups[g].rotate(h.slots[g][slot], slot)
                    _request(h, g, *groups[g].step())
    finally:
        for group in groups:
            group.env.close()
