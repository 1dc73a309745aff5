"""The grid, for real: a tiny suite killed with SIGKILL mid-grid finishes on a re-run, and
its report equals an uninterrupted suite's in every row that does not depend on timing."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rtrl_rl.bench.launcher import STATE, logged_frames, read_state

TRAIN = ('train=["experiment=delayed_recall","env.delay=3","runner.num_envs=8",'
         '"model.hidden_size=8","logger.tensorboard=false","logger.plot=false",'
         '"logger.progress=none"]')
TINY = ["suite=memory", "tasks=[Recall10,Recall30]", "methods=[elstm_rtrl_t10,ff]",
        "seeds=1", "jobs=1", "threads_per_job=1", "random_episodes=50",
        "reps=200", "checkpoint_interval_s=0.3", TRAIN]
TIMING = ("wall_s",)


FRAMES = 8000


def bench(out: Path, *extra: str, frames: int = FRAMES) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rtrl_rl.bench.app", f"out={out}", *TINY,
                             f"frames={frames}", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def rows(out: Path) -> list[dict]:
    summary = json.loads((out / "report" / "summary.json").read_text())
    return [{k: v for k, v in r.items() if k not in TIMING} for r in summary["rows"]]


def runs_of(out: Path) -> dict[str, dict]:
    return {str(p.parent.relative_to(out / "runs")): read_state(p.parent)
            for p in sorted((out / "runs").glob(f"*/*/*/{STATE}"))}


def lock_free(run_dir: Path) -> bool:
    """No process holds the run dir's lock (a training process holds it for its life)."""
    fd = os.open(run_dir / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_sigkilled_suite_resumes_only_the_missing_runs(tmp_path):
    full = tmp_path / "full"
    proc = bench(full)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "4 runs, 0 already done, 4 to run" in err and "4/4 runs done" in err
    assert all(s["status"] == "done" and s["attempts"] == 1 for s in runs_of(full).values())

    split = tmp_path / "split"
    proc = bench(split)
    deadline = time.time() + 300
    victim = None
    while time.time() < deadline:  # kill once a run is done and the next has a checkpoint
        states = runs_of(split)
        done = [k for k, s in states.items() if s["status"] == "done"]
        running = [k for k, s in states.items() if s["status"] == "running"
                   and list((split / "runs" / k / "checkpoints").glob("*.pt"))]
        if done and running:
            victim = running[0]
            break
        time.sleep(0.05)
    assert victim is not None, proc.communicate()[1]
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    victim_dir = split / "runs" / victim
    deadline = time.time() + 10
    while not lock_free(victim_dir) and time.time() < deadline:  # its training died too
        time.sleep(0.1)
    assert lock_free(victim_dir)
    assert read_state(victim_dir)["status"] == "running"
    assert logged_frames(victim_dir) < FRAMES  # it died with the suite, unfinished

    proc = bench(split)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    before = len(done)
    assert f"4 runs, {before} already done, {4 - before} to run" in err
    states = runs_of(split)
    assert all(s["status"] == "done" for s in states.values())
    assert all(states[k]["attempts"] == 1 for k in done)  # finished runs were not re-run
    assert states[victim]["attempts"] == 2
    assert "resumed from" in (victim_dir / "train.log").read_text()  # not from scratch
    assert rows(split) == rows(full)


def test_rerun_of_a_finished_suite_runs_nothing(tmp_path):
    out = tmp_path / "s"
    one = ["tasks=[Recall10]", "methods=[ff]"]
    proc = bench(out, *one)
    assert proc.communicate(timeout=600) and proc.returncode == 0
    mtime = (out / "runs" / "Recall10" / "ff" / "seed0" / "metrics.csv").stat().st_mtime
    proc = bench(out, *one)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0 and "1 runs, 1 already done, 0 to run" in err
    assert (out / "runs" / "Recall10" / "ff" / "seed0" / "metrics.csv").stat().st_mtime == mtime


def test_a_larger_budget_resumes_finished_runs(tmp_path):
    out = tmp_path / "s"
    one = ["tasks=[Recall10]", "methods=[ff]"]
    proc = bench(out, *one, frames=2000)
    assert proc.communicate(timeout=600) and proc.returncode == 0
    run_dir = out / "runs" / "Recall10" / "ff" / "seed0"
    assert logged_frames(run_dir) == 2000
    proc = bench(out, *one, frames=4000)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0 and "1 runs, 0 already done, 1 to run" in err, err
    assert logged_frames(run_dir) == 4000 and read_state(run_dir)["attempts"] == 2
    assert "resumed from" in (run_dir / "train.log").read_text()


def test_one_grid_per_suite_dir(tmp_path):
    from rtrl_rl.run_dir import RunDirLock

    out = tmp_path / "s"
    out.mkdir()
    (out / "suite.json").write_text('{"suite": "memory"}\n')
    with RunDirLock(out):  # as a running rtrl-bench holds it
        proc = bench(out, "tasks=[Recall10]", "methods=[ff]")
        _, err = proc.communicate(timeout=600)
    assert proc.returncode == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("rtrl-bench: error: run_dir ") and "is in use by another run" in line
    assert not (out / "runs").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_runs_with_a_checkpoint(tmp_path, signum):
    """SIGTERM (a scheduler) or SIGINT (Ctrl-C): the runs are stopped, not failed, and
    resume where they were."""
    out = tmp_path / "s"
    one = ["tasks=[Recall30]", "methods=[elstm_rtrl_t10]"]
    proc = bench(out, *one)
    run_dir = out / "runs" / "Recall30" / "elstm_rtrl_t10" / "seed0"
    deadline = time.time() + 300
    while time.time() < deadline and not list((run_dir / "checkpoints").glob("*.pt")):
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    state = read_state(run_dir)
    assert state["status"] == "stopped" and state["returncode"] == 128 + signal.SIGTERM
    assert "failed" not in err, err
    assert 0 < logged_frames(run_dir) < FRAMES and lock_free(run_dir)
    assert (out / "report" / "report.md").is_file()  # the report of what is done (nothing)
    if signum == signal.SIGINT:
        return  # resuming is the same after either signal
    proc = bench(out, *one)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert read_state(run_dir)["status"] == "done" and logged_frames(run_dir) == FRAMES
    assert "resumed from" in (run_dir / "train.log").read_text()
