"""A run owns its directory, and resume checks the config against the checkpoint."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rtrl_rl.checkpoint import latest_checkpoint, load_checkpoint
from rtrl_rl.errors import ConfigError
from rtrl_rl.run_dir import RunDirLock
from rtrl_rl.runners.loop import train
from tests.runners.helpers import make_cfg

BASE = ["env.delay=3", "runner.total_frames=4000", "model.hidden_size=16", "seed=3"]
CLI = [sys.executable, "-m", "rtrl_rl.train", "logger=none", "runner.num_envs=4",
       "runner.unroll=5", "env.delay=3", "model.hidden_size=16", "seed=3"]


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def _error_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("rtrl-train: error: "), lines
    return lines[0]


def test_lock_is_exclusive_and_released_on_close(tmp_path):
    with RunDirLock(tmp_path):
        with pytest.raises(ConfigError, match=f"in use by another run \\(PID {os.getpid()}\\)"):
            RunDirLock(tmp_path).acquire()
    with RunDirLock(tmp_path):  # free again
        pass


def test_lock_of_a_killed_run_is_released(tmp_path):
    code = ("import sys, time; from rtrl_rl.run_dir import RunDirLock; "
            f"RunDirLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=f"PID {holder.pid}"):
            RunDirLock(tmp_path).acquire()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        with RunDirLock(tmp_path):
            pass
    finally:
        holder.kill()


def test_second_run_and_resume_of_a_live_run_exit_2(tmp_path):
    first = subprocess.Popen([*CLI, f"run_dir={tmp_path}", "runner.total_frames=100000000"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not (tmp_path / "config.yaml").exists():  # the run is under way
            assert first.poll() is None and time.time() < deadline
            time.sleep(0.2)
        for extra in ([], ["resume=true"]):
            line = _error_line(_cli(f"run_dir={tmp_path}", *extra))
            assert f"PID {first.pid}" in line and str(tmp_path) in line
        assert first.poll() is None  # the first run is untouched
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(60)


def test_resume_with_changed_hidden_size_exits_2_in_one_line(tmp_path):
    done = _cli(f"run_dir={tmp_path}", "max_updates=2", "runner.total_frames=4000")
    assert done.returncode == 0, done.stderr[-2000:]
    before = latest_checkpoint(tmp_path / "checkpoints")
    line = _error_line(_cli(f"run_dir={tmp_path}", "resume=true", "model.hidden_size=32",
                            "runner.unroll=4"))
    assert "model.hidden_size: 16 -> 32" in line and "runner.unroll: 5 -> 4" in line
    assert latest_checkpoint(tmp_path / "checkpoints") == before


@pytest.mark.parametrize("override,key", [
    ("grad=bptt", "grad.name"), ("runner.num_envs=8", "runner.num_envs"),
    ("algo.optimizer=rmsprop", "algo.optimizer"), ("env.delay=4", "env.delay"),
    ("seed=4", "seed"), ("model.core=lstm", "model.core"),
])
def test_resume_refuses_keys_that_define_state(tmp_path, override, key):
    train(make_cfg(tmp_path, *BASE, "max_updates=2", "grad=one_step"))
    with pytest.raises(ConfigError, match=f"^resume: .*{key}: "):
        train(make_cfg(tmp_path, *BASE, "max_updates=4", "grad=one_step", "resume=true",
                       override))


def test_resume_applies_and_logs_changed_keys(tmp_path, caplog):
    train(make_cfg(tmp_path, *BASE, "max_updates=2", "algo.lr=0.001"))
    with caplog.at_level(logging.INFO, logger="rtrl_rl"):
        train(make_cfg(tmp_path, *BASE, "max_updates=3", "resume=true", "algo.lr=0.0005",
                       "algo.adam_eps=0.02", "runner.total_frames=8000"))
    text = caplog.text
    assert "applying the changed algo.lr: 0.001 -> 0.0005" in text
    assert "runner.total_frames: 4000 -> 8000" in text
    ckpt = load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))
    group = ckpt["learner"]["optimizer"]["param_groups"][0]
    # 400 updates over the 8000-frame budget (20 frames each), linear decay, 3 done.
    assert group["initial_lr"] == 0.0005 and group["eps"] == 0.02
    assert group["lr"] == pytest.approx(0.0005 * (1 - 3 / 400))
    config = (tmp_path / "config.yaml").read_text()
    assert "lr: 0.0005" in config and "total_frames: 8000" in config


def test_config_yaml_is_what_runs_after_resume(tmp_path):
    train(make_cfg(tmp_path, *BASE, "max_updates=2"))
    train(make_cfg(tmp_path, *BASE, "max_updates=3", "resume=true", "keep_checkpoints=1"))
    assert "keep_checkpoints: 1" in (tmp_path / "config.yaml").read_text()
    assert len(list(Path(tmp_path / "checkpoints").glob("ckpt_*.pt"))) == 1


def test_a_run_that_fails_after_building_its_runner_closes_it(tmp_path, monkeypatch):
    """The runner (envs, worker processes) is closed when the loop cannot be set up past
    it: here the run logger cannot be made."""
    from rtrl_rl.runners import loop

    closed, make_runner = [], loop.make_runner

    def tracked(*args):
        runner = make_runner(*args)
        close = runner.close
        runner.close = lambda: (closed.append(True), close())
        return runner

    def broken_logger(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(loop, "make_runner", tracked)
    monkeypatch.setattr(loop, "RunLogger", broken_logger)
    with pytest.raises(OSError, match="No space left"):
        train(make_cfg(tmp_path, *BASE, "max_updates=1"))
    assert closed == [True]


def test_checkpoints_from_before_an_added_key_resume_as_its_old_behaviour():
    """A saved config without a key that was added later reads as the value that behaves as
    before; setting the key to something else is still a change of state-defining config."""
    from pathlib import Path

    from rtrl_rl.errors import ConfigError
    from rtrl_rl.resume import check_resume_config

    saved = {"model": {"core": "rtu"}, "env": {"family": "delayed_recall"}}
    now = {"model": {"core": "rtu", "rtu": {"recurrence": "linear", "readout": "relu",
                                            "r_min": 0.9, "r_max": 0.999,
                                            "max_phase": 6.283185307179586}},
           "env": {"family": "delayed_recall", "distractors": False, "dense_reward": False}}
    assert check_resume_config(saved, now, Path("ckpt")) == []
    now["model"]["rtu"]["readout"] = "gelu"
    with pytest.raises(ConfigError, match="model.rtu.readout: 'relu' -> 'gelu'"):
        check_resume_config(saved, now, Path("ckpt"))
    now["model"]["rtu"]["readout"] = "relu"
    now["env"]["distractors"] = True
    with pytest.raises(ConfigError, match="env.distractors"):
        check_resume_config(saved, now, Path("ckpt"))
    atari = {"env": {"family": "atari"}}  # keys of another family are not filled in
    assert check_resume_config(atari, atari, Path("ckpt")) == []
