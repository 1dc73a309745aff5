"""scripts/device_check.sh's plumbing on the CPU (its steps on a GPU are not run here), and
bench_throughput.py's placement choice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_only_runs_the_named_steps_and_bundles_every_json(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "ONLY": "no_such_step", "PY": sys.executable}
    run = subprocess.run(["bash", str(ROOT / "scripts" / "device_check.sh"), str(out),
                          "--dry-run"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    # the machine report always runs; nothing else was named that exists
    assert sorted(p.name for p in out.iterdir()) == ["device_check.log", "results.json"]
    bundle = json.loads((out / "results.json").read_text())
    assert set(bundle) == {"machine.json", "steps"}
    assert [s["step"] for s in bundle["steps"]] == ["machine"]
    assert bundle["steps"][0]["rc"] == 0
    assert bundle["machine.json"]["torch"]
    assert "== gpu_tests" not in (out / "device_check.log").read_text()


def test_bench_throughput_refuses_an_unknown_placement_in_one_line():
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_throughput.py"),
                          "--placements", "learner,gpu"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2
    last = run.stderr.strip().splitlines()[-1]
    assert "--placements: unknown gpu (choose from sync, worker, learner)" in last
    assert "env-only" not in run.stdout  # refused before any env started


def test_learning_stage_skips_stages_of_zero_seconds_and_writes_results(tmp_path):
    """scripts/device_learn.sh's plumbing: stages of 0 s are skipped, results.json is
    written with the machine and the date (its runs run on the GPU machine, or with
    --dry-run on the CPU)."""
    out = tmp_path / "learn"
    env = {**os.environ, "PONG_S": "0", "BPTT_S": "0", "PROCGEN_S": "0", "PY": sys.executable}
    run = subprocess.run(["bash", str(ROOT / "scripts" / "device_learn.sh"), str(out),
                          "--dry-run"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    result = json.loads((out / "results.json").read_text())
    assert result["runs"] == {} and result["torch"] and result["date"].startswith("20")
    log = (out / "device_learn.log").read_text()
    assert "pong_rtrl: skipped (0 s)" in log and "pong_bptt: skipped (0 s)" in log
