"""The async runner: batches in stream order, survives a worker crash or SIGKILL, leaves no
orphans."""

from __future__ import annotations

import copy
import os
import signal
import time

import pytest
import torch

from rtrl_rl.algos.impala import ImpalaLearner
from rtrl_rl.envs import make_env
from rtrl_rl.grad import make_grad
from rtrl_rl.models.agent import Agent
from rtrl_rl.runners.async_runner import STARTUP_S, AsyncRunner
from rtrl_rl.runners.procs import Waiter
from tests.runners.helpers import make_cfg

ASYNC = ["runner=async", "runner.num_workers=2", "runner.num_envs=4", "runner.unroll=5",
         "env.delay=3", "model.hidden_size=16"]


PLACEMENTS = pytest.mark.parametrize("inference", ["learner", "worker"])


def _build(tmp_path, crash_after=None, inference="learner", *extra):
    cfg = make_cfg(tmp_path, *ASYNC, f"runner.inference={inference}", *extra)
    env = make_env(cfg.env, cfg.runner.num_envs, cfg.seed)
    agent = Agent(env.spec, cfg.model, cfg.algo.reward_clip)
    runner = AsyncRunner(cfg, agent, torch.device("cpu"), env.spec, probe_env=env,
                         crash_after=crash_after)
    return cfg, agent, runner


def _alive(pids):
    out = []
    for pid in pids:
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split()[2] != "Z":
                    out.append(pid)
        except (ProcessLookupError, FileNotFoundError):
            pass
    return out


@PLACEMENTS
def test_batches_tile_time_per_stream(tmp_path, inference):
    cfg, agent, runner = _build(tmp_path, None, inference)
    grad = make_grad("rtrl", agent.core, cfg.runner.num_envs)
    learner = ImpalaLearner(agent, grad, cfg.algo, 100)
    try:
        prev = None
        for _ in range(4):
            rollout, _ = runner.next_rollout(learner.updates)
            assert rollout.stream_ids.tolist() == [0, 1, 2, 3]
            if prev is not None:  # entry T of one rollout is entry 0 of the next
                assert torch.equal(prev.obs[-1], rollout.obs[0])
                assert torch.equal(prev.action[-1], rollout.action[0])
            learner.update(rollout)
            runner.after_update()
            prev = rollout
        assert runner.version == 4
    finally:
        runner.close()
    assert not _alive([p.pid for p in runner.procs])


@pytest.mark.timeout(120)
@PLACEMENTS
def test_worker_crash_is_restarted_and_counted(tmp_path, inference):
    cfg, agent, runner = _build(tmp_path, {1: 2}, inference)
    try:
        for _ in range(6):
            rollout, _ = runner.next_rollout(0)
            assert rollout.batch == 4
        assert runner.restarts == 1 and runner.lost_frames > 0
        assert runner.metrics()["worker_restarts"] == 1
    finally:
        runner.close()
    assert not _alive([p.pid for p in runner.procs])


@PLACEMENTS
def test_learner_error_stops_all_workers(tmp_path, inference):
    """... and the inference process, with inference=learner."""
    from rtrl_rl.runners.loop import train

    cfg = make_cfg(tmp_path, *ASYNC, "max_updates=50", "runner.total_frames=100000",
                   f"runner.inference={inference}")
    pids = []
    original = AsyncRunner.after_update

    def boom(self):
        pids.extend(p.pid for p in self.procs)
        if getattr(self.placement, "proc", None) is not None:
            pids.append(self.placement.proc.pid)
        original(self)
        if self.version == 2:
            raise RuntimeError("learner exploded")

    AsyncRunner.after_update = boom
    try:
        with pytest.raises(RuntimeError, match="learner exploded"):
            train(cfg)
    finally:
        AsyncRunner.after_update = original
    assert pids and not _alive(pids)


@pytest.mark.timeout(60)
@PLACEMENTS
def test_sigkilled_worker_is_restarted_with_fresh_streams(tmp_path, inference):
    """SIGKILL worker 1: the run goes on; its streams keep their ids, start new episodes
    (first = 1 at entry 0), act with current weights, and RTRL forgets their sensitivities."""
    cfg, agent, runner = _build(tmp_path, None, inference)
    grad = make_grad("rtrl", agent.core, cfg.runner.num_envs)
    learner = ImpalaLearner(agent, grad, cfg.algo, 100)
    try:
        for _ in range(3):
            learner.update(runner.next_rollout(learner.updates)[0])
            runner.after_update()
        victim = runner.procs[1]
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(10)
        killed_at = runner.version
        for _ in range(10):  # rollouts that were ready before the kill come first
            rollout, _ = runner.next_rollout(learner.updates)
            if runner.restarts and rollout.first[0, 2:].all():
                break
            learner.update(rollout)
            runner.after_update()
        assert runner.restarts == 1 and runner.procs[1].pid != victim.pid
        assert rollout.stream_ids.tolist() == [0, 1, 2, 3]
        assert rollout.first[0, 2:].all()
        assert (rollout.policy_version[2:] >= killed_at).all()
        assert torch.equal(rollout.core_state[2:], torch.zeros_like(rollout.core_state[2:]))
        # What the restarted streams carry after this chunk: exactly a fresh module's.
        before = copy.deepcopy(agent)
        fresh = make_grad("rtrl", before.core, 2)
        sub = rollout.cat([rollout])  # a copy to slice
        x = before.core_input(sub.obs[:-1, 2:], sub.reward[:-1, 2:], sub.prev_action[:-1, 2:],
                              sub.first[:-1, 2:])
        fresh.unroll(x, sub.core_state[2:], sub.first[:-1, 2:])
        learner.update(rollout)
        runner.after_update()
        carried, expected = grad.sensitivities()[0], fresh.sensitivities()[0]
        for name, value in expected.items():
            torch.testing.assert_close(carried[name][2:], value, rtol=1e-5, atol=1e-6)
        versions = []
        for _ in range(6):  # versions keep advancing (up to queue_size + 1 rollouts lag)
            rollout, _ = runner.next_rollout(learner.updates)
            versions.append(int(rollout.policy_version[2]))
            learner.update(rollout)
            runner.after_update()
        assert versions == sorted(versions) and versions[-1] > killed_at
        assert runner.restart_seconds and max(runner.restart_seconds) < 30
    finally:
        runner.close()
    assert not _alive([p.pid for p in runner.procs])


@PLACEMENTS
def test_partial_batches_take_the_oldest_ready_rollouts(tmp_path, inference):
    """batch_size=4 of 8 streams (4 workers of 2; with inference in the learner, env groups
    of 1): every batch holds whole distinct groups, no stream twice, each stream's chunks in
    order (they tile time), and no worker starves (workers that start late join in;
    learning does not wait for them)."""
    unit = 2 if inference == "worker" else 1
    cfg = make_cfg(tmp_path, *ASYNC, "runner.num_workers=4", "runner.num_envs=8",
                   "runner.batch_size=4", f"runner.inference={inference}")
    env = make_env(cfg.env, cfg.runner.num_envs, cfg.seed)
    agent = Agent(env.spec, cfg.model, cfg.algo.reward_clip)
    runner = AsyncRunner(cfg, agent, torch.device("cpu"), env.spec, probe_env=env)
    grad = make_grad("rtrl", agent.core, cfg.runner.num_envs)
    learner = ImpalaLearner(agent, grad, cfg.algo, 100)
    last: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    seen: dict[int, int] = {}
    try:
        deadline = time.time() + 60  # spawned workers may start seconds apart under load
        while not (len(seen) == 8 and min(seen.values()) >= 3) and time.time() < deadline:
            rollout, _ = runner.next_rollout(learner.updates)
            ids = rollout.stream_ids.tolist()
            assert len(ids) == 4 == len(set(ids)) and ids == sorted(ids)
            for j in range(0, 4, unit):  # whole groups
                assert ids[j] % unit == 0 and ids[j:j + unit] == list(range(ids[j],
                                                                            ids[j] + unit))
            for col, sid in enumerate(ids):
                if sid in last:
                    obs, action = last[sid]
                    assert torch.equal(obs, rollout.obs[0, col]), sid
                    assert torch.equal(action, rollout.action[0, col]), sid
                last[sid] = (rollout.obs[-1, col].clone(), rollout.action[-1, col].clone())
                seen[sid] = seen.get(sid, 0) + 1
            learner.update(rollout)
            runner.after_update()
    finally:
        runner.close()
    assert sorted(seen) == list(range(8)) and min(seen.values()) >= 3, seen


@pytest.mark.timeout(60)
@PLACEMENTS
def test_a_stuck_worker_is_killed_and_restarted(tmp_path, inference):
    """SIGSTOP (alive, silent): after runner.worker_timeout_s the learner restarts it."""
    cfg = make_cfg(tmp_path, *ASYNC, "runner.worker_timeout_s=3",
                   f"runner.inference={inference}")
    env = make_env(cfg.env, cfg.runner.num_envs, cfg.seed)
    agent = Agent(env.spec, cfg.model, cfg.algo.reward_clip)
    runner = AsyncRunner(cfg, agent, torch.device("cpu"), env.spec, probe_env=env)
    try:
        for _ in range(2):
            runner.next_rollout(0)
        stuck = runner.procs[0]
        os.kill(stuck.pid, signal.SIGSTOP)
        heard, t0 = runner._heard[0], time.monotonic()
        restarts, restart = [], runner._restart
        runner._restart = lambda w, why: (restarts.append((w, time.monotonic(), why)),
                                          restart(w, why))
        while runner.procs[0] is stuck:
            rollout, _ = runner.next_rollout(0)
        w, when, why = restarts[0]
        assert w == 0 and "silent" in why and 3 <= when - heard and when - t0 < 30
        assert not stuck.is_alive()
        for _ in range(3):
            rollout, _ = runner.next_rollout(0)
            assert rollout.stream_ids.tolist() == [0, 1, 2, 3]
    finally:
        runner.close()
    assert not _alive([p.pid for p in runner.procs] + [stuck.pid])


@pytest.mark.timeout(60)
def test_a_silent_worker_with_one_group_delivered_is_still_restarted(tmp_path):
    """Two env groups per worker: a worker whose one group has a rollout waiting but whose
    other group has none, and that is silent, is still one the learner waits for."""
    cfg = make_cfg(tmp_path, *ASYNC, "runner.worker_timeout_s=3", "runner.inference=learner",
                   "runner.env_groups=2")
    env = make_env(cfg.env, cfg.runner.num_envs, cfg.seed)
    agent = Agent(env.spec, cfg.model, cfg.algo.reward_clip)
    runner = AsyncRunner(cfg, agent, torch.device("cpu"), env.spec, probe_env=env)
    try:
        assert runner.groups == 2
        runner.next_rollout(0)
        os.kill(runner.procs[0].pid, signal.SIGSTOP)
        time.sleep(0.5)
        runner._poll(0.0)
        runner.pending[0].append((0, 0, []))  # group 0 of worker 0: delivered
        runner.pending[1].clear()  # group 1: nothing
        before = runner.restarts
        runner._heard[0] = time.monotonic() - 10
        runner._restart_silent()
        assert runner.restarts == before + 1
    finally:
        runner.close()


@pytest.mark.timeout(60)
def test_a_worker_still_starting_gets_the_startup_allowance(tmp_path):
    """Silent since its start (spawning, importing torch on a loaded machine) is not a hang
    until STARTUP_S; once it has spoken, worker_timeout_s applies."""
    cfg = make_cfg(tmp_path, *ASYNC, "runner.worker_timeout_s=3", "runner.inference=worker")
    env = make_env(cfg.env, cfg.runner.num_envs, cfg.seed)
    agent = Agent(env.spec, cfg.model, cfg.algo.reward_clip)
    runner = AsyncRunner(cfg, agent, torch.device("cpu"), env.spec, probe_env=env)
    try:
        for u in range(len(runner.pending)):
            runner.pending[u].clear()
        runner._spoke[0] = False
        runner._heard[0] = time.monotonic() - 10  # silent 10 s since its start
        runner._restart_silent()
        assert runner.restarts == 0
        runner._heard[0] = time.monotonic() - STARTUP_S - 1
        runner._restart_silent()
        assert runner.restarts == 1
        runner._spoke[0] = True  # the new one has spoken, then fell silent
        runner._heard[0] = time.monotonic() - 10
        runner._restart_silent()
        assert runner.restarts == 2
    finally:
        runner.close()


@pytest.mark.parametrize("spin_s", [0.0, 0.001])
def test_waiter_returns_ready_and_closed_connections_and_times_out(spin_s):
    """The waiter names exactly the connections with data or a closed far end, and returns
    none once the timeout has passed with nothing to read."""
    import multiprocessing as mp

    (a, a_far), (b, b_far) = mp.Pipe(), mp.Pipe()
    waiter = Waiter([a, b], spin_s)
    t0 = time.perf_counter()
    assert waiter.wait(0.05) == []
    assert time.perf_counter() - t0 >= 0.04
    b_far.send_bytes(b"x")
    assert waiter.wait(0.5) == [b]
    b.recv_bytes()
    a_far.close()
    assert waiter.wait(0.5) == [a]
    with pytest.raises(EOFError):
        a.recv_bytes()


def _read_one_frame_then_hang(conn, size, done):
    from rtrl_rl.runners.procs import recv_frame

    recv_frame(conn, size)
    done.set()
    time.sleep(60)  # killed here, like an inference process SIGKILLed between two frames


def test_a_reader_killed_between_frames_leaves_the_pipe_in_step():
    """Step pipes carry fixed-size frames, each read in one call: after a reader is
    SIGKILLed (the inference process), the next reader of the same pipe gets whole frames.
    (``Connection.recv_bytes`` reads a header and a payload in two calls; a reader killed
    between them left the payload to be read as the next header, and the next reader
    blocked for ever.)"""
    import multiprocessing as mp
    import os
    import signal

    from rtrl_rl.runners.inference_server import REQUEST
    from rtrl_rl.runners.procs import recv_frame, send_frame

    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe(duplex=True)
    for k in range(3):
        send_frame(ours, REQUEST.pack(k, k + 1, k + 2, 7))
    done = ctx.Event()
    reader = ctx.Process(target=_read_one_frame_then_hang, args=(theirs, REQUEST.size, done))
    reader.start()
    assert done.wait(60)
    os.kill(reader.pid, signal.SIGKILL)
    reader.join(10)
    assert REQUEST.unpack(recv_frame(theirs, REQUEST.size)) == (1, 2, 3, 7)
    assert REQUEST.unpack(recv_frame(theirs, REQUEST.size)) == (2, 3, 4, 7)
    assert not theirs.poll(0)
    ours.close()
    with pytest.raises(EOFError):
        recv_frame(theirs, REQUEST.size)
