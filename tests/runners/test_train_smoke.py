"""A few updates of every gradient method x core on tiny configs of each env family."""

from __future__ import annotations

import math

import pytest

from rtrl_rl.checkpoint import latest_checkpoint, load_checkpoint
from rtrl_rl.runners.loop import train
from tests.runners.helpers import make_cfg

CORES = {"elstm": ["model.core=elstm"], "stacked": ["model.core=elstm", "model.layers=2"],
         "lstm": ["model.core=lstm"], "none": ["model.core=none"], "rtu": ["model.core=rtu"],
         "lru": ["model.core=lru"]}
ENVS = {
    "delayed_recall": ["env.delay=3"],
    "atari": ["experiment=atari_r2ac", "model.hidden_size=32", "model.stem_out=32",
              "env.max_episode_frames=400"],
    "procgen": ["experiment=procgen_r2ac", "model.hidden_size=32", "model.stem_out=32"],
}


@pytest.mark.parametrize("env", list(ENVS))
@pytest.mark.parametrize("core", list(CORES))
@pytest.mark.parametrize("grad", ["rtrl", "bptt", "one_step"])
def test_smoke(tmp_path, env, core, grad):
    if grad == "rtrl" and core == "lstm":
        pytest.skip("refused by design (tested in test_config_errors)")
    if env != "delayed_recall" and core == "stacked":
        pytest.skip("stacking is covered on the cheap env")
    cfg = make_cfg(tmp_path, f"grad={grad}", *CORES[core], *ENVS[env], "max_updates=3",
                   "runner.total_frames=100000", "runner.num_envs=4", "runner.unroll=5")
    result = train(cfg)
    assert isinstance(result, float)
    ckpt = load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))
    assert ckpt["learner"]["updates"] == 3
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("env_frames") and len(rows) == 4
    assert all(math.isfinite(float(v)) for v in rows[-1].split(",")[1:4])


def test_eval_episodes_and_agent_steps(tmp_path):
    """``eval_episodes`` plays the final policy on the eval split into eval.json; metrics.csv
    counts agent steps beside frames (Atari: 4 frames per step)."""
    import csv
    import json

    cfg = make_cfg(tmp_path, *ENVS["atari"], "max_updates=2", "eval_episodes=3",
                   "runner.num_envs=2", "runner.unroll=5")
    train(cfg)
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["episodes"] == 3 and result["split"] == "eval"
    assert math.isfinite(result["return_mean"]) and result["length_mean"] > 0
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [float(r["agent_steps"]) * 4 for r in rows] == [float(r["env_frames"]) for r in rows]


def test_the_default_model_takes_images_with_stem_auto(tmp_path):
    """``rtrl-train env=procgen``: the default model's ``stem=auto`` picks the IMPALA ResNet
    for ProcGen's frames (and the MLP for the default job's vectors)."""
    cfg = make_cfg(tmp_path, "env=procgen", "env.game=coinrun", "max_updates=2",
                   "runner.total_frames=20000", "runner.num_envs=2", "model.stem_out=16")
    assert cfg.model.stem == "auto"
    train(cfg)
    ckpt = load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))
    assert any(k.startswith("stem.groups.") for k in ckpt["agent"]), list(ckpt["agent"])
