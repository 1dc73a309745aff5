"""RunLogger: metrics.csv, metadata files, TensorBoard, wandb modes, progress, PNG; config."""

from __future__ import annotations

import csv
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from rtrl_rl.errors import ConfigError
from rtrl_rl.plotting import plot_learning_curve, read_curve
from rtrl_rl.run_logger import LoggerConfig, RunLogger, git_revision

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "logger"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RUN_CONFIG = {"env": {"name": "copy", "num_envs": 4}, "grad": "rtrl", "lr": 6e-4, "tags": ["a"]}


def quiet(**overrides) -> LoggerConfig:
    """Everything optional off; tests turn on what they check."""
    opts = dict(progress="none", tensorboard=False, plot=False, wandb_mode="disabled")
    return LoggerConfig(**{**opts, **overrides})


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------ config


@pytest.mark.parametrize(
    "key, value",
    [("wandb_mode", "cloud"), ("progress", "fancy"), ("log_interval_s", -1), ("tensorboard", "yes"),
     ("wandb_tags", "one-tag"), ("wandb_project", "")],
)
def test_bad_config_values_raise_one_line_config_error(key, value):
    with pytest.raises(ConfigError) as info:
        LoggerConfig(**{key: value})
    assert f"logger.{key}" in str(info.value) and "\n" not in str(info.value)


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="wandb_mode"):
        LoggerConfig.from_dict({"wandb_mod": "offline"})


@pytest.mark.parametrize("name", ["default", "wandb", "wandb_offline", "none"])
def test_logger_yaml_files_have_exactly_the_dataclass_keys(name):
    options = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    assert set(options) == set(LoggerConfig.__dataclass_fields__)
    cfg = LoggerConfig.from_dict(options)
    assert cfg.wandb_mode == {"wandb": "online", "wandb_offline": "offline"}.get(name, "disabled")


def test_logger_config_as_omegaconf_structured_config():
    from omegaconf import OmegaConf

    schema = OmegaConf.structured(LoggerConfig)
    cfg = OmegaConf.to_object(OmegaConf.merge(schema, {"wandb_tags": ["x"], "wandb_group": "g"}))
    assert cfg == LoggerConfig(wandb_tags=["x"], wandb_group="g")
    with pytest.raises(ConfigError, match="logger.wandb_mode"):
        OmegaConf.to_object(OmegaConf.merge(schema, {"wandb_mode": "cloud"}))


# ------------------------------------------------------------------ metrics.csv


def test_csv_columns_fixed_by_first_row(tmp_path):
    with RunLogger(tmp_path, quiet(), RUN_CONFIG, total_frames=1000) as lg:
        lg.log(100, {"return_mean": 1.0, "loss": torch.tensor(0.5)})
        lg.log(200, {"loss": np.float32(0.25), "new_metric": 3.0})  # return missing, extra key
        lg.log(300, {"return_mean": float("nan"), "loss": 0.125})
        with pytest.raises(TypeError, match="loss"):
            lg.log(400, {"loss": "high"})
    with open(tmp_path / "metrics.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header == ["env_frames", "return_mean", "loss"]
    rows = read_rows(tmp_path / "metrics.csv")
    assert [r["env_frames"] for r in rows] == ["100", "200", "300"]
    assert rows[1]["return_mean"] == "" and float(rows[1]["loss"]) == 0.25
    assert math.isnan(float(rows[2]["return_mean"]))


def test_csv_rows_are_whole_on_a_full_disk(tmp_path, caplog):
    """Writes that fail or stop short (ENOSPC) are cut back off: the file stays parseable,
    one warning per kind of error, and rows after the disk frees up land normally."""
    import errno

    class Disk:
        def __init__(self, inner, plan):
            self.inner, self.plan = inner, plan

        def write(self, data):
            mode = self.plan.pop(0) if self.plan else "ok"
            if mode == "short":
                return self.inner.write(data[: len(data) // 2])
            if mode == "fail":
                self.inner.write(data[:3])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.inner.write(data)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    lg = RunLogger(tmp_path, quiet(), RUN_CONFIG, total_frames=1000)
    csv_log = lg._csv
    lg.log(100, {"loss": 1.0})
    csv_log._file = Disk(csv_log._file, ["short", "fail", "fail", "ok"])
    for frames in (200, 300, 400, 500):
        lg.log(frames, {"loss": frames / 100})
    lg.close()
    rows = read_rows(tmp_path / "metrics.csv")
    assert [(r["env_frames"], r["loss"]) for r in rows] == [("100", "1.0"), ("500", "5.0")]
    warned = [r.getMessage() for r in caplog.records if "metrics.csv: a row" in r.getMessage()]
    assert len(warned) == 1 and "No space left on device" in warned[0]


def test_csv_resume_keeps_rows_up_to_checkpoint(tmp_path):
    with RunLogger(tmp_path, quiet(), RUN_CONFIG, total_frames=1000) as lg:
        for frames in range(100, 600, 100):
            lg.log(frames, {"return_mean": frames / 100, "loss": 1.0})
    with open(tmp_path / "metrics.csv", "a") as f:
        f.write("600,6.0")  # a row cut short by a crash

    with RunLogger(tmp_path, quiet(), RUN_CONFIG, total_frames=1000, start_frames=300) as lg:
        lg.log(400, {"return_mean": 40.0, "loss": 2.0})
    rows = read_rows(tmp_path / "metrics.csv")
    assert [(r["env_frames"], r["return_mean"]) for r in rows] == [
        ("100", "1.0"), ("200", "2.0"), ("300", "3.0"), ("400", "40.0")
    ]

    # A fresh run (start_frames=0) in the same directory starts a new curve.
    with RunLogger(tmp_path, quiet(), RUN_CONFIG, total_frames=1000) as lg:
        lg.log(50, {"other": 1.0})
    with open(tmp_path / "metrics.csv", newline="") as f:
        assert list(csv.reader(f)) == [["env_frames", "other"], ["50", "1.0"]]


# ------------------------------------------------------------------ metadata


def test_config_and_git_rev_written(tmp_path):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({**RUN_CONFIG, "lr_copy": "${lr}", "path": str(tmp_path)})
    RunLogger(tmp_path, quiet(csv=False), cfg, total_frames=10).close()
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved == {**RUN_CONFIG, "lr_copy": 6e-4, "path": str(tmp_path)}
    rev = (tmp_path / "git_rev.txt").read_text().strip()
    assert rev == "unknown" or len(rev.split("-")[0]) == 40
    assert not (tmp_path / "metrics.csv").exists()


def test_git_revision_outside_and_inside_a_checkout(tmp_path):
    assert git_revision(tmp_path / "not-a-dir") == "unknown"
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    assert git_revision(tmp_path) == "unknown"  # not a checkout
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    git += ["-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], check=True)
    assert git_revision(repo) == "unknown"  # no commit yet
    (repo / "f.txt").write_text("a")
    subprocess.run([*git, "add", "f.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    sha = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert git_revision(repo) == sha
    (repo / "f.txt").write_text("b")
    assert git_revision(repo) == sha + "-dirty"


# ------------------------------------------------------------------ tensorboard


def test_tensorboard_events_written(tmp_path):
    with RunLogger(tmp_path, quiet(tensorboard=True), RUN_CONFIG, total_frames=1000) as lg:
        lg.log(100, {"return_mean": 1.0, "loss/total": 0.5})
        lg.log(200, {"return_mean": 2.0, "loss/total": float("nan")})
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("return_mean")] == [(100, 1.0), (200, 2.0)]
    assert [e.step for e in acc.Scalars("loss/total")] == [100]  # non-finite values skipped


# ------------------------------------------------------------------ wandb


def test_wandb_disabled_never_imports_wandb(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # any import of wandb would now fail
    with RunLogger(tmp_path, quiet(), RUN_CONFIG, total_frames=10) as lg:
        assert len(lg.wandb_id) == 8 and lg.wandb_id.isalnum()
        lg.log(1, {"return_mean": 0.0})
    with RunLogger(tmp_path, quiet(), RUN_CONFIG, total_frames=10, wandb_id="keepthis") as lg:
        assert lg.wandb_id == "keepthis"
    assert not (tmp_path / "wandb").exists()


def test_missing_wandb_package_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ConfigError, match="logger.wandb_mode=offline needs the wandb package"):
        RunLogger(tmp_path, quiet(wandb_mode="offline", tensorboard=True), RUN_CONFIG, 10)


# Runs in a child process so that wandb's background threads and exit hooks are covered too.
OFFLINE_CHILD = """
import socket, sys
def report(what):
    print("NETWORK-ATTEMPT", what, file=sys.stderr, flush=True)
LOCAL = ("127.0.0.1", "localhost", "::1", None)
real_gai, real_connect = socket.getaddrinfo, socket.socket.connect
def gai(host, *a, **k):
    if host not in LOCAL:
        report(host)
    return real_gai(host, *a, **k)
def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOCAL:
        report(address)
    return real_connect(self, address)
socket.getaddrinfo, socket.socket.connect = gai, connect
from rtrl_rl.run_logger import LoggerConfig, RunLogger
cfg = LoggerConfig(progress="plain", tensorboard=False, plot=False, wandb_mode="offline",
                   wandb_tags=["test"], wandb_group="g")
with RunLogger(sys.argv[1], cfg, {"lr": 0.1}, total_frames=100, wandb_id="offln123") as lg:
    lg.log(10, {"return_mean": 1.0, "loss": 0.5})
    lg.log(20, {"return_mean": 2.0, "loss": 0.25})
"""


def test_wandb_offline_creates_offline_run_without_network(tmp_path):
    pytest.importorskip("wandb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        env[var] = str(tmp_path / "home" / var.lower())
    run_dir = tmp_path / "run"
    child = subprocess.run(
        [sys.executable, "-c", OFFLINE_CHILD, str(run_dir)],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    assert "NETWORK-ATTEMPT" not in child.stderr, child.stderr[-3000:]
    runs = list((run_dir / "wandb").glob("offline-run-*-offln123"))
    assert len(runs) == 1 and (runs[0] / "run-offln123.wandb").is_file()
    assert len(read_rows(run_dir / "metrics.csv")) == 2


# ------------------------------------------------------------------ progress


def test_plain_progress_lines_when_not_a_tty(tmp_path, capsys):
    cfg = quiet(progress="auto", log_interval_s=0.0)  # capsys' stdout is not a TTY
    with RunLogger(tmp_path, cfg, RUN_CONFIG, total_frames=1000, start_frames=0) as lg:
        lg.log(100, {"return_mean": 1.5, "loss": 0.25})
        lg.log(200, {"loss": 0.125})
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("frames=")]
    assert len(lines) == 2
    assert lines[0].startswith("frames=100/1000 (10.0%) fps=")
    assert "return=1.5 loss=0.25" in lines[0]
    assert "return=1.5 loss=0.125" in lines[1]  # last finite return is kept


def test_plain_progress_is_rate_limited(tmp_path, capsys):
    cfg = quiet(progress="plain", log_interval_s=3600.0)
    with RunLogger(tmp_path, cfg, RUN_CONFIG, total_frames=1000) as lg:
        for frames in range(10, 110, 10):
            lg.log(frames, {"return_mean": 1.0})
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("frames=")]
    assert [ln.split()[0] for ln in lines] == ["frames=10/1000", "frames=100/1000"]  # first, final


def test_no_progress_output_with_none(tmp_path, capsys):
    with RunLogger(tmp_path, quiet(progress="none"), RUN_CONFIG, total_frames=10) as lg:
        lg.log(5, {"return_mean": 1.0})
    assert capsys.readouterr().out == ""


def test_rich_progress_runs(tmp_path, capsys):
    with RunLogger(tmp_path, quiet(progress="rich"), RUN_CONFIG, 1000, run_name="myrun") as lg:
        lg.log(500, {"return_mean": 3.0})
    assert "myrun" in capsys.readouterr().out


# ------------------------------------------------------------------ close, plot


def test_close_is_idempotent_and_writes_png(tmp_path):
    lg = RunLogger(tmp_path, quiet(plot=True), RUN_CONFIG, total_frames=1000)
    for frames, ret in [(100, 1.0), (200, float("nan")), (300, 2.0), (400, 3.5)]:
        lg.log(frames, {"return_mean": ret})
    lg.close()
    lg.close()
    png = (tmp_path / "learning_curve.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 1000
    with pytest.raises(RuntimeError, match="after close"):
        lg.log(500, {"return_mean": 1.0})


def test_context_manager_closes_on_error(tmp_path):
    with pytest.raises(KeyError):
        with RunLogger(tmp_path, quiet(plot=True), RUN_CONFIG, total_frames=10) as lg:
            lg.log(1, {"return_mean": 1.0})
            raise KeyError("boom")
    assert (tmp_path / "learning_curve.png").read_bytes().startswith(PNG_MAGIC)


def test_plot_tolerates_empty_and_nan_rows(tmp_path):
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text("env_frames,return_mean\n")
    out = plot_learning_curve(csv_path, tmp_path / "empty.png")
    assert out.read_bytes().startswith(PNG_MAGIC)

    csv_path.write_text("env_frames,return_mean\n1,nan\n2,\n,3\n4,inf\n5,1.0\n6,bad\n")
    assert read_curve(csv_path, "env_frames", "return_mean") == ([5.0], [1.0])
    assert plot_learning_curve(csv_path, tmp_path / "c.png").read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(ValueError, match="score"):
        plot_learning_curve(csv_path, tmp_path / "x.png", y="score")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "empty.png", "metrics.csv"]
