"""scripts/bench_grad.py workers on tiny sizes: they run every method and report sane rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench_grad.py"


def _run(*args: str) -> dict:
    out = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                         timeout=120, cwd=ROOT, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_worker_rows_for_every_method():
    for method in ("rtrl", "rtrl_reference", "bptt", "one_step"):
        row = _run("--worker", method, "4", "3", "8", "5", "cpu", "2")
        assert row["method"] == method and (row["B"], row["T"], row["N"], row["I"]) == (4, 3, 8, 5)
        assert row["ms_per_update"] > 0 and row["peak_mb"] >= 0


def test_paired_worker_interleaves_and_reports_ratios():
    row = _run("--paired-worker", "bptt,rtrl,one_step", "4", "3", "8", "5", "cpu", "3", "2")
    assert set(row["ms_per_update"]) == {"bptt", "rtrl", "one_step"}
    assert row["ratio_to_bptt"]["bptt"] == 1.0 and row["ratio_to_bptt"]["rtrl"] > 0


def test_grid_point_rows_take_paired_times_and_fresh_process_memory():
    import argparse
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_grad", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = argparse.Namespace(device="cpu", rounds=2, block=2, repeat=2)
    rows = bench.grid_point(3, 8, 4, 5, ["rtrl", "rtrl_reference", "bptt"], args)
    by = {r["method"]: r for r in rows}
    assert set(by) == {"rtrl", "rtrl_reference", "bptt", "floor"}
    assert by["bptt"]["ratio_to_bptt"] == 1.0 and by["rtrl"]["paired_runs"] == 2
    assert "ratio_to_bptt" not in by["rtrl_reference"]
    assert all(r["ms_per_update"] > 0 and r["peak_mb"] >= 0 for r in rows)


def test_pair_cores_and_the_floor_take_turns_with_the_methods():
    row = _run("--paired-worker", "bptt,rtrl,floor", "4", "3", "8", "5", "cpu", "2", "2", "lru")
    assert row["core"] == "lru" and set(row["ms_per_update"]) == {"bptt", "rtrl", "floor"}
    assert all(v > 0 for v in row["ms_per_update"].values())
    for core in ("rtu", "lru"):
        row = _run("--worker", "rtrl", "4", "3", "8", "5", "cpu", "2", core)
        assert row["core"] == core and row["ms_per_update"] > 0


def test_flop_counts_match_hand_counts():
    # bptt, B=4, T=3, N=8, I=5, readout 16: each of the three linears (inputs -> 3N gate
    # pre-activations, c -> the output gate, h -> readout) costs 2*T*B*in*out forward and
    # twice that backward (input and weight gradients).
    tb = 3 * 4
    linears = 2 * tb * 5 * 24 + 2 * tb * 8 * 8 + 2 * tb * 8 * 16
    row = _run("--worker", "bptt", "4", "3", "8", "5", "cpu", "2")
    assert row["matmul_flops"] == 3 * linears
    # the floor's update matmul: 2 * B * I * T * (M * N * reals per unit)
    row = _run("--worker", "floor", "4", "3", "8", "5", "cpu", "2")
    assert row["matmul_flops"] == 2 * 4 * 5 * 3 * (2 * 8 * 1)
    row = _run("--worker", "floor", "4", "3", "8", "5", "cpu", "2", "lru")
    assert row["matmul_flops"] == 2 * 4 * 5 * 3 * (2 * 8 * 2)
    assert "matmul_flops" not in _run("--worker", "rtrl", "4", "3", "8", "5", "cpu", "2")
