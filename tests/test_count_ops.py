"""scripts/count_ops.py: the dispatch-mode counter against a hand count, and the script's
per-step and per-update counts on tiny sizes."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "count_ops.py"


def _module():
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("count_ops", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_counter_counts_each_aten_call_once_backward_included():
    count = _module().count
    a, b = torch.randn(3, 4), torch.randn(4, 2)
    assert count(lambda: torch.mm(a, b).add(1.0)).ops == {"aten.mm": 1, "aten.add": 1}
    w = torch.randn(4, 2, requires_grad=True)

    def forward_backward():
        torch.mm(a, w).sum().backward()

    ops = count(forward_backward).ops
    assert ops["aten.mm"] == 2  # forward a @ w, backward a^T @ grad
    assert ops["aten.sum"] == 1


def test_script_reports_a_policy_step_and_an_update_per_method(tmp_path):
    out = tmp_path / "ops.json"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--preset", "delayed_recall", "--batch", "4",
         "--unroll", "3", "--json", str(out), "model.hidden_size=8"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    step = result["policy_step"]["ops"]
    assert step > 0 and set(result["update"]) == {"rtrl", "bptt"}
    assert all(row["ops"] > step for row in result["update"].values())
