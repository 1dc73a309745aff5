"""CPU affinity of the async runner's processes: the plan, and the processes it pins."""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch

from rtrl_rl.runners import affinity
from rtrl_rl.runners.affinity import CpuPlan, make_plan, rank_share, wanted


@pytest.mark.parametrize("cpus,threads,learner,actors", [
    ([0, 1], 1, (0,), (1,)),
    ([0, 1], 2, (0,), (1,)),  # never more than half
    ([3, 1, 2, 0], 0, (0,), (1, 2, 3)),  # sorted; at least one
    (list(range(16)), 4, (0, 1, 2, 3), tuple(range(4, 16))),
    (list(range(16)), 16, tuple(range(8)), tuple(range(8, 16))),
    ([2, 5, 7], 1, (2,), (5, 7)),
])
def test_plan_gives_the_learner_its_threads_up_to_half(cpus, threads, learner, actors):
    assert make_plan(cpus, threads) == CpuPlan(learner, actors)


def test_one_cpu_is_not_split():
    assert make_plan([4], 1) is None and make_plan([], 1) is None


@pytest.mark.parametrize("env,share", [
    ({}, list(range(8))),
    ({"LOCAL_WORLD_SIZE": "1", "LOCAL_RANK": "0"}, list(range(8))),
    ({"LOCAL_WORLD_SIZE": "2", "LOCAL_RANK": "0"}, [0, 1, 2, 3]),
    ({"LOCAL_WORLD_SIZE": "2", "LOCAL_RANK": "1"}, [4, 5, 6, 7]),
    ({"LOCAL_WORLD_SIZE": "3", "LOCAL_RANK": "1"}, [2, 3]),
    ({"LOCAL_WORLD_SIZE": "3", "LOCAL_RANK": "2"}, [4, 5, 6, 7]),  # the remainder
])
def test_torchrun_ranks_take_disjoint_shares(env, share):
    assert rank_share(range(7, -1, -1), env) == share


@pytest.mark.parametrize("mode,kind,inference,device,expected", [
    ("auto", "async", "learner", "cpu", True),
    ("auto", "async", "worker", "cpu", False),  # measured slower
    ("auto", "async", "learner", "cuda", False),
    ("auto", "sync", "learner", "cpu", False),
    ("always", "async", "worker", "cuda", True),
    ("always", "sync", "worker", "cpu", False),  # one process: nothing to split
    ("never", "async", "learner", "cpu", False),
])
def test_auto_pins_only_the_learner_placement_on_the_cpu(mode, kind, inference, device,
                                                         expected):
    assert wanted(mode, kind, inference, device) is expected


def test_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match="cpu_affinity"):
        wanted("yes", "async", "learner", "cpu")


def test_plan_describes_cpu_ranges():
    text = CpuPlan((0,), (1, 2, 3, 6)).describe()
    assert "learner on CPU 0," in text and "on CPUs 1-3,6" in text
    assert CpuPlan((0, 1), (2,)).describe().startswith("learner on CPUs 0-1, ")


def _threads_affinity(pid: int | str = "self") -> set[frozenset[int]]:
    """The CPU sets of every thread of a process."""
    return {frozenset(os.sched_getaffinity(int(tid)))
            for tid in os.listdir(f"/proc/{pid}/task")}


def _await_affinity(pid: int, cpus: set[int], timeout: float = 30.0) -> set[int]:
    """A child pins itself when it starts: wait for that (or the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        got = os.sched_getaffinity(pid)
        if got == cpus or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


needs_two = pytest.mark.skipif(len(affinity.available()) < 2, reason="needs 2 CPUs")


@needs_two
@pytest.mark.timeout(120)
def test_learner_placement_pins_learner_and_actors_apart_and_restores(tmp_path):
    """auto, inference=learner on the CPU: every thread of the learner on its CPU, the
    workers and the inference process on the others, a SIGKILLed worker's replacement
    too; on close the learner gets its CPUs and thread count back."""
    from tests.runners.test_inference_server import _small_learner_runner

    before, threads = set(affinity.available()), torch.get_num_threads()
    plan = make_plan(sorted(before), threads)
    runner = _small_learner_runner(tmp_path)
    try:
        assert runner._pinned is not None and runner._pinned[0] == plan
        assert _threads_affinity() == {frozenset(plan.learner)}
        assert torch.get_num_threads() <= len(plan.learner)
        runner.next_rollout(0)
        actors = set(plan.actors)
        kids = [runner.placement.proc.pid, *(p.pid for p in runner.procs)]
        for pid in kids:
            assert _await_affinity(pid, actors) == actors
            assert _threads_affinity(pid) == {frozenset(actors)}
        os.kill(runner.procs[0].pid, signal.SIGKILL)
        runner.procs[0].join(timeout=10)
        deadline = time.monotonic() + 60
        while runner.restarts == 0 and time.monotonic() < deadline:
            runner._poll(timeout=0.5)
        assert runner.restarts == 1
        assert _await_affinity(runner.procs[0].pid, actors) == actors
    finally:
        runner.close()
    assert _threads_affinity() == {frozenset(before)}
    assert torch.get_num_threads() == threads


@needs_two
@pytest.mark.timeout(120)
def test_never_leaves_every_process_unpinned(tmp_path):
    from rtrl_rl.envs import make_env
    from rtrl_rl.models.agent import Agent
    from rtrl_rl.runners.async_runner import AsyncRunner
    from tests.runners.helpers import make_cfg

    before = set(affinity.available())
    cfg = make_cfg(tmp_path, "runner=async", "runner.inference=learner",
                   "runner.cpu_affinity=never", "runner.num_workers=2", "env.delay=3",
                   "model.hidden_size=8")
    env = make_env(cfg.env, cfg.runner.num_envs, cfg.seed)
    runner = AsyncRunner(cfg, Agent(env.spec, cfg.model), torch.device("cpu"), env.spec,
                         probe_env=env)
    try:
        runner.next_rollout(0)
        assert runner._pinned is None
        for pid in ["self", runner.placement.proc.pid, *(p.pid for p in runner.procs)]:
            assert _threads_affinity(pid) == {frozenset(before)}
    finally:
        runner.close()
