"""Process deaths in a real async run: a killed learner leaves nothing behind; a soak of
worker SIGKILLs at random moments never hangs the run."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.runners.test_resume import _children, _running

ASYNC = ["logger=none", "runner=async", "runner.num_envs=8", "runner.unroll=5", "env.delay=5",
         "model.hidden_size=16", "checkpoint_interval_s=1000"]


def _launch(run_dir: Path, *overrides: str) -> subprocess.Popen:
    """Start a training run whose output goes to ``run_dir/../out.log`` (never a pipe that
    nobody reads while the run goes on)."""
    cmd = [sys.executable, "-m", "rtrl_rl.train", f"run_dir={run_dir}", *ASYNC, *overrides]
    out = open(run_dir.parent / f"{run_dir.name}.log", "wb")  # noqa: SIM115 (the child's)
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    out.close()
    return proc


def _output(run_dir: Path) -> str:
    return (run_dir.parent / f"{run_dir.name}.log").read_text(errors="replace")


def _rows(run_dir: Path) -> int:
    csv = run_dir / "metrics.csv"
    return len(csv.read_text().splitlines()) - 1 if csv.exists() else 0


def _wait_rows(proc: subprocess.Popen, run_dir: Path, rows: int, timeout: float) -> None:
    deadline = time.time() + timeout
    while _rows(run_dir) < rows:
        assert proc.poll() is None, _output(run_dir)[-3000:]
        assert time.time() < deadline, f"no progress: {_rows(run_dir)} rows of {rows}"
        time.sleep(0.2)


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        kids = _children(todo.pop())
        out.extend(kids)
        todo.extend(kids)
    return out


@pytest.mark.timeout(180)
@pytest.mark.parametrize("inference", ["learner", "worker"])
def test_sigkilled_learner_leaves_no_processes_or_shm(tmp_path, inference):
    shm_before = set(os.listdir("/dev/shm"))
    proc = _launch(tmp_path / "run", "runner.num_workers=2", "runner.total_frames=400000",
                   f"runner.inference={inference}")
    try:
        _wait_rows(proc, tmp_path / "run", 3, timeout=120)
        kids = _descendants(proc.pid)
        # the env workers, the inference process (inference=learner), the resource tracker
        assert len(kids) >= (4 if inference == "learner" else 3), kids
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.time() + 10
        while time.time() < deadline and any(_running(p) for p in kids):
            time.sleep(0.1)
        assert not [p for p in kids if _running(p)], "processes outlived the learner"
        leaked = sorted(set(os.listdir("/dev/shm")) - shm_before)
        assert not leaked, leaked
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("repeat", range(2))
@pytest.mark.parametrize("inference", ["learner", "worker"])
def test_soak_twenty_worker_sigkills(tmp_path, inference, repeat):
    """20 SIGKILLs of random children (env workers and, with inference=learner, the
    inference process) at random moments; the run must go on, count its frames exactly
    (every learner batch, none of the lost ones), and leave no process and no
    shared-memory segment behind."""
    from rtrl_rl.checkpoint import list_checkpoints, load_checkpoint

    rng = random.Random(repeat)
    run_dir = tmp_path / "run"
    shm_before = set(os.listdir("/dev/shm"))
    proc = _launch(run_dir, "runner.num_workers=4", "runner.total_frames=2000000",
                   f"runner.inference={inference}", f"seed={repeat}")
    seen: set[int] = set()
    try:
        _wait_rows(proc, run_dir, 2, timeout=120)
        for _ in range(20):
            workers = [p for p in _children(proc.pid) if _is_worker(p)]
            assert proc.poll() is None and workers, _output(run_dir)[-3000:]
            seen.update(_descendants(proc.pid))
            try:
                os.kill(rng.choice(workers), signal.SIGKILL)
            except ProcessLookupError:  # it exited since it was listed (a restart)
                pass
            time.sleep(rng.uniform(0.0, 2.0))
        rows = _rows(run_dir)
        _wait_rows(proc, run_dir, rows + 3, timeout=120)  # still learning after the last kill
        seen.update(_descendants(proc.pid))
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        out = _output(run_dir)
        assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    died = out.count("died (killed by SIGKILL)")  # env workers and the inference process
    back = [float(s) for s in re.findall(r"is back after ([\d.]+) s", out)]
    print(f"{inference} repeat {repeat}: {died} deaths seen, restart seconds: {back}")
    assert died >= 15  # a kill can land on a worker that was already dying
    assert back and max(back) < 30
    state = load_checkpoint(list_checkpoints(run_dir / "checkpoints")[-1])
    updates = state["learner"]["updates"]
    assert state["counters"]["frames"] == updates * 5 * 8  # unroll x streams per batch
    last = (run_dir / "metrics.csv").read_text().splitlines()
    header, row = last[0].split(","), last[-1].split(",")
    assert float(row[header.index("lost_frames")]) > 0
    assert float(row[header.index("worker_restarts")]) >= died - 1
    deadline = time.time() + 10
    while time.time() < deadline and any(_running(p) for p in seen):
        time.sleep(0.1)
    assert not [p for p in seen if _running(p)], "processes outlived the run"
    assert not sorted(set(os.listdir("/dev/shm")) - shm_before)


def _is_worker(pid: int) -> bool:
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes() and (
            b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes())
    except OSError:
        return False
