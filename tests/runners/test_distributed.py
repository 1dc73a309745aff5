"""One run on several ranks: the combined update equals one process over the union of the
ranks' streams; torchrun jobs learn, resume bit for bit, and stop whole when a rank dies."""

from __future__ import annotations

import copy
import importlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rtrl_rl.algos.impala import ImpalaLearner
from rtrl_rl.checkpoint import latest_checkpoint, load_checkpoint
from rtrl_rl.envs import make_env
from rtrl_rl.grad import make_grad
from rtrl_rl.models.agent import Agent
from rtrl_rl.rollout import Rollout
from rtrl_rl.runners.distributed import Collective, Ranks
from rtrl_rl.runners.sync import SyncRunner
from tests.runners.helpers import make_cfg

STREAMS, RANKS = 8, 2
SMALL = ["runner.num_envs=8", "runner.unroll=6", "model.hidden_size=16", "env.delay=5",
         "seed=5"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _streams(r: Rollout, lo: int, hi: int) -> Rollout:
    """Streams ``lo..hi-1`` of ``r``, numbered from 0 as on their own rank."""
    part = r.select(torch.arange(lo, hi))
    part.stream_ids = torch.arange(hi - lo)
    return part


def _setup(cfg, num_streams: int, combine=None):
    torch.manual_seed(0)
    env = make_env(cfg.env, STREAMS, cfg.seed)
    agent = Agent(env.spec, cfg.model, cfg.algo.reward_clip)
    grad = make_grad(cfg.grad.name, agent.core, num_streams)
    return env, agent, ImpalaLearner(agent, grad, cfg.algo, 100, combine_grads=combine)


def _rollouts(cfg, n: int) -> list[Rollout]:
    env, agent, _ = _setup(cfg, STREAMS)
    runner = SyncRunner(cfg.env, cfg.runner, agent, torch.device("cpu"), cfg.seed, env=env)
    out = [runner.next_rollout(0)[0] for _ in range(n)]
    runner.close()
    return out


def _rank_learner(rank: int, port: int, cfg):
    """This rank's collective, agent and learner (gradients combined over the ranks)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(RANKS), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    coll = Collective(Ranks.from_env(), torch.device("cpu"))
    _, agent, learner = _setup(
        cfg, STREAMS // RANKS, lambda p: coll.combine_grads(p, cfg.algo.loss_reduction))
    return coll, agent, learner


def _rank_main(rank: int, port: int, cfg, rollouts: list[Rollout], out: str) -> None:
    coll, agent, learner = _rank_learner(rank, port, cfg)
    per = STREAMS // RANKS
    if rank == 1:  # a different start on one rank: the broadcast must even it out
        with torch.no_grad():
            next(agent.parameters()).add_(1.0)
    coll.broadcast_module(agent)
    for r in rollouts:
        learner.update(_streams(r, rank * per, (rank + 1) * per))
    torch.save(agent.state_dict(), f"{out}.{rank}")
    coll.close()


def _rank_threads(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(RANKS), LOCAL_RANK=str(rank))
    coll = Collective(Ranks.from_env(), torch.device("cpu"))
    importlib.import_module("torch.distributed.nn")  # as torch._dynamo does on first use

    assert coll.max_values(float(rank)) == [1.0]
    coll.close()
    task = Path("/proc/self/task")
    Path(f"{out}.{rank}").write_text(" ".join((t / "comm").read_text().strip()
                                              for t in task.iterdir()))


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="thread names from /proc")
def test_closing_the_collective_stops_gloos_threads(tmp_path):
    """A process group that outlives ``close`` is torn down with the interpreter, where a
    rank sometimes aborted (SIGABRT) on its still-running threads."""
    mp.spawn(_rank_threads, args=(_free_port(), str(tmp_path / "t")), nprocs=RANKS, join=True)
    for rank in range(RANKS):
        names = (tmp_path / f"t.{rank}").read_text().split()
        assert not [n for n in names if "gloo" in n], names


@pytest.mark.parametrize("grad,reduction", [("rtrl", "sum"), ("bptt", "mean")])
def test_two_ranks_step_like_one_process_over_the_union_of_their_streams(
        tmp_path, grad, reduction):
    cfg = make_cfg(tmp_path, *SMALL, f"grad={grad}", f"algo.loss_reduction={reduction}")
    rollouts = _rollouts(cfg, 3)
    _, agent, learner = _setup(cfg, STREAMS)
    before = copy.deepcopy(agent.state_dict())
    for r in rollouts:
        learner.update(r)
    mp.spawn(_rank_main, args=(_free_port(), cfg, rollouts, str(tmp_path / "p")),
             nprocs=RANKS, join=True)
    for rank in range(RANKS):
        got = torch.load(tmp_path / f"p.{rank}")
        moved = 0.0
        for k, v in agent.state_dict().items():
            torch.testing.assert_close(got[k], v, rtol=0, atol=1e-6, msg=f"rank {rank}: {k}")
            moved = max(moved, float((v - before[k]).abs().max()))
        assert moved > 1e-4  # the updates did move the parameters


def test_one_rank_collectives_are_no_ops():
    coll = Collective(Ranks(), torch.device("cpu"))
    assert not coll.active and not dist.is_initialized()
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    coll.combine_grads([p], "mean")
    assert torch.equal(p.grad, torch.full((3,), 2.0))
    assert coll.gather({"a": 1}) == [{"a": 1}] and coll.broadcast(7) == 7
    assert coll.max_values(3, 0) == [3.0, 0.0]
    assert coll.mean_metrics({"x": 1.5}) == {"x": 1.5}


def test_rank_seeds_differ_and_rank_zero_keeps_the_run_seed():
    seeds = [Ranks(rank=r, world_size=4).seed(11) for r in range(4)]
    assert seeds[0] == 11 and len(set(seeds)) == 4
    assert Ranks(rank=1, world_size=2).seed(11) != Ranks(rank=1, world_size=2).seed(12)


def _rank_skip(rank: int, port: int, cfg, rollouts: list[Rollout], out: str) -> None:
    """Like ``_rank_main``, with a NaN reward in rank 1's second rollout only."""
    coll, agent, learner = _rank_learner(rank, port, cfg)
    per = STREAMS // RANKS
    coll.broadcast_module(agent)
    for i, r in enumerate(rollouts):
        part = _streams(r, rank * per, (rank + 1) * per)
        if rank == 1 and i == 1:
            part.reward[2, 0] = float("nan")
        learner.update(part)
    torch.save({"updates": learner.updates, "skipped": learner.skips.total,
                "agent": agent.state_dict()}, f"{out}.{rank}")
    coll.close()


def test_a_rank_with_a_nonfinite_loss_makes_every_rank_skip(tmp_path):
    cfg = make_cfg(tmp_path, *SMALL)
    rollouts = _rollouts(cfg, 3)
    mp.spawn(_rank_skip, args=(_free_port(), cfg, rollouts, str(tmp_path / "p")),
             nprocs=RANKS, join=True)
    got = [torch.load(tmp_path / f"p.{rank}") for rank in range(RANKS)]
    assert [g["updates"] for g in got] == [2, 2] and [g["skipped"] for g in got] == [1, 1]
    for k, v in got[0]["agent"].items():
        torch.testing.assert_close(got[1]["agent"][k], v, rtol=0, atol=0, msg=k)


# --------------------------------------------------------------------------- torchrun jobs

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={RANKS}", "-m", "rtrl_rl.train"]
JOB = ["logger.tensorboard=false", "env.delay=7", "model.hidden_size=16", "runner.num_envs=8",
       "runner.unroll=5", "runner.total_frames=4000", "seed=3"]


def _torchrun(run_dir: Path, *overrides: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*TORCHRUN, f"run_dir={run_dir}", *JOB, *overrides],
                          capture_output=True, text=True, timeout=180, **kw)


def _why(proc: subprocess.CompletedProcess) -> str:
    """A failed job's story: the ranks' own error lines (torchrun prints its summary last,
    after them) and the end of its output."""
    marks = ("terminate", "abort", "Error", "error", "Exception", "Signal", "signal")
    lines = [ln for ln in proc.stderr.splitlines() if any(m in ln for m in marks)]
    return "\n".join([*lines[:40], "...", proc.stderr[-3000:]])


def test_two_rank_resume_is_bit_for_bit_and_needs_the_same_world_size(tmp_path):
    full, split = tmp_path / "full", tmp_path / "split"
    for run_dir, updates in ((full, 10), (split, 5)):
        job = _torchrun(run_dir, f"max_updates={updates}")
        assert job.returncode == 0, _why(job)
    done = _torchrun(split, "max_updates=10", "resume=true")
    assert done.returncode == 0, _why(done)
    a = load_checkpoint(latest_checkpoint(full / "checkpoints"))
    b = load_checkpoint(latest_checkpoint(split / "checkpoints"))
    assert a["world_size"] == b["world_size"] == RANKS
    assert a["learner"]["updates"] == b["learner"]["updates"] == 10
    assert a["counters"]["frames"] == b["counters"]["frames"] == 10 * 5 * 8
    for k, v in a["agent"].items():
        assert torch.equal(v, b["agent"][k]), k
    for part_a, part_b in zip([a, *a["ranks"]], [b, *b["ranks"]], strict=True):
        for k, v in part_a["grad"].items():  # each rank's carried sensitivities
            assert torch.equal(v, part_b["grad"][k]), k
    ranks_differ = [not torch.equal(v, a["ranks"][0]["grad"][k]) for k, v in a["grad"].items()]
    assert any(ranks_differ)  # the ranks saw different streams
    header = (split / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "world_size" in header
    one = subprocess.run([sys.executable, "-m", "rtrl_rl.train", f"run_dir={split}", *JOB,
                          "max_updates=12", "resume=true"], capture_output=True, text=True,
                         timeout=120)
    assert one.returncode == 2
    err = [ln for ln in one.stderr.splitlines() if "error" in ln]
    assert len(err) == 1 and "2 rank(s)" in err[0] and "this run has 1" in err[0]


def _descendants(pid: int) -> set[int]:
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        out.update(int(k) for k in kids)
        todo.extend(int(k) for k in kids)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


@pytest.mark.parametrize("runner", ["sync", "async"])
def test_a_sigkilled_rank_stops_the_whole_job(tmp_path, runner):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [*TORCHRUN, f"run_dir={run_dir}", *JOB, f"runner={runner}",
         *(["runner.num_workers=2"] if runner == "async" else []),
         "runner.total_frames=100000000", "checkpoint_interval_s=0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and latest_checkpoint(run_dir / "checkpoints") is None:
            time.sleep(0.2)
        assert latest_checkpoint(run_dir / "checkpoints") is not None, "no checkpoint"
        time.sleep(1.0)
        family = _descendants(proc.pid)
        ranks = [int(p) for p in
                 Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        assert len(ranks) == RANKS, ranks
        os.kill(max(ranks), signal.SIGKILL)
        t0 = time.time()
        out, _ = proc.communicate(timeout=60)
        stopped = time.time() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    assert stopped < 30, f"the job took {stopped:.0f} s to stop"
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(p) for p in family):
        time.sleep(0.2)
    assert not [p for p in family if _alive(p)], "orphaned processes"
    ckpt = load_checkpoint(latest_checkpoint(run_dir / "checkpoints"))
    assert ckpt["world_size"] == RANKS and len(ckpt["ranks"]) == RANKS - 1


def test_sigterm_to_torchrun_saves_every_rank_at_the_same_update(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [*TORCHRUN, f"run_dir={run_dir}", *JOB, "runner.total_frames=400000",
         "checkpoint_interval_s=1000"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not (run_dir / "metrics.csv").exists():
            time.sleep(0.2)
        time.sleep(2.0)
        proc.send_signal(signal.SIGTERM)  # what Slurm sends before it preempts a job
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    assert "SIGTERM: stopped at" in out
    ckpt = load_checkpoint(latest_checkpoint(run_dir / "checkpoints"))
    assert ckpt["world_size"] == RANKS and ckpt["counters"]["frames"] > 0
    assert ckpt["learner"]["updates"] * 5 * 8 == ckpt["counters"]["frames"]
