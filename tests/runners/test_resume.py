"""Checkpoints: resume reproduces an uninterrupted run; SIGTERM leaves a loadable checkpoint."""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rtrl_rl.checkpoint import latest_checkpoint, load_checkpoint
from rtrl_rl.runners.loop import train
from tests.runners.helpers import make_cfg

WALL_CLOCK = ("fps",)  # metrics.csv columns that depend on timing, not on the run
BASE = ["env.delay=7", "runner.total_frames=4000", "model.hidden_size=16", "seed=3"]


def final_agent(run_dir: Path) -> dict:
    return load_checkpoint(latest_checkpoint(run_dir / "checkpoints"))


def metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    """metrics.csv rows without the wall-clock columns (fps), as the logged strings."""
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and "fps" in rows[0] and "return_mean" in rows[0]
    return [{k: v for k, v in row.items() if k not in WALL_CLOCK} for row in rows]


def test_resume_matches_uninterrupted_run(tmp_path):
    full = tmp_path / "full"
    full_return = train(make_cfg(full, *BASE, "max_updates=12"))
    split = tmp_path / "split"
    train(make_cfg(split, *BASE, "max_updates=6"))
    split_return = train(make_cfg(split, *BASE, "max_updates=12", "resume=true"))
    # the final return_mean covers episodes of both halves: the returns window is restored
    assert not math.isnan(full_return)
    assert split_return == full_return
    rows_full, rows_split = metrics_rows(full), metrics_rows(split)
    assert len(rows_full) == len(rows_split) == 12
    for i, (x, y) in enumerate(zip(rows_full, rows_split, strict=True)):
        assert x == y, f"metrics.csv row {i}"
    a, b = final_agent(full), final_agent(split)
    assert a["learner"]["updates"] == b["learner"]["updates"] == 12
    for k, v in a["agent"].items():
        assert torch.equal(v, b["agent"][k]), k
    for k, v in a["grad"].items():  # the carried RTRL sensitivities too
        assert torch.equal(v, b["grad"][k]), k
    frames = [r.split(",")[0] for r in (split / "metrics.csv").read_text().splitlines()[1:]]
    assert frames == sorted(frames, key=int) and len(frames) == len(set(frames)) == 12


@pytest.mark.parametrize("runner", ["sync", "async"])
def test_sigterm_saves_a_loadable_checkpoint(tmp_path, runner):
    cmd = [sys.executable, "-m", "rtrl_rl.train", f"run_dir={tmp_path}", "logger=none",
           "runner.total_frames=2000000", "env.delay=5", f"runner={runner}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 120
    csv = tmp_path / "metrics.csv"
    while time.time() < deadline and not (csv.exists() and len(csv.read_text().splitlines()) > 2):
        time.sleep(0.5)
    children = _children(proc.pid)
    if runner == "async":
        assert len(children) >= 2, children  # the env workers
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, out.decode()[-2000:]
    ckpt = load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"),
                           required=("agent", "learner", "grad", "counters"))
    assert ckpt["learner"]["updates"] >= 2
    assert ckpt["counters"]["frames"] > 0
    time.sleep(1)
    assert not [p for p in children if _running(p)], "worker processes outlived the run"


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_async_resume_continues_the_run(tmp_path):
    over = [*BASE, "runner=async", "runner.num_workers=2"]
    train(make_cfg(tmp_path, *over, "max_updates=4"))
    train(make_cfg(tmp_path, *over, "max_updates=8", "resume=true"))
    ckpt = final_agent(tmp_path)
    assert ckpt["learner"]["updates"] == 8
    frames = [int(r.split(",")[0]) for r in (tmp_path / "metrics.csv").read_text().splitlines()[1:]]
    assert frames == sorted(frames) and len(frames) == len(set(frames))
