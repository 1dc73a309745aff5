"""Bad data never reaches the weights or the checkpoints: whole runs, through every runner,
with a real gymnasium env that goes bad and a learning rate that diverges."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rtrl_rl.checkpoint import list_checkpoints, load_checkpoint, nonfinite_entry
from rtrl_rl.errors import EnvDataError, TrainingDiverged
from rtrl_rl.runners.loop import train
from tests.envs import bad_envs
from tests.runners.helpers import make_cfg

ID = "tests.envs.bad_envs:BadData-v0"
RUNNERS = {"sync": [], "async-learner": ["runner=async", "runner.num_workers=2",
                                         "runner.inference=learner"],
           "async-worker": ["runner=async", "runner.num_workers=2", "runner.inference=worker"]}


def bad_gym(field: str, at: int, mode: str = "error", value: str = "nan") -> list[str]:
    return ["env=gym", f"env.id={ID}", f"env.nonfinite={mode}", "model.hidden_size=8",
            f"++env.make_kwargs={{field: {field}, at: {at}, stream: 1, value: {value}}}"]


def assert_checkpoints_finite(run_dir: Path) -> list[Path]:
    found = list_checkpoints(run_dir / "checkpoints")
    assert found
    for path in found:
        assert nonfinite_entry(load_checkpoint(path)) is None, path
    return found


@pytest.mark.parametrize("runner, field, value, named", [
    ("sync", "reward", "nan", "reward is nan"),
    ("sync", "obs", "inf", "observation[2] is inf"),
    ("sync", "shape", "nan", "a sub-env's observation does not fit"),
    ("async-learner", "reward", "-inf", "reward is -inf"),
    ("async-learner", "shape", "nan", "a sub-env's observation does not fit"),
    ("async-worker", "obs", "nan", "observation[2] is nan"),
    ("async-worker", "shape", "nan", "a sub-env's observation does not fit"),
])
def test_bad_env_data_stops_the_run_after_saving_its_last_good_state(
        tmp_path, runner, field, value, named):
    bad_envs.BadData.built = 0
    # step 37: not an episode's last, whose observation is the next episode's first
    cfg = make_cfg(tmp_path, *bad_gym(field, 37, value=value), *RUNNERS[runner],
                   "checkpoint_interval_s=0.001", "runner.total_frames=3000")
    with pytest.raises(EnvDataError) as e:
        train(cfg)
    stream = "1" if runner == "sync" else "(1|3)"  # each worker's second sub-env goes bad
    assert re.match(rf"env gym:{re.escape(ID)}: (stream {stream}, )?step 37: "
                    rf"{re.escape(named)}", str(e.value)), str(e.value)
    assert_checkpoints_finite(tmp_path)


@pytest.mark.parametrize("runner", ["sync", "async-worker"])
def test_reset_mode_finishes_and_counts_the_resets(tmp_path, runner):
    bad_envs.BadData.built = 0
    cfg = make_cfg(tmp_path, *bad_gym("reward", 10, mode="reset"), *RUNNERS[runner],
                   "runner.total_frames=2000", "logger=default")
    train(cfg)
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[-1]["env/nonfinite_resets"]) >= 1
    assert all(r["return_mean"] in ("", "nan") or float(r["return_mean"]) > 0 for r in rows)
    assert_checkpoints_finite(tmp_path)


def test_a_diverging_learning_rate_skips_then_stops_and_resumes_finite(tmp_path, caplog):
    cfg = make_cfg(tmp_path, "algo.lr=1e36", "runner.total_frames=20000",
                   "checkpoint_interval_s=0.001", "algo.max_skipped_updates=5")
    with pytest.raises(TrainingDiverged, match="^5 updates in a row skipped"):
        train(cfg)
    assert caplog.text.count("skipped:") >= 5
    [*_, last] = assert_checkpoints_finite(tmp_path)
    state = load_checkpoint(last)
    assert state["learner"]["skipped_updates"] >= 5
    caplog.clear()
    with pytest.raises(TrainingDiverged):  # the weights it kept still diverge at this lr
        train(make_cfg(tmp_path, "algo.lr=1e36", "runner.total_frames=20000",
                       "algo.max_skipped_updates=2", "resume=true"))
    assert "(1 in a row, 6 in all)" in caplog.text  # the count went on from the checkpoint


def _cli(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rtrl_rl.train", f"hydra.run.dir={tmp_path}", "logger=default",
         "runner.num_envs=4", *overrides],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[2])


def test_cli_nan_reward_exits_2_in_one_line(tmp_path):
    done = _cli(tmp_path, *bad_gym("reward", 300), "checkpoint_interval_s=0.001")
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("rtrl-train: error:")]
    assert errors == [f"rtrl-train: error: env gym:{ID}: stream 1, step 300: reward is nan "
                      "(env.nonfinite=error; zero or reset to go on)"], done.stderr[-2000:]
    assert_checkpoints_finite(tmp_path)


def test_cli_diverging_lr_exits_1(tmp_path):
    done = _cli(tmp_path, "algo.lr=1e36")
    assert done.returncode == 1, done.stderr[-2000:]
    assert "rtrl-train: error: 10 updates in a row skipped" in done.stderr
    last = assert_checkpoints_finite(tmp_path)[-1]
    assert torch.isfinite(load_checkpoint(last)["agent"][
        next(iter(load_checkpoint(last)["agent"]))]).all()


def test_a_run_stopped_by_bad_data_resumes_with_another_mode(tmp_path, caplog):
    bad_envs.BadData.built = 0
    over = [*bad_gym("reward", 37), "runner.total_frames=1000"]
    with pytest.raises(EnvDataError):
        train(make_cfg(tmp_path, *over))
    stopped_at = load_checkpoint(list_checkpoints(tmp_path / "checkpoints")[-1])
    bad_envs.BadData.built = 0
    caplog.set_level("INFO")
    train(make_cfg(tmp_path, *over, "env.nonfinite=reset", "resume=true"))
    assert "resumed from" in caplog.text and "at 140 frames" in caplog.text
    assert "applying the changed env.nonfinite: 'error' -> 'reset'" in caplog.text
    final = load_checkpoint(list_checkpoints(tmp_path / "checkpoints")[-1])
    assert final["counters"]["frames"] >= 1000 > stopped_at["counters"]["frames"]
