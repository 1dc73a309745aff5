"""scripts/bench_learner.py on tiny sizes: both grads timed from one config, sane rows."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench_learner.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_learner", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rows_per_grad_with_the_last_one_as_the_baseline(tmp_path):
    out = tmp_path / "rows.json"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--preset", "delayed_recall", "--batch", "4",
         "--unroll", "3", "--rounds", "2", "--block", "1", "--json", str(out),
         "model.hidden_size=8"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = {r["grad"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"rtrl", "bptt"}
    assert rows["bptt"]["vs_bptt"] == 1.0 and rows["rtrl"]["vs_bptt"] > 0
    for r in rows.values():
        assert r["ms_per_update"] > 0 and (r["batch"], r["unroll"]) == (4, 3)
        assert r["frames_per_update"] == 12 and r["overrides"] == ["model.hidden_size=8"]


def test_synthetic_rollout_has_the_rollout_shapes_and_episode_starts():
    bench = _module()
    from rtrl_rl.envs import make_env
    from rtrl_rl.models.agent import Agent

    cfg = bench.load_config("delayed_recall", ["model.hidden_size=8"])
    spec = make_env(cfg.env, 1, seed=0).spec
    agent = Agent(spec, cfg.model, cfg.algo.reward_clip)
    r = bench.synthetic_rollout(spec, agent, 200, 8, torch.device("cpu"))
    assert r.obs.shape == (201, 8, *spec.obs_shape) and r.obs.dtype == spec.obs_dtype
    assert r.dist_params.shape == (201, 8, agent.dist.param_size)
    assert r.core_state.shape == (8, agent.core.state_size)
    assert r.stream_ids.tolist() == list(range(8))
    assert int(r.action.max()) < spec.num_actions and int(r.action.min()) >= 0
    assert 0.02 < float(r.first.float().mean()) < 0.09  # starts at rate 1/20
