"""The policy worker: the env worker process of the async runner with
``runner.inference=worker``.

Each worker owns a vectorized env over its own streams and a local copy of the agent, acts
with it (policy inference in the worker), and writes each rollout into a free slot of its
preallocated shared-memory buffers. Worker and learner talk over one private pipe: the
worker sends ``("rollout", group, slot, episodes, version, env_counts)`` (group 0: one
group per worker here), ``("error", traceback)`` or ``("fatal", message)`` (bad env data,
which a restart would not cure), the learner sends back freed ``(group, slot)`` pairs, or
``None`` to stop. Nothing is pickled per step.

No lock is shared with any other process: weights come from a ``WeightBoard``, and the pipe
has one writer per direction. A learner that dies closes its end of the pipe, which the
worker notices within one rollout (or half a second while it waits for a slot) and exits.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields

import torch

from rtrl_rl.envs.guard import take_counts
from rtrl_rl.rollout import Rollout
from rtrl_rl.runners.procs import LearnerGone, guarded, take_messages
from rtrl_rl.runners.weights import WeightBoard


@dataclass
class WorkerHandles:
    """What a worker process gets (all picklable under the spawn start method)."""

    index: int
    stream_offset: int
    num_envs: int
    seed: int
    cfg: object  # TrainConfig
    slots: list[Rollout]  # shared-memory buffers, one Rollout per slot
    template: torch.nn.Module  # the agent's architecture (CPU); weights come from the board
    board: WeightBoard
    conn: object  # this worker's end of its duplex pipe to the learner
    crash_after: int = 0  # tests: raise after this many rollouts (0 = never)
    cpus: tuple[int, ...] = ()  # CPUs to pin this process to (empty: no pinning)


def worker_main(h: WorkerHandles) -> None:
    """Entry point of a worker process."""
    guarded(h.conn, lambda parent: _run(h, parent), h.cpus)


def _run(h: WorkerHandles, parent: int) -> None:
    from rtrl_rl.envs import make_env
    from rtrl_rl.runners.actor import Actor

    env = make_env(h.cfg.env, h.num_envs, h.seed)
    env.first_stream = h.stream_offset
    agent = copy.deepcopy(h.template)  # private weights, refreshed from the board
    version = h.board.read_into(agent)

    def policy(obs, reward, prev_action, first, state):
        return agent.act(obs, reward, prev_action, first, state)

    dtype = next(agent.parameters()).dtype
    actor = Actor(env, policy, agent.core.initial_state(h.num_envs, dtype=dtype),
                  agent.dist.param_size, h.cfg.runner.unroll, stream_offset=h.stream_offset)
    actor.start(h.seed)
    free = [list(range(len(h.slots)))]
    produced = 0
    try:
        while True:
            if h.board.latest != version:
                version = h.board.read_into(agent)
            actor.policy_version = version
            rollout = actor.collect()
            produced += 1
            if h.crash_after and produced >= h.crash_after:
                raise RuntimeError(f"worker {h.index}: injected crash after {produced} rollouts")
            take_messages(h.conn, free, parent, 0.0)
            while not free[0]:
                take_messages(h.conn, free, parent, 0.5)
            slot = free[0].pop(0)
            dst = h.slots[slot]
            for f in fields(rollout):
                getattr(dst, f.name).copy_(getattr(rollout, f.name))
            try:
                h.conn.send(("rollout", 0, slot, actor.drain_episodes(), version,
                             take_counts(env)))
            except OSError:
                raise LearnerGone from None
    finally:
        env.close()
