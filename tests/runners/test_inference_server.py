"""Policy inference in the learner process (``runner.inference=learner``).

In process: env groups plus the inference server, driven step by step, must cut exactly the
rollouts the worker placement's ``Actor`` cuts with the same weights, observations and RNG
state. Across processes (env workers and the inference process): the rollouts of
double-buffered env workers tile time, carry the core state before entry 0, and re-unroll
to the logits the server acted with.
"""

from __future__ import annotations

import logging

import pytest
import torch

from rtrl_rl.envs import make_env
from rtrl_rl.envs.base import EnvSpec, TimeStep
from rtrl_rl.models.agent import Agent
from rtrl_rl.rollout import Rollout
from rtrl_rl.runners.actor import Actor
from rtrl_rl.runners.async_runner import AsyncRunner
from rtrl_rl.runners.env_worker import EnvGroup
from rtrl_rl.runners.inference_server import InferenceServer
from rtrl_rl.runners.procs import alloc_slots
from rtrl_rl.runners.weights import WeightBoard
from tests.runners.helpers import make_cfg
from tests.runners.test_actor import ENTRY_FIELDS, ENV, UNROLL, _agent

GROUP, ROLLOUTS, SEED = 2, 6, 7
FIELDS = (*ENTRY_FIELDS, "core_state", "stream_ids")


class _Side:
    """Two group envs seen as one of 2 x GROUP streams (what one worker's Actor steps)."""

    def __init__(self, envs) -> None:
        self.envs = envs
        s = envs[0].spec
        self.spec = EnvSpec(num_envs=len(envs) * s.num_envs, obs_shape=s.obs_shape,
                            obs_dtype=s.obs_dtype, num_actions=s.num_actions)

    @staticmethod
    def _cat(steps: list[TimeStep]) -> TimeStep:
        return TimeStep(**{k: torch.cat([getattr(s, k) for s in steps])
                           for k in TimeStep.__dataclass_fields__})

    def reset(self, seed=None) -> TimeStep:
        return self._cat([e.reset(seed=SEED + k) for k, e in enumerate(self.envs)])

    def step(self, actions) -> TimeStep:
        return self._cat([e.step(a) for e, a in zip(self.envs, actions.split(GROUP),
                                                    strict=True)])

    def close(self) -> None:
        for e in self.envs:
            e.close()


def _group_envs():
    return [make_env(ENV, GROUP, seed=SEED + k) for k in range(2)]


def _worker_placement(agent: Agent) -> tuple[list[Rollout], list]:
    env = _Side(_group_envs())
    torch.manual_seed(SEED)  # the worker's act samples with torch's global generator
    actor = Actor(env, agent.act, agent.core.initial_state(2 * GROUP), agent.dist.param_size,
                  UNROLL)
    actor.start(SEED)
    rollouts = [actor.collect() for _ in range(ROLLOUTS)]
    return rollouts, actor.drain_episodes()


def _learner_placement(agent: Agent, batched: bool = True) -> tuple[list[Rollout], list]:
    envs = _group_envs()
    spec = envs[0].spec
    slots = [[alloc_slots(spec, GROUP, UNROLL, agent.core.state_size, 2, torch.float32,
                          agent.dist.param_size)
              for _ in range(2)]]
    server = InferenceServer(agent, torch.device("cpu"), slots, GROUP, seed=SEED,
                             board=WeightBoard(agent))
    groups = [EnvGroup(e, k * GROUP, UNROLL) for k, e in enumerate(envs)]
    requests = [(0, k, *g.start(SEED + k, slots[0][k][0], 0)) for k, g in enumerate(groups)]
    out: list[Rollout] = []
    while len(out) < ROLLOUTS:
        if batched:  # both groups in one batch, as a busy server takes them
            server.serve(requests)
        else:  # one group per policy step, as an idle server takes them
            for request in requests:
                server.serve([request])
        if groups[0].complete:
            out.append(Rollout.cat([g.slot for g in groups]))  # copies
            for g in groups:
                nxt = 1 - g.slot_index
                g.rotate(slots[0][groups.index(g)][nxt], nxt)
        requests = [(0, k, *g.step()) for k, g in enumerate(groups)]
    episodes = [e for g in groups for e in g.drain_episodes()]
    return out, episodes


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "one_group_per_step"])
def test_both_placements_cut_the_same_rollouts(batched):
    """Same weights, observations and RNG state: the same actions, logits, core states
    and episodes, entry for entry, whether the server takes both groups in one policy step
    or one group at a time (the draws come from one generator in the same order)."""
    agent = _agent()
    want, want_eps = _worker_placement(agent)
    got, got_eps = _learner_placement(agent, batched)
    assert any(r.first[1:-1].any() for r in want)  # episodes end inside rollouts
    for k, (a, b) in enumerate(zip(want, got, strict=True)):
        for f in FIELDS:
            torch.testing.assert_close(getattr(b, f), getattr(a, f), rtol=0, atol=1e-6,
                                       msg=f"rollout {k}, {f}")
    assert sorted(got_eps) == sorted(want_eps) and want_eps


@pytest.mark.parametrize("device,groups", [("cpu", 1), ("cuda", 2)])
def test_env_groups_default_double_buffers_only_a_cuda_learner(tmp_path, device, groups):
    """``runner.env_groups=0`` resolves to two groups (double buffering) with the learner
    on CUDA and one on the CPU; an explicit value is kept, and with inference in the
    workers there is one group per worker whatever the setting."""
    cfg = make_cfg(tmp_path, "runner=async", "runner.inference=learner", f"device={device}")
    assert cfg.runner.env_groups == groups and cfg.runner.groups_per_worker == groups
    assert cfg.runner.group_size == cfg.runner.num_envs // cfg.runner.num_workers // groups
    other = 3 - groups
    kept = make_cfg(tmp_path, "runner=async", "runner.inference=learner", f"device={device}",
                    f"runner.env_groups={other}")
    assert kept.runner.groups_per_worker == other
    worker = make_cfg(tmp_path, "runner=async", "runner.inference=worker", f"device={device}")
    assert worker.runner.groups_per_worker == 1


@pytest.mark.timeout(120)
def test_double_buffered_workers_feed_consistent_rollouts(tmp_path, caplog):
    """2 workers x 2 groups, weights never republished: per stream, rollouts tile time,
    ``core_state`` is the state before entry 0, and re-unrolling gives the logits acted
    with; the batching metrics show more than one group per policy step on average."""
    cfg = make_cfg(tmp_path, "runner=async", "runner.inference=learner",
                   "runner.env_groups=2", "runner.num_workers=2", "runner.num_envs=8",
                   "runner.unroll=5", "env.delay=1", "env.delay_max=3", "model.hidden_size=8",
                   "model.prev_action=true")
    env = make_env(cfg.env, cfg.runner.num_envs, cfg.seed)
    torch.manual_seed(0)
    agent = Agent(env.spec, cfg.model, cfg.algo.reward_clip)
    with torch.no_grad():
        agent.head.policy.weight.normal_(0.0, 1.0)
    with caplog.at_level(logging.INFO, logger="rtrl_rl.runners.async_runner"):
        runner = AsyncRunner(cfg, agent, torch.device("cpu"), env.spec, probe_env=env)
    assert "policy inference: on the learner's device (cpu), in one inference process" in (
        caplog.text)
    try:
        batches = [runner.next_rollout(0)[0] for _ in range(5)]
        metrics = runner.metrics()
    finally:
        runner.close()
    assert runner.groups == 2 and runner.group_size == 4 // 2
    for k, r in enumerate(batches):
        assert r.stream_ids.tolist() == list(range(8))
        with torch.no_grad():
            x = agent.core_input(r.obs, r.reward, r.prev_action, r.first)
            h, state = agent.core(x[:-1], r.core_state, r.first[:-1])
            logits, _ = agent.heads(h)
        torch.testing.assert_close(logits, r.dist_params[:-1], rtol=0, atol=1e-5,
                                   msg=f"batch {k}")
        if k + 1 < len(batches):
            nxt = batches[k + 1]
            for f in ENTRY_FIELDS:
                assert torch.equal(getattr(r, f)[-1], getattr(nxt, f)[0]), (k, f)
            torch.testing.assert_close(state, nxt.core_state, rtol=0, atol=1e-5)
    assert torch.equal(batches[1].prev_action[1:], batches[1].action[:-1])
    assert 2 <= metrics["inference_batch_mean"] <= 8 and metrics["policy_steps_per_s"] > 0


def _small_learner_runner(tmp_path) -> AsyncRunner:
    """2 env workers x 2 streams and one inference process, on the CPU."""
    cfg = make_cfg(tmp_path, "runner=async", "runner.inference=learner",
                   "runner.num_workers=2", "runner.num_envs=4", "runner.unroll=5",
                   "env.delay=3", "model.hidden_size=8")
    env = make_env(cfg.env, cfg.runner.num_envs, cfg.seed)
    agent = Agent(env.spec, cfg.model, cfg.algo.reward_clip)
    return AsyncRunner(cfg, agent, torch.device("cpu"), env.spec, probe_env=env)


@pytest.mark.timeout(120)
def test_inference_deaths_do_not_count_as_the_workers_own(tmp_path):
    """Each death of the inference process restarts every worker; those restarts are not
    the workers' failures, so a few inference deaths in a row (and then a worker's own
    deaths) do not add up to the limit that stops the run. The inference process has its
    own count."""
    from tests.runners.test_async import _alive

    runner = _small_learner_runner(tmp_path)
    pids = []
    try:
        for _ in range(3):  # three deaths before any rollout could arrive
            pids += [runner.placement.proc.pid, *(p.pid for p in runner.procs)]
            runner._restart_inference("killed by SIGKILL")
        assert runner.inference_failures == 3 and runner.failed_starts == [0, 0]
        assert runner.restarts == 6
        runner.next_rollout(0)  # and it goes on
        pids += [runner.placement.proc.pid, *(p.pid for p in runner.procs)]
    finally:
        runner.close()
    assert not _alive(pids)


def test_sigkilled_inference_process_restarts_every_stream(tmp_path):
    """SIGKILL the inference process: it is restarted, every worker with it (their streams'
    core states died with it), all streams start new episodes, and nothing is left over."""
    import os
    import signal

    from tests.runners.test_async import _alive

    runner = _small_learner_runner(tmp_path)
    pids = []
    try:
        for _ in range(3):
            runner.next_rollout(0)
        victim = runner.placement.proc
        pids = [victim.pid, *(p.pid for p in runner.procs)]
        os.kill(victim.pid, signal.SIGKILL)
        fresh = None
        for _ in range(12):  # rollouts made before the kill may still come first
            rollout, _ = runner.next_rollout(0)
            if rollout.first[0].all() and runner.restarts >= 2:
                fresh = rollout
                break
        assert fresh is not None, "no batch of restarted streams"
        assert runner.placement.proc.pid != victim.pid and runner.restarts >= 2
        assert torch.equal(fresh.core_state, torch.zeros_like(fresh.core_state))
        assert fresh.stream_ids.tolist() == [0, 1, 2, 3]
        for _ in range(3):  # and it goes on
            runner.next_rollout(0)
        pids += [runner.placement.proc.pid, *(p.pid for p in runner.procs)]
    finally:
        runner.close()
    assert not _alive(pids)
