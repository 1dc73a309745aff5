"""The env worker process of the async runner.

Each worker owns a vectorized env over its own streams and a local copy of the agent, acts
with it (policy inference in the worker), and writes each rollout into a free slot of its
preallocated shared-memory buffers. Only slot numbers and the finished episodes of a rollout
cross the queues; nothing is pickled per step. After each learner update the worker copies
the weights from a shared-memory agent when their version changes.
"""

from __future__ import annotations

import os
import queue
import signal
import traceback
from dataclasses import dataclass, fields

import torch

from rtrl_rl.rollout import Rollout


@dataclass
class WorkerHandles:
    """What a worker process gets (all picklable under the spawn start method)."""

    index: int
    stream_offset: int
    num_envs: int
    seed: int
    cfg: object  # TrainConfig
    slots: list[Rollout]  # shared-memory buffers, one Rollout per slot
    shared_agent: torch.nn.Module  # weights in shared memory
    version: object  # mp.Value('l'): learner updates published so far
    lock: object  # guards the weight copy
    free: object  # mp.Queue of free slot indices
    full: object  # mp.Queue of (worker, slot, episodes, version) / ("error", worker, text)
    stop: object  # mp.Event
    crash_after: int = 0  # tests: raise after this many rollouts (0 = never)
    generation: int = 0  # bumped at each restart; stale messages are ignored


def alloc_slots(spec, num_envs: int, unroll: int, state_size: int, count: int,
                dtype: torch.dtype) -> list[Rollout]:
    """``count`` preallocated shared-memory rollouts of ``num_envs`` streams."""
    t1 = unroll + 1
    slots = []
    for _ in range(count):
        r = Rollout(
            obs=torch.zeros(t1, num_envs, *spec.obs_shape, dtype=spec.obs_dtype),
            reward=torch.zeros(t1, num_envs),
            first=torch.zeros(t1, num_envs, dtype=torch.bool),
            prev_action=torch.zeros(t1, num_envs, dtype=torch.long),
            action=torch.zeros(t1, num_envs, dtype=torch.long),
            logits=torch.zeros(t1, num_envs, spec.num_actions),
            core_state=torch.zeros(num_envs, state_size, dtype=dtype),
            stream_ids=torch.zeros(num_envs, dtype=torch.long),
            policy_version=torch.zeros(num_envs, dtype=torch.long),
        )
        for f in fields(r):
            getattr(r, f.name).share_memory_()
        slots.append(r)
    return slots


def worker_main(h: WorkerHandles) -> None:
    """Entry point of a worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the learner process handles Ctrl-C
    torch.set_num_threads(1)
    parent = os.getppid()
    try:
        _run(h, parent)
    except Exception:  # report, then die: the learner decides what to do
        h.full.put(("error", h.index, h.generation, traceback.format_exc()))
        raise


def _run(h: WorkerHandles, parent: int) -> None:
    import copy

    from rtrl_rl.envs import make_env
    from rtrl_rl.runners.actor import Actor

    env = make_env(h.cfg.env, h.num_envs, h.seed)
    agent = copy.deepcopy(h.shared_agent)  # a private copy, not shared memory
    version = -1

    def refresh() -> None:
        nonlocal version
        v = h.version.value
        if v != version:
            with h.lock:
                agent.load_state_dict(h.shared_agent.state_dict())
                version = h.version.value

    def policy(obs, reward, prev_action, first, state):
        return agent.act(obs, reward, prev_action, first, state)

    dtype = next(agent.parameters()).dtype
    actor = Actor(env, policy, agent.core.initial_state(h.num_envs, dtype=dtype),
                  env.spec.num_actions, h.cfg.runner.unroll, stream_offset=h.stream_offset)
    refresh()
    actor.start(h.seed)
    produced = 0
    while not h.stop.is_set():
        if os.getppid() != parent:  # the learner is gone
            return
        refresh()
        actor.policy_version = version
        rollout = actor.collect()
        produced += 1
        if h.crash_after and produced >= h.crash_after:
            raise RuntimeError(f"worker {h.index}: injected crash after {produced} rollouts")
        while True:
            try:
                slot = h.free.get(timeout=0.5)
                break
            except queue.Empty:
                if h.stop.is_set() or os.getppid() != parent:
                    return
        dst = h.slots[slot]
        for f in fields(rollout):
            getattr(dst, f.name).copy_(getattr(rollout, f.name))
        h.full.put((h.index, h.generation, slot, actor.drain_episodes(), version))
    env.close()
