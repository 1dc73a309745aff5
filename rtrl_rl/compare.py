"""``rtrl-compare PATH...``: compare training runs, e.g. the jobs of a sweep.

    rtrl-compare multirun/2026-11-21/20-54-55            # a sweep dir: every run under it
    rtrl-compare runs/a runs/b runs/c --out compare/     # single run dirs
    rtrl-compare SWEEP --group-by grad.name --last-frac 0.2 --metric return_mean
    rtrl-compare multirun/copy/2026-12-02/15-31-08       # rtrl-copy runs: seq_acc by default

A run dir is any directory holding ``metrics.csv`` and ``config.yaml`` (found recursively,
hidden dirs skipped). Runs are grouped by the dotted config keys whose values differ between
them (``grad.name``, ``runner.unroll``, ...), ignoring ``IGNORED_KEYS`` and ``logger.*``;
``seed`` is the replicate axis. Written to ``--out`` (default: the runs' common parent dir,
or ./compare if that is the root), and the table printed:

- ``learning_curves.png``: per group, the mean over seeds (each run interpolated onto the
  frame range all runs of the group cover) with a 95% bootstrap band;
- ``final_performance.png``: per group, the IQM of the final performance (mean of the last
  ``--last-frac`` of a run's logged values) with a 95% stratified bootstrap CI (rliable);
- ``results.md`` / ``results.csv``: group, n seeds, final mean ± std, IQM [CI], frames.

Runs of different envs (``ENV_KEYS``) are compared with a warning (return scales differ)
under automatic grouping, which then includes the env keys; it is an error when
``--group-by`` would pool them in one group. Errors: one line, exit status 2.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rtrl_rl.sweep import FRAMES, Run, RunDirError, find_run_dirs, load_run

PROG = "rtrl-compare"
#: ``--metric`` by default: the first of these in the first run's metrics.csv (training runs
#: log return_mean, rtrl-copy runs seq_acc); return_mean when it has none of them.
DEFAULT_METRICS = ("return_mean", "seq_acc")
IGNORED_KEYS = ("seed", "run_dir", "name", "resume", "checkpoint_interval_s", "keep_checkpoints")
IGNORED_PREFIXES = ("logger.",)
ENV_KEYS = ("env.family", "env.game", "env.id")
MISSING = "-"  # the value of a key a run's config does not have
CURVE_POINTS = 200


class CompareError(Exception):
    """A user-facing problem with the inputs; the message is one line."""


@dataclass
class Group:
    """Runs sharing the values of the grouping keys; their seeds are replicates."""

    label: str
    values: dict[str, Any]
    runs: list[Run]
    finals: np.ndarray
    iqm: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan


def final_value(values: np.ndarray, last_frac: float) -> float:
    """Mean of the last ``ceil(last_frac * n)`` values (at least 1) of ``values``."""
    n = len(values)
    k = min(n, max(1, math.ceil(last_frac * n - 1e-9)))  # 1e-9: 0.1 * 30 is 3.0000000000000004
    return float(np.mean(values[n - k:]))


def _ignored(key: str) -> bool:
    return key in IGNORED_KEYS or key.startswith(IGNORED_PREFIXES)


def differing_keys(runs: list[Run]) -> list[str]:
    """Config keys (not ignored) whose value is not the same in every run, sorted."""
    keys = sorted({k for run in runs for k in run.config if not _ignored(k)})
    return [k for k in keys if len({repr(r.config.get(k, MISSING)) for r in runs}) > 1]


def grouping_keys(runs: list[Run]) -> list[str]:
    """The differing keys, less those a differing ``<group>.name`` decides: with runs of
    ``algo.name=impala`` and ``ppo``, the ``algo.*`` keys each learner's config file sets
    (constant for each name) add nothing to the grouping, and are left out of the labels."""
    differ = differing_keys(runs)
    names = [k for k in differ if k.endswith(".name")]
    drop = set()
    for name in names:
        prefix = name[: -len("name")]
        by_name: dict[str, list[Run]] = {}
        for r in runs:
            by_name.setdefault(repr(r.config.get(name, MISSING)), []).append(r)
        for k in differ:
            if k != name and k.startswith(prefix) and all(
                    len({repr(r.config.get(k, MISSING)) for r in group}) == 1
                    for group in by_name.values()):
                drop.add(k)
    return [k for k in differ if k not in drop]


def expand_group_by(runs: list[Run], wanted: list[str]) -> list[str]:
    """``--group-by`` keys as config keys: exact keys, or a prefix (``env``) for its differing
    sub-keys. ``CompareError`` for a key that no run has."""
    differ = differing_keys(runs)
    known = {k for run in runs for k in run.config}
    keys: list[str] = []
    for want in wanted:
        if want in known:
            keys.append(want)
        elif any(k.startswith(want + ".") for k in known):
            keys.extend(k for k in differ if k.startswith(want + "."))
        else:
            raise CompareError(f"--group-by key '{want}' is in no run's config.yaml")
    return list(dict.fromkeys(keys))


def _env_name(run: Run) -> str:
    return "/".join(str(run.config[k]) for k in ENV_KEYS if k in run.config) or "unknown"


def check_envs(runs: list[Run], keys: list[str], explicit: bool) -> None:
    """Error if grouping by ``keys`` pools runs of different envs; warn if envs are mixed."""
    envs = sorted({_env_name(r) for r in runs})
    if len(envs) < 2:
        return
    uncovered = [k for k in ENV_KEYS if k in differing_keys(runs) and k not in keys]
    if explicit and uncovered:
        raise CompareError(
            f"runs of different envs ({', '.join(envs)}) would be pooled in one group; "
            f"add {','.join(uncovered)} (or env) to --group-by")
    _warn(f"comparing runs of {len(envs)} envs ({', '.join(envs)}): returns differ in scale")


def _fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, tuple):
        return "[" + ", ".join(_fmt_value(v) for v in value) + "]"
    return str(value)


def _sort_key(values: tuple) -> tuple:
    return tuple((0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v)) for v in values)


def group_runs(runs: list[Run], keys: list[str], last_frac: float) -> list[Group]:
    """Groups of runs with equal values of ``keys``, sorted by those values.

    Labels read ``grad=rtrl, runner.unroll=5`` (a trailing ``.name`` is dropped), or
    ``all runs`` when there are no keys.
    """
    buckets: dict[tuple, list[Run]] = {}
    for run in runs:
        buckets.setdefault(tuple(run.config.get(k, MISSING) for k in keys), []).append(run)
    groups = []
    for values in sorted(buckets, key=_sort_key):
        members = sorted(buckets[values], key=lambda r: _sort_key((r.config.get("seed"), r.path)))
        pairs = dict(zip(keys, values, strict=True))
        label = ", ".join(f"{k.removesuffix('.name')}={_fmt_value(v)}" for k, v in pairs.items())
        label = label or "all runs"
        seeds = [r.config.get("seed") for r in members]
        if len(set(map(repr, seeds))) < len(seeds):
            _warn(f"group '{label}' has runs with the same seed: {sorted(map(str, seeds))}")
        finals = np.array([final_value(r.values, last_frac) for r in members])
        groups.append(Group(label, pairs, members, finals))
    return groups


def _rliable_library() -> Any:
    """``rliable.library``, or None if it does not import (arch 7.x fails with pandas 3)."""
    try:
        from rliable import library
    except Exception as e:  # arch<8 + pandas>=3: TypeError from deprecate_kwarg at import
        _warn(f"rliable.library unavailable ({type(e).__name__}: {e}); using a NumPy "
              "percentile bootstrap (the same estimator for one task)")
        return None
    return library


def iqm_with_ci(finals: dict[str, np.ndarray], reps: int, seed: int = 0) -> dict[str, tuple]:
    """``{label: (IQM, CI low, CI high)}``: IQM over seeds with a 95% stratified bootstrap CI.

    Uses ``rliable.library.get_interval_estimates`` with ``rliable.metrics.aggregate_iqm``
    (one task, so the strata are the seeds). A single seed gives a zero-width interval.
    """
    from rliable.metrics import aggregate_iqm

    def iqm(scores: np.ndarray) -> np.ndarray:
        return np.array([aggregate_iqm(scores)])

    library = _rliable_library()
    out = {}
    for label, values in finals.items():
        scores = np.asarray(values, dtype=float).reshape(-1, 1)  # (runs, tasks=1)
        point = float(iqm(scores)[0])
        if len(scores) < 2:
            out[label] = (point, point, point)
        elif library is not None:
            # arch deprecates random_state and may draw from NumPy's global generator:
            # seed that too (and restore it) so that the intervals are reproducible.
            saved = np.random.get_state()
            np.random.seed(seed)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    _, ci = library.get_interval_estimates(
                        {label: scores}, iqm, reps=reps,
                        random_state=np.random.RandomState(seed))
            finally:
                np.random.set_state(saved)
            out[label] = (point, float(ci[label][0, 0]), float(ci[label][1, 0]))
        else:
            idx = np.random.default_rng(seed).integers(0, len(scores), (reps, len(scores)))
            boot = [iqm(scores[i])[0] for i in idx]
            low, high = np.percentile(boot, [2.5, 97.5])
            out[label] = (point, float(low), float(high))
    return out


def curve_with_band(runs: list[Run], reps: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """(grid, mean, low, high): runs interpolated onto the frames all of them cover, their
    mean, and a 95% percentile bootstrap band of the mean over runs."""
    start = max(r.frames[0] for r in runs)
    stop = min(r.frames[-1] for r in runs)
    if stop < start:  # no common range (runs of very different lengths): use the longest
        start, stop = min(r.frames[0] for r in runs), max(r.frames[-1] for r in runs)
    grid = np.unique(np.linspace(start, stop, CURVE_POINTS))
    curves = np.stack([np.interp(grid, r.frames, r.values) for r in runs])
    mean = curves.mean(axis=0)
    n = len(runs)
    weights = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=reps) / n
    boot = weights @ curves  # (reps, points): the mean of each resample of the runs
    low, high = np.percentile(boot, [2.5, 97.5], axis=0)
    return grid, mean, low, high


def _axes(width: float, height: float) -> Any:
    """A fresh Agg figure's axes (no pyplot: no global backend state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig.add_subplot()


def _save(ax: Any, path: Path, title: str, xlabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.figure.tight_layout()
    ax.figure.savefig(path, format="png")


def plot_learning_curves(groups: list[Group], path: Path, metric: str, reps: int) -> None:
    """learning_curves.png: mean over seeds with a 95% bootstrap band, one line per group."""
    ax = _axes(8, 4.8)
    for i, group in enumerate(groups):
        grid, mean, low, high = curve_with_band(group.runs, reps, seed=i)
        label = f"{group.label} (n={len(group.runs)})"
        ax.plot(grid, mean, color=f"C{i}", label=label, marker="o" if len(grid) < 3 else None)
        ax.fill_between(grid, low, high, color=f"C{i}", alpha=0.2, linewidth=0)
    ax.set_ylabel(metric)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    _save(ax, path, f"{metric}: mean over seeds, 95% bootstrap CI", FRAMES)


def plot_final(groups: list[Group], path: Path, metric: str, last_frac: float) -> None:
    """final_performance.png: per group the IQM (tick), its 95% CI (bar) and each seed (dots)."""
    ax = _axes(8, 1.2 + 0.6 * len(groups))
    for i, group in enumerate(groups):
        y = len(groups) - 1 - i
        width = max(group.ci_high - group.ci_low, 1e-12)
        ax.barh(y, width, left=group.ci_low, height=0.6, color=f"C{i}", alpha=0.35)
        ax.vlines(group.iqm, y - 0.3, y + 0.3, color="black", linewidth=2)
        ax.scatter(group.finals, np.full(len(group.finals), y), color=f"C{i}", s=14, zorder=3)
    ax.set_yticks(range(len(groups)))
    ax.set_yticklabels([f"{g.label} (n={len(g.runs)})" for g in reversed(groups)])
    ax.margins(x=0.08)
    ax.grid(True, axis="x", alpha=0.3)
    _save(ax, path, "IQM with 95% stratified bootstrap CI; dots: seeds",
          f"final {metric} (mean of the last {last_frac:.0%} of logged values)")


def _num(x: float) -> str:
    return "nan" if not math.isfinite(x) else f"{x:.4g}"


def results_table(groups: list[Group]) -> tuple[Any, str]:
    """(DataFrame for results.csv, markdown table): one row per group."""
    import pandas as pd

    rows = []
    lines = ["| group | n seeds | final (mean ± std) | IQM [95% CI] | frames |",
             "|---|---:|---:|---:|---:|"]
    for g in groups:
        frames = [int(r.frames[-1]) for r in g.runs]
        std = float(np.std(g.finals, ddof=1)) if len(g.finals) > 1 else math.nan
        row = {"group": g.label, "n_seeds": len(g.runs), "final_mean": float(np.mean(g.finals)),
               "final_std": std, "iqm": g.iqm, "iqm_ci_low": g.ci_low, "iqm_ci_high": g.ci_high,
               "frames_min": min(frames), "frames_max": max(frames)}
        rows.append({**row, **{k: _fmt_value(v) for k, v in g.values.items()}})
        final = _num(row["final_mean"]) + (f" ± {_num(std)}" if len(g.finals) > 1 else "")
        span = f"{min(frames):,}" + (f"–{max(frames):,}" if max(frames) != min(frames) else "")
        lines.append(f"| {g.label} | {len(g.runs)} | {final} | {_num(g.iqm)} "
                     f"[{_num(g.ci_low)}, {_num(g.ci_high)}] | {span} |")
    return pd.DataFrame(rows), "\n".join(lines) + "\n"


def default_out(runs: list[Run]) -> Path:
    """The runs' common parent directory, or ./compare when they share only the root."""
    common = Path(os.path.commonpath([str(r.path.parent) for r in runs]))
    return Path("compare") if common == Path(common.anchor) else common


def default_metric(run_dirs: list[Path]) -> str:
    """The first of ``DEFAULT_METRICS`` that the first run's metrics.csv header names."""
    try:
        with open(run_dirs[0] / "metrics.csv", newline="") as f:
            header = next(csv.reader(f), [])
    except OSError:
        header = []
    return next((m for m in DEFAULT_METRICS if m in header), DEFAULT_METRICS[0])


def _warn(msg: str) -> None:
    print(f"{PROG}: warning: {msg}", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0].split(": ", 1)[1])
    p.add_argument("paths", nargs="+", metavar="PATH", help="run dirs or dirs of runs (sweeps)")
    p.add_argument("--metric", default=None,
                   help="metrics.csv column (return_mean; seq_acc for rtrl-copy runs)")
    p.add_argument("--group-by", default=None, metavar="KEYS",
                   help="comma-separated config keys or prefixes (default: the keys that differ)")
    p.add_argument("--last-frac", type=float, default=0.1,
                   help="final performance = mean of this last fraction of values (0.1)")
    p.add_argument("--reps", type=int, default=5000, help="bootstrap resamples (5000)")
    p.add_argument("--out", default=None, help="output dir (default: the runs' common parent)")
    return p


def compare(args: argparse.Namespace) -> Path:
    """Load, group, compute and write everything; returns the output dir."""
    if not 0 < args.last_frac <= 1:
        raise CompareError(f"--last-frac must be in (0, 1], got {args.last_frac}")
    if args.reps < 1:
        raise CompareError(f"--reps must be >= 1, got {args.reps}")
    skipped: list[Path] = []
    run_dirs = find_run_dirs(args.paths, skipped)
    args.metric = args.metric or default_metric(run_dirs)
    runs = [load_run(p, args.metric) for p in run_dirs]
    for path in skipped:
        _warn(f"skipping {path}: it has config.yaml but no metrics.csv yet")
    explicit = args.group_by is not None
    wanted = [k.strip() for k in (args.group_by or "").split(",") if k.strip()]
    keys = expand_group_by(runs, wanted) if explicit else grouping_keys(runs)
    check_envs(runs, keys, explicit)
    groups = group_runs(runs, keys, args.last_frac)
    estimates = iqm_with_ci({g.label: g.finals for g in groups}, args.reps)
    for g in groups:
        g.iqm, g.ci_low, g.ci_high = estimates[g.label]

    out = Path(args.out) if args.out else default_out(runs)
    out.mkdir(parents=True, exist_ok=True)
    table, markdown = results_table(groups)
    table.to_csv(out / "results.csv", index=False)
    header = (f"# {args.metric}: {len(runs)} runs in {len(groups)} groups\n\n"
              f"final = mean of the last {args.last_frac:g} of logged values per run; "
              "IQM and 95% stratified bootstrap CI over seeds.\n\n")
    (out / "results.md").write_text(header + markdown)
    plot_learning_curves(groups, out / "learning_curves.png", args.metric, args.reps)
    plot_final(groups, out / "final_performance.png", args.metric, args.last_frac)
    print(markdown, end="")
    return out


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``rtrl-compare``; exits 2 with one line on bad input."""
    args = _parser().parse_args(argv)
    try:
        out = compare(args)
    except (CompareError, RunDirError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote results.md, results.csv, learning_curves.png, final_performance.png to {out}")


if __name__ == "__main__":
    main()
