"""Sweeps: the W&B group of a Hydra multirun's jobs, and reading the run dirs a sweep wrote.

In a multirun (``rtrl-train -m ...``, including ``+sweep=optuna`` and ``+sweep=slurm``) every
job logs its own W&B run; ``hydra_main`` calls ``apply_sweep_wandb_group`` so that all runs
of one sweep share a W&B group named after the sweep directory, unless the user set
``logger.wandb_group``. Single runs are left as they are.

A run dir (one job) holds ``metrics.csv`` (env_frames first) and ``config.yaml`` (the resolved
config); ``find_run_dirs`` locates them under sweep dirs and ``load_run`` reads one, for
``rtrl-compare``. Problems with them are one-line ``RunDirError``s.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FRAMES = "env_frames"
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class RunDirError(ValueError):
    """A missing, empty or unreadable run dir; the message is one line naming the path."""


def sweep_group_name(sweep_dir: str | Path) -> str:
    """The W&B group for the sweep in ``sweep_dir``: its directory name.

    Hydra's default layout ``multirun/<date>/<time>`` gives ``<date>_<time>`` so sweeps
    started at the same time of day on different days do not share a group.
    """
    path = Path(str(sweep_dir))
    name = path.name or str(path)
    if _DATE.fullmatch(path.parent.name):
        return f"{path.parent.name}_{name}"
    return name


def apply_sweep_wandb_group(cfg: Any) -> str | None:
    """In a Hydra multirun, set ``cfg.logger.wandb_group`` to the sweep's name if unset.

    ``cfg`` is the job's config (a DictConfig). Returns the group set, or None when nothing
    changed: not a multirun, no Hydra context, no logger section, or a group already given.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    logger = cfg.get("logger")
    if logger is None or logger.get("wandb_group"):
        return None
    group = sweep_group_name(hydra_cfg.sweep.dir)
    logger.wandb_group = group
    return group


@dataclass
class Run:
    """One run dir: its flattened config and its finite (env_frames, metric) curve."""

    path: Path
    config: dict[str, Any]
    frames: np.ndarray
    values: np.ndarray


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` -> ``{"a.b": 1, "c": (1, 2)}`` (lists become tuples)."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(tree, list):
        tree = tuple(tuple(v) if isinstance(v, list) else v for v in tree)
    return {prefix[:-1]: tree}


def _is_run(path: Path) -> bool:
    return (path / "metrics.csv").is_file() and (path / "config.yaml").is_file()


def find_run_dirs(
    paths: list[str | os.PathLike], skipped: list[Path] | None = None
) -> list[Path]:
    """Run dirs at or under each path (sorted, without duplicates); ``RunDirError`` for a
    path that does not exist or holds none. Dirs of runs that have not logged yet (config.yaml
    and git_rev.txt, no metrics.csv) are appended to ``skipped`` if given."""
    found: dict[Path, None] = {}
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise RunDirError(f"path does not exist: {raw}")
        if _is_run(path):
            found[path.resolve()] = None
            continue
        if not path.is_dir():
            raise RunDirError(f"not a run dir or a directory of runs: {raw}")
        under = []
        for root, dirs, files in os.walk(path):
            if _is_run(Path(root)):
                under.append(Path(root).resolve())
                dirs.clear()  # checkpoints/, tb/, wandb/ hold no runs
            elif "config.yaml" in files and "git_rev.txt" in files and skipped is not None:
                skipped.append(Path(root))
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if not under:
            raise RunDirError(f"no run dirs (with metrics.csv and config.yaml) under {raw}")
        found.update(dict.fromkeys(sorted(under)))
    return list(found)


def load_run(path: Path, metric: str) -> Run:
    """Read a run dir's config.yaml and the finite (env_frames, metric) rows of metrics.csv."""
    import pandas as pd
    import yaml

    try:
        config = yaml.safe_load((path / "config.yaml").read_text())
    except yaml.YAMLError:
        config = None
    if not isinstance(config, dict):  # unreadable, or not the mapping RunLogger writes
        raise RunDirError(f"{path}/config.yaml is not a YAML mapping")
    try:
        table = pd.read_csv(path / "metrics.csv")
    except pd.errors.EmptyDataError:
        raise RunDirError(f"{path}/metrics.csv is empty") from None
    for column in (FRAMES, metric):
        if column not in table.columns:
            cols = ", ".join(str(c) for c in table.columns)
            raise RunDirError(f"{path}/metrics.csv has no column '{column}' (columns: {cols})")
    curve = pd.DataFrame({c: pd.to_numeric(table[c], errors="coerce").astype(float)
                          for c in (FRAMES, metric)})
    curve = curve[np.isfinite(curve.to_numpy()).all(axis=1)]
    curve = curve.drop_duplicates(FRAMES, keep="last").sort_values(FRAMES)
    if curve.empty:
        raise RunDirError(f"{path}/metrics.csv has no logged values of '{metric}'")
    return Run(path, flatten(config), curve[FRAMES].to_numpy(), curve[metric].to_numpy())


def discrete_overrides(config_dir: str, overrides: list[str]) -> list[Any]:
    """A multirun's overrides (Hydra ``Override`` objects) with the basic sweeper's
    ``hydra.sweeper.params`` of the composed config added; continuous ranges (Optuna's
    ``interval``) are left out, for the sweeper to sample."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    fixed = [o.input_line for o in parser.parse_overrides(overrides)
             if not o.is_sweep_override()]
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        sweeper = compose("config", overrides=fixed, return_hydra_config=True).hydra.sweeper
    params = []
    if str(sweeper.get("_target_", "")).endswith("BasicSweeper"):
        params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    combined = parser.parse_overrides(params + overrides)
    return [o for o in combined if not o.is_sweep_override() or o.is_discrete_sweep()]


def jobs(config_dir: str, overrides: list[str], multirun: bool) -> list[list[str]]:
    """The overrides of each job a command line runs: itself for a single run; for a
    multirun, every combination of its discrete sweeps (``discrete_overrides``). Raises
    Hydra's or OmegaConf's exception for a bad override."""
    if not multirun:
        return [overrides]
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return BasicSweeper.split_arguments(discrete_overrides(config_dir, overrides), None)[0]
