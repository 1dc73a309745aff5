"""Run logging: metrics.csv, TensorBoard, Weights & Biases, progress display, run metadata.

One ``RunLogger`` per training run writes everything a user needs to watch a run, resume
it after an interrupt, and compare it with others later (see ``RunLogger`` for the files).

``import logging`` below is the standard library, used for warnings about the logging
backends themselves.
"""

from __future__ import annotations

import csv
import errno
import io
import logging
import math
import os
import secrets
import string
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from rtrl_rl.errors import ConfigError, unknown_name
from rtrl_rl.progress import Progress, make_progress

log = logging.getLogger(__name__)

PROGRESS_MODES = ("auto", "rich", "plain", "none")
WANDB_MODES = ("online", "offline", "disabled")


@dataclass
class LoggerConfig:
    """Options of the ``logger`` config group (``configs/logger/*.yaml``)."""

    progress: str = "auto"
    """``auto`` (a ``rich`` progress bar on a TTY, ``plain`` lines otherwise), ``rich``,
    ``plain`` or ``none``."""
    log_interval_s: float = 10.0
    """Seconds between plain progress lines."""
    tensorboard: bool = True
    """Write TensorBoard event files under ``run_dir/tb``."""
    csv: bool = True
    """Write ``run_dir/metrics.csv``."""
    wandb_mode: str = "disabled"
    """Weights & Biases: ``disabled``, ``online`` or ``offline``."""
    wandb_project: str = "rtrl_rl"
    """W&B project."""
    wandb_entity: str | None = None
    """W&B entity (team or user; none: your default)."""
    wandb_group: str | None = None
    """W&B group (a multirun sets it to its sweep's directory name)."""
    wandb_tags: list[str] = field(default_factory=list)
    """W&B tags."""
    plot: bool = True
    """Draw ``run_dir/learning_curve.png`` when the run closes."""

    def __post_init__(self) -> None:
        def bad(key: str, want: str) -> ConfigError:
            return ConfigError(f"logger.{key} must be {want}, got {getattr(self, key)!r}")

        if self.progress not in PROGRESS_MODES:
            raise bad("progress", "one of " + ", ".join(PROGRESS_MODES))
        if self.wandb_mode not in WANDB_MODES:
            raise bad("wandb_mode", "one of " + ", ".join(WANDB_MODES))
        for key in ("tensorboard", "csv", "plot"):
            if not isinstance(getattr(self, key), bool):
                raise bad(key, "true or false")
        interval = self.log_interval_s
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval < 0:
            raise bad("log_interval_s", "a number >= 0")
        self.log_interval_s = float(interval)
        if not isinstance(self.wandb_project, str) or not self.wandb_project:
            raise bad("wandb_project", "a non-empty string")
        for key in ("wandb_entity", "wandb_group"):
            if not isinstance(getattr(self, key), (str, type(None))):
                raise bad(key, "a string or null")
        tags = self.wandb_tags
        if isinstance(tags, str) or not isinstance(tags, Sequence):
            raise bad("wandb_tags", "a list of strings")
        if not all(isinstance(t, str) for t in tags):
            raise bad("wandb_tags", "a list of strings")
        self.wandb_tags = list(tags)

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> LoggerConfig:
        """Build from a mapping (e.g. Hydra's ``cfg.logger``); unknown keys: ``ConfigError``."""
        names = [f.name for f in fields(cls)]
        for key in options:
            if key not in names:
                raise unknown_name("logger option", str(key), names)
        return cls(**{k: _plain(v) for k, v in options.items()})


def _plain(value: Any) -> Any:
    """Plain containers with YAML-safe leaves from OmegaConf, numpy, torch or Path values."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if getattr(value, "shape", None) == ():  # numpy / torch scalars
        return value.item()
    return str(value)


def git_revision(path: str | os.PathLike | None = None) -> str:
    """The git commit of the checkout holding ``path`` (default: this package).

    Adds ``-dirty`` when tracked files have uncommitted changes. Returns ``"unknown"`` when
    there is no git, no checkout, no commit yet, or anything else goes wrong.
    """
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--verify", "HEAD"],
            cwd=where, capture_output=True, text=True, timeout=10,
        )
        if head.returncode != 0 or not head.stdout.strip():
            return "unknown"
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where, capture_output=True, text=True, timeout=30,
        )
        dirty = status.returncode != 0 or bool(status.stdout.strip())
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except Exception:
        return "unknown"


def new_run_id() -> str:
    """An 8-character wandb-style run id; uses ``secrets`` so seeded RNG streams are untouched."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def _as_float(key: str, value: Any) -> float:
    try:
        return float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"metric '{key}' must be a number, got {type(value).__name__}") from None


def write_atomic(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (a temporary file, then a rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class _CsvLog:
    """Append-only metrics.csv whose columns are fixed by the first row (env_frames first)."""

    def __init__(self, path: Path, start_frames: int) -> None:
        self.path = path
        self.columns: list[str] | None = None
        self._file = None
        self._dropped: set[str] = set()
        self._write_errors: set[int | None] = set()
        if path.exists():
            if start_frames > 0:
                self.columns = self._truncate(start_frames)
            else:
                path.unlink()

    def _truncate(self, start_frames: int) -> list[str] | None:
        """Keep rows with env_frames <= start_frames (the checkpoint); drop later/partial rows."""
        with open(self.path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows or not rows[0] or rows[0][0] != "env_frames":
            log.warning("%s has no env_frames header; starting it anew", self.path)
            self.path.unlink()
            return None
        header, kept = rows[0], []
        for row in rows[1:]:
            try:
                if len(row) == len(header) and float(row[0]) <= start_frames:
                    kept.append(row)
            except ValueError:
                continue  # a line cut short by a crash
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(kept)
        os.replace(tmp, self.path)
        return header

    def write(self, env_frames: int, metrics: Mapping[str, float]) -> None:
        rows = []
        if self.columns is None:
            self.columns = ["env_frames"] + [k for k in metrics if k != "env_frames"]
            rows.append(self.columns)
        extra = set(metrics) - set(self.columns) - self._dropped
        if extra:
            self._dropped |= extra
            log.warning(
                "metrics.csv columns are fixed by its first row; not recording %s there",
                ", ".join(sorted(extra)),
            )
        rows.append([env_frames] + [metrics.get(k, "") for k in self.columns[1:]])
        text = io.StringIO()
        csv.writer(text).writerows(rows)
        if not self._append(text.getvalue().encode()) and len(rows) == 2:
            self.columns = None  # the header did not make it: the next row brings it

    def _append(self, data: bytes) -> bool:
        """Append whole rows or nothing: a failed write (a full disk) is cut back off, so the
        file stays parseable, and the run goes on with one warning per kind of error."""
        if self._file is None:
            self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 (kept open)
        good = self._file.seek(0, os.SEEK_END)
        try:
            written = self._file.write(data)
            if written != len(data):
                raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (wrote {written} of "
                                            f"{len(data)} bytes)")
            return True
        except OSError as e:
            try:
                self._file.truncate(good)
            except OSError:
                pass
            if e.errno not in self._write_errors:
                self._write_errors.add(e.errno)
                log.warning("metrics.csv: a row was not written (%s); training goes on", e)
            return False

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class RunLogger:
    """Writes one training run's logs into ``run_dir``.

    Files: ``metrics.csv`` (one row per ``log`` call, env_frames first), ``config.yaml``
    (the resolved run config), ``git_rev.txt`` (code revision), ``tb/`` (TensorBoard
    events), ``wandb/`` (W&B run files, unless disabled) and ``learning_curve.png`` (at
    close). Resuming with ``start_frames`` > 0 keeps the CSV rows up to the checkpoint and
    hides later TensorBoard events, so the curve continues where the checkpoint left it.
    Pass the checkpointed ``wandb_id`` to continue the same W&B run.
    """

    return_key = "return_mean"
    loss_keys = ("loss", "loss/total", "total_loss")

    def __init__(
        self,
        run_dir: str | os.PathLike,
        cfg: LoggerConfig,
        config_dict: Mapping[str, Any],
        total_frames: int,
        start_frames: int = 0,
        wandb_id: str | None = None,
        run_name: str | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.cfg = cfg
        self.total_frames = int(total_frames)
        self.start_frames = int(start_frames)
        self.run_name = run_name or self.run_dir.name
        self.wandb_id = wandb_id or new_run_id()
        self._closed = False
        self._csv: _CsvLog | None = None
        self._tb: Any = None
        self._wandb: Any = None
        self._progress: Progress | None = None
        config = _plain(config_dict)
        try:
            self._write_metadata(config)
            if cfg.csv:
                self._csv = _CsvLog(self.run_dir / "metrics.csv", self.start_frames)
            if cfg.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                # purge_step hides events logged after the checkpoint by a crashed attempt.
                purge = self.start_frames + 1 if self.start_frames > 0 else None
                self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=purge, flush_secs=30)
            if cfg.wandb_mode != "disabled":
                self._wandb = self._init_wandb(config)
            self._progress = make_progress(
                cfg.progress, self.total_frames, self.start_frames, cfg.log_interval_s,
                self.run_name,
            )
        except BaseException:
            self.close(exit_code=1)  # release whatever was opened before the failure
            raise

    # ------------------------------------------------------------------ setup

    def _write_metadata(self, config: Any) -> None:
        import yaml

        text = yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
        write_atomic(self.run_dir / "config.yaml", text)
        write_atomic(self.run_dir / "git_rev.txt", git_revision() + "\n")

    def _init_wandb(self, config: Any) -> Any:
        try:
            import wandb
        except ImportError as e:
            raise ConfigError(
                f"logger.wandb_mode={self.cfg.wandb_mode} needs the wandb package "
                "(pip install wandb), or set logger.wandb_mode=disabled"
            ) from e
        cfg = self.cfg
        kwargs = dict(
            project=cfg.wandb_project, entity=cfg.wandb_entity, group=cfg.wandb_group,
            tags=cfg.wandb_tags or None, name=self.run_name, id=self.wandb_id, resume="allow",
            dir=str(self.run_dir),
            config=config if isinstance(config, dict) else {"config": config},
        )
        if self.cfg.wandb_mode == "offline":
            # wandb 0.31 sets up its usage telemetry (which posts to the W&B server) from the
            # process-wide settings before reading init's mode, and wandb-core reports its
            # own errors online: make both offline so an offline run never touches the network.
            os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
            wandb.setup(settings=wandb.Settings(mode="offline"))
        try:
            run = wandb.init(mode=self.cfg.wandb_mode, **kwargs)
        except Exception as e:
            if self.cfg.wandb_mode != "online":
                raise
            # A run should not die because the W&B server is unreachable.
            log.warning("wandb online init failed (%s); logging offline, `wandb sync` later", e)
            run = wandb.init(mode="offline", **kwargs)
        run.define_metric("env_frames")
        run.define_metric("*", step_metric="env_frames")
        return run

    # ------------------------------------------------------------------ logging

    def log(self, env_frames: int, metrics: Mapping[str, Any]) -> None:
        """Record ``metrics`` at ``env_frames`` in every enabled backend; update progress."""
        if self._closed:
            raise RuntimeError("RunLogger.log called after close()")
        env_frames = int(env_frames)
        values = {k: _as_float(k, v) for k, v in metrics.items() if k != "env_frames"}
        if self._csv is not None:
            self._csv.write(env_frames, values)
        if self._tb is not None:
            for key, value in values.items():
                if math.isfinite(value):
                    self._tb.add_scalar(key, value, global_step=env_frames)
        if self._wandb is not None:
            self._wandb.log({"env_frames": env_frames, **values})
        loss = next((values[k] for k in self.loss_keys if k in values), None)
        assert self._progress is not None
        self._progress.update(env_frames, values.get(self.return_key), loss)

    # ------------------------------------------------------------------ closing

    def close(self, exit_code: int = 0) -> None:
        """Stop progress, flush files, write learning_curve.png, finish wandb. Idempotent."""
        if self._closed:
            return
        self._closed = True
        steps = [
            ("progress", self._progress.close if self._progress is not None else None),
            ("metrics.csv", self._csv.close if self._csv is not None else None),
            ("tensorboard", self._tb.close if self._tb is not None else None),
            ("learning curve", self._plot if self.cfg.plot else None),
            ("wandb", (lambda: self._wandb.finish(exit_code=exit_code)) if self._wandb else None),
        ]
        for what, step in steps:
            if step is None:
                continue
            try:
                step()
            except Exception as e:  # one broken backend must not hide the others' data
                log.warning("closing %s failed: %s", what, e)

    def _plot(self) -> None:
        columns = self._csv.columns if self._csv is not None else None
        if not columns or self.return_key not in columns:
            return
        from rtrl_rl.plotting import plot_learning_curve

        csv_path, png_path = self.run_dir / "metrics.csv", self.run_dir / "learning_curve.png"
        plot_learning_curve(csv_path, png_path, y=self.return_key, title=self.run_name)

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(exit_code=0 if exc_type is None else 1)

