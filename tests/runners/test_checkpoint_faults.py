"""Checkpoint faults: a full disk, a failed save, a damaged newest checkpoint."""

from __future__ import annotations

import errno
import io
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rtrl_rl.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from rtrl_rl.errors import ConfigError
from rtrl_rl.runners import loop
from rtrl_rl.runners.loop import train
from tests.runners.helpers import make_cfg

BASE = ["env.delay=3", "runner.total_frames=4000", "model.hidden_size=16", "seed=3"]
CLI = [sys.executable, "-m", "rtrl_rl.train", "logger=none", "runner.num_envs=4",
       "runner.unroll=5", *BASE]
ENOSPC = os.strerror(errno.ENOSPC)  # "No space left on device"


def _rows(run_dir: Path) -> int:
    return len((run_dir / "metrics.csv").read_text().splitlines()) - 1


def test_save_keeps_the_os_error(tmp_path, monkeypatch):
    class FullDisk(io.BufferedWriter):
        def write(self, data) -> int:
            raise OSError(errno.ENOSPC, ENOSPC)

    def full_open(path, mode="r", *args, **kwargs):
        return FullDisk(io.FileIO(path, mode.replace("b", "")))

    save_checkpoint(tmp_path, {"x": 1}, step=1)
    monkeypatch.setattr("rtrl_rl.checkpoint.open", full_open, raising=False)
    with pytest.raises(CheckpointError, match=f"Errno {errno.ENOSPC}.*{ENOSPC}"):
        save_checkpoint(tmp_path, {"x": 2}, step=2)
    assert list_checkpoints(tmp_path) == [tmp_path / "ckpt_000000000001.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_000000000001.pt"]


def test_failed_periodic_saves_warn_and_training_goes_on(tmp_path, monkeypatch, caplog):
    real, calls = loop.save_checkpoint, []

    def flaky(ckpt_dir, state, step, keep=3):
        calls.append(step)
        if 2 <= len(calls) <= 4:
            raise CheckpointError(f"could not write checkpoint {step}: OSError: [Errno 28] "
                                  f"{ENOSPC}")
        return real(ckpt_dir, state, step, keep=keep)

    monkeypatch.setattr(loop, "save_checkpoint", flaky)
    with caplog.at_level(logging.WARNING, logger="rtrl_rl"):
        train(make_cfg(tmp_path, *BASE, "max_updates=8", "checkpoint_interval_s=1e-9"))
    warnings = [r.getMessage() for r in caplog.records if "periodic checkpoint" in r.message]
    assert len(warnings) == 3 and all(ENOSPC in w for w in warnings)
    assert _rows(tmp_path) == 8  # every update happened and was logged
    assert load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))["learner"][
        "updates"] == 8


def test_failed_final_save_exits_nonzero_with_one_line(tmp_path):
    code = (
        "import sys\n"
        "from rtrl_rl.checkpoint import CheckpointError\n"
        "from rtrl_rl.runners import loop\n"
        "def broken(ckpt_dir, state, step, keep=3):\n"
        "    raise CheckpointError(f'could not write checkpoint {step}: OSError: [Errno 28] "
        f"{ENOSPC}')\n"
        "loop.save_checkpoint = broken\n"
        "from rtrl_rl.train import main\n"
        "sys.argv = ['rtrl-train', *sys.argv[1:]]\n"
        "main()\n")
    result = subprocess.run([sys.executable, "-c", code, *CLI[3:], f"run_dir={tmp_path}",
                             "max_updates=2"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        f"rtrl-train: error: could not write checkpoint 2: OSError: [Errno 28] {ENOSPC}"]


def _tmpfs_runner() -> list[str] | None:
    """A command prefix that runs its argument in a private mount namespace, or None."""
    if not shutil.which("unshare"):
        return None
    prefix = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]
    probe = subprocess.run([*prefix, "sh", "-c", "mount -t tmpfs -o size=4k tmpfs /mnt"],
                           capture_output=True)
    return prefix if probe.returncode == 0 else None


@pytest.mark.timeout(300)
def test_periodic_save_on_a_real_full_disk(tmp_path):
    """checkpoints/ on a tmpfs with room for one checkpoint: the first save fits, the rest
    fail with ENOSPC; the run goes on to the end, keeps the first, and its final save fails
    with one line that names the OS error."""
    prefix = _tmpfs_runner()
    if prefix is None:
        pytest.skip("cannot mount a tmpfs here (no mount namespaces)")
    probe = tmp_path / "probe"
    train(make_cfg(probe, *BASE, "max_updates=1"))
    size = latest_checkpoint(probe / "checkpoints").stat().st_size
    room = (size * 3 // 2 // 4096 + 1) * 4096  # one checkpoint, not two
    run_dir, kept = tmp_path / "run", tmp_path / "kept"
    ckpts = run_dir / "checkpoints"
    ckpts.mkdir(parents=True)
    kept.mkdir()
    script = (f'mount -t tmpfs -o size={room} tmpfs "{ckpts}" && "$@"; rc=$?; '
              f'cp -a "{ckpts}/." "{kept}/"; exit $rc')
    result = subprocess.run(
        [*prefix, "sh", "-c", script, "sh", *CLI, f"run_dir={run_dir}", "max_updates=30",
         "checkpoint_interval_s=1e-9"],
        capture_output=True, text=True, timeout=240)
    err = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr[-3000:]
    assert err[-1].startswith("rtrl-train: error: could not write checkpoint") and (
        ENOSPC in err[-1]), err[-1]
    logged = (result.stdout + result.stderr).splitlines()  # Hydra logs to stdout
    warnings = [ln for ln in logged if "periodic checkpoint failed" in ln]
    assert warnings and all(ENOSPC in ln for ln in warnings)
    assert _rows(run_dir) == 30
    assert [p.name for p in kept.iterdir()] == ["ckpt_000000000001.pt"]
    assert load_checkpoint(kept / "ckpt_000000000001.pt")["learner"]["updates"] == 1


def _damage(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_resume_falls_back_past_a_damaged_newest_checkpoint(tmp_path, caplog):
    train(make_cfg(tmp_path, *BASE, "max_updates=3", "checkpoint_interval_s=1e-9"))
    found = list_checkpoints(tmp_path / "checkpoints")
    assert [p.name for p in found][-2:] == ["ckpt_000000000002.pt", "ckpt_000000000003.pt"]
    _damage(found[-1])
    with caplog.at_level(logging.WARNING, logger="rtrl_rl"):
        train(make_cfg(tmp_path, *BASE, "max_updates=5", "resume=true"))
    text = caplog.text
    assert "skipping unreadable checkpoint" in text and "ckpt_000000000003.pt" in text
    assert "resuming from ckpt_000000000002.pt" in text
    assert load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))["learner"][
        "updates"] == 5


def test_resume_with_no_loadable_checkpoint_is_one_line_exit_2(tmp_path):
    train(make_cfg(tmp_path, *BASE, "max_updates=2", "checkpoint_interval_s=1e-9"))
    for path in list_checkpoints(tmp_path / "checkpoints"):
        _damage(path)
    with pytest.raises(ConfigError, match="^resume: none of the 2 checkpoints"):
        train(make_cfg(tmp_path, *BASE, "max_updates=4", "resume=true"))
    result = subprocess.run([*CLI, f"run_dir={tmp_path}", "resume=true"], capture_output=True,
                            text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("rtrl-train: error: resume: none of the 2 checkpoints")
