"""A suite's report: per task and method, POPGym's metric and ours, beside published scores.

Written to ``OUT/report/`` from the runs that are done (a partial grid gives a partial
report that says so):

- ``report.md``: per task, one row per method with the MMER (the maximum over training of
  the mean return of the last 100 episodes, POPGym's metric), the final return (mean of the
  last tenth of a run's logged values), each as an IQM over seeds with a 95% stratified
  bootstrap interval; frames to the task's threshold; wall time; parameter counts; then
  RTRL against BPTT at the same core and unroll, and a summary of normalised scores;
- ``curves_<task>.png``: every method's mean learning curve with a 95% bootstrap band;
- ``summary.json``: one row per task and method (the keys of ``Row``).

The threshold of a task is 90% of the way from the random policy's score to the best
method's MMER IQM. A seed that never reaches it counts its whole budget (a censored value,
so its frames are a lower bound). Comparisons bootstrap the difference of the means over
seeds; "tie" means the 95% interval holds zero.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rtrl_rl.bench.launcher import is_done, read_state, write_json
from rtrl_rl.bench.suite import RunSpec, SuiteConfig
from rtrl_rl.compare import (
    IGNORED_KEYS,
    IGNORED_PREFIXES,
    _axes,
    _save,
    curve_with_band,
    final_value,
    iqm_with_ci,
)
from rtrl_rl.run_logger import write_atomic
from rtrl_rl.sweep import Run, load_run

METRIC = "return_mean"
LAST_FRAC = 0.1
THRESHOLD_FRAC = 0.9
MIN_SEEDS = 2  # a verdict needs seeds on both sides to resample
REPORT_DIR = "report"


@dataclass
class Row:
    """One task and method, aggregated over its finished seeds."""

    task: str
    method: str
    core: str
    grad: str
    unroll: int
    seeds: int
    mmer_iqm: float
    mmer_ci: tuple[float, float]
    final_iqm: float
    final_ci: tuple[float, float]
    frames_to_threshold: float
    reached: int
    wall_s: float
    params_core: int
    params_total: int
    published_gru: float | None
    published_best: float | None
    random: float
    normalized: float | None
    normalized_max: float | None
    mmer_seeds: list[float]
    frames_seeds: list[float]
    twin: str
    """The run config less the gradient method and per-run keys: rows with equal ``twin``
    differ only in ``grad``, and only those are compared."""


#: Config keys that do not make two methods different (per-run, logging, the switch itself).
_NOT_METHOD = ("grad.name", "torch_threads", *IGNORED_KEYS)


def twin_key(config: dict[str, Any]) -> str:
    """``config`` (flattened) without the keys in ``_NOT_METHOD`` or under ``logger.``."""
    kept = {k: v for k, v in config.items()
            if k not in _NOT_METHOD and not k.startswith(IGNORED_PREFIXES)}
    return repr(sorted(kept.items(), key=lambda kv: kv[0]))


def _bootstrap_diff(a: np.ndarray, b: np.ndarray, reps: int, seed: int = 0) -> tuple[float, ...]:
    """mean(a) - mean(b) with a 95% percentile interval, resampling seeds within each."""
    rng = np.random.default_rng(seed)
    da = a[rng.integers(0, len(a), (reps, len(a)))].mean(1)
    db = b[rng.integers(0, len(b), (reps, len(b)))].mean(1)
    low, high = np.percentile(da - db, [2.5, 97.5])
    return float(a.mean() - b.mean()), float(low), float(high)


def _verdict(low: float, high: float, better: str, worse: str, seeds: int) -> str:
    if seeds < MIN_SEEDS:
        return f"– (< {MIN_SEEDS} seeds)"
    return better if low > 0 else worse if high < 0 else "tie"


def frames_to(run: Run, threshold: float, budget: int) -> float:
    """The first logged frame at which the curve reaches ``threshold`` (else ``budget``)."""
    hit = np.nonzero(run.values >= threshold)[0]
    return float(run.frames[hit[0]]) if len(hit) else float(budget)


def _num(x: float | None, digits: int = 3) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _frames(x: float) -> str:
    return f"{x / 1e6:.2f}M"


def build_rows(suite: SuiteConfig, runs: list[RunSpec], random: dict[str, float],
               params: dict[tuple[str, str], tuple[int, int]],
               ) -> tuple[list[Row], dict[tuple[str, str], list[Run]], dict[str, float]]:
    """The rows of every task and method with at least one finished seed, the loaded runs
    by ``(task, method)`` for the plots, and each task's threshold."""
    loaded: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        if is_done(r):
            loaded.setdefault((r.task, r.method), []).append(load_run(r.run_dir, METRIC))
    rows: list[Row] = []
    thresholds: dict[str, float] = {}
    for task in suite.tasks:
        methods = [m for m in suite.methods_of(task) if (task, m) in loaded]
        if not methods:
            continue
        mmers = {m: np.array([r.values.max() for r in loaded[task, m]]) for m in methods}
        finals = {m: np.array([final_value(r.values, LAST_FRAC) for r in loaded[task, m]])
                  for m in methods}
        mmer_est = iqm_with_ci(mmers, suite.reps)
        final_est = iqm_with_ci(finals, suite.reps)
        best = max(mmer_est[m][0] for m in methods)
        floor = random[task]
        threshold = thresholds[task] = floor + THRESHOLD_FRAC * (best - floor)
        spec = suite.task_specs[task]
        budget = suite.budget(task)
        for m in methods:
            group = loaded[task, m]
            cfg = group[0].config
            hits = np.array([frames_to(r, threshold, budget) for r in group])
            walls = [float(read_state(r.path).get("wall_s", math.nan)) for r in group]
            known = [v for v in (spec.published_best, spec.published_gru,
                                 *spec.published.values()) if v is not None]
            pub = max(known) if known else None  # the best published score known
            rows.append(Row(
                task=task, method=m, core=str(cfg.get("model.core")),
                grad=str(cfg.get("grad.name")), unroll=int(cfg.get("runner.unroll", 0)),
                seeds=len(group), mmer_iqm=mmer_est[m][0], mmer_ci=mmer_est[m][1:],
                final_iqm=final_est[m][0], final_ci=final_est[m][1:],
                frames_to_threshold=float(np.median(hits)),
                reached=int(sum(r.values.max() >= threshold for r in group)),
                wall_s=float(np.median(walls)), params_core=params[task, m][0],
                params_total=params[task, m][1], published_gru=spec.published_gru,
                published_best=pub, random=floor,
                normalized=(mmer_est[m][0] - floor) / (pub - floor)
                if pub is not None and pub != floor else None,
                normalized_max=(mmer_est[m][0] - floor) / (spec.max_return - floor)
                if spec.max_return is not None and spec.max_return != floor else None,
                mmer_seeds=mmers[m].tolist(), frames_seeds=hits.tolist(),
                twin=twin_key(cfg)))
    return rows, loaded, thresholds


def comparisons(rows: list[Row], reps: int) -> list[dict[str, Any]]:
    """RTRL against BPTT for each task and pair of methods that differ only in ``grad``."""
    out = []
    for r in rows:
        if r.grad != "rtrl":
            continue
        for b in rows:
            if (b.task, b.grad, b.twin) != (r.task, "bptt", r.twin):
                continue
            m = _bootstrap_diff(np.array(r.mmer_seeds), np.array(b.mmer_seeds), reps)
            f = _bootstrap_diff(np.array(b.frames_seeds), np.array(r.frames_seeds), reps)
            n = min(r.seeds, b.seeds)
            out.append({"task": r.task, "core": r.core, "unroll": r.unroll,
                        "rtrl": r.method, "bptt": b.method, "seeds": n,
                        "mmer_diff": m[0], "mmer_ci": m[1:],
                        "mmer_winner": _verdict(m[1], m[2], "rtrl", "bptt", n),
                        "frames_diff": f[0], "frames_ci": f[1:],
                        "frames_winner": _verdict(f[1], f[2], "rtrl", "bptt", n)})
    return out


def _task_table(rows: list[Row], threshold: float) -> str:
    lines = ["| method | core | grad | T | seeds | MMER IQM [95% CI] | final IQM [95% CI] | "
             f"frames to {_num(threshold, 2)} (reached) | wall (median) | params core / all |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r.method} | {r.core} | {r.grad} | {r.unroll} | {r.seeds} | "
            f"{_num(r.mmer_iqm)} [{_num(r.mmer_ci[0])}, {_num(r.mmer_ci[1])}] | "
            f"{_num(r.final_iqm)} [{_num(r.final_ci[0])}, {_num(r.final_ci[1])}] | "
            f"{_frames(r.frames_to_threshold)} ({r.reached}/{r.seeds}) | "
            f"{r.wall_s / 60:.1f} min | {r.params_core:,} / {r.params_total:,} |")
    return "\n".join(lines)


def _comparison_table(comps: list[dict[str, Any]]) -> str:
    lines = ["| task | core | T | rtrl method | bptt method | seeds | MMER rtrl − bptt [95% CI] "
             "| better MMER | frames saved by rtrl [95% CI] | faster |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in comps:
        lines.append(
            f"| {c['task']} | {c['core']} | {c['unroll']} | {c['rtrl']} | {c['bptt']} | "
            f"{c['seeds']} | "
            f"{c['mmer_diff']:+.3f} [{c['mmer_ci'][0]:+.3f}, {c['mmer_ci'][1]:+.3f}] | "
            f"{c['mmer_winner']} | {_frames(c['frames_diff'])} "
            f"[{_frames(c['frames_ci'][0])}, {_frames(c['frames_ci'][1])}] | "
            f"{c['frames_winner']} |")
    return "\n".join(lines)


def _summary_table(rows: list[Row], tasks: list[str], key: str) -> str:
    by = {(r.task, r.method): r for r in rows}
    methods = list(dict.fromkeys(r.method for r in rows))
    lines = ["| method | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for m in methods:
        cells = []
        for t in tasks:
            r = by.get((t, m))
            cells.append("–" if r is None else _num(getattr(r, key), 2))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_task(task: str, groups: dict[str, list[Run]], path: Path, reps: int) -> None:
    ax = _axes(7, 4.5)
    for method, runs in groups.items():
        grid, mean, low, high = curve_with_band(runs, reps)
        (line,) = ax.plot(grid, mean, label=f"{method} (n={len(runs)})")
        ax.fill_between(grid, low, high, color=line.get_color(), alpha=0.2)
    ax.set_ylabel("mean return of the last 100 episodes")
    ax.legend(fontsize=7)
    _save(ax, path, task, "env frames")


def write_report(suite: SuiteConfig, runs: list[RunSpec], random: dict[str, float],
                 params: dict[tuple[str, str], tuple[int, int]], command: str) -> Path:
    """Write ``report.md``, ``summary.json`` and the plots; return the report dir."""
    out = Path(suite.out) / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    rows, loaded, thresholds = build_rows(suite, runs, random, params)
    comps = comparisons(rows, suite.reps)
    done = sum(is_done(r) for r in runs)
    md = [f"# Suite `{suite.name}`: {done} of {len(runs)} runs finished", "",
          f"Command: `{command}`", "",
          f"Metric: `{METRIC}`, the mean return of the last 100 episodes. MMER is its maximum "
          f"over training; final is the mean of the last {LAST_FRAC:g} of a run's logged "
          "values. IQM over seeds with a 95% stratified bootstrap interval. The threshold is "
          f"{THRESHOLD_FRAC:.0%} of the way from the random policy to the best method's MMER; "
          "a seed that never reaches it counts its whole budget.", ""]
    for task in suite.tasks:
        task_rows = [r for r in rows if r.task == task]
        if not task_rows:
            continue
        spec = suite.task_specs[task]
        pub = ", ".join(p for p in (
            f"GRU {spec.published_gru:g}" if spec.published_gru is not None else "",
            f"best {spec.published_best:g}" + (f" ({spec.published_best_model})"
                                               if spec.published_best_model else "")
            if spec.published_best is not None else "",
            *(f"{who} {score:g}" for who, score in spec.published.items())) if p) or "none known"
        md += [f"## {task}", "",
               f"Budget {_frames(suite.budget(task))} frames per run; random policy "
               f"{_num(random[task])}; published MMER: {pub}"
               + (f" ({spec.published_source})" if spec.published_source else "") + ".", "",
               _task_table(task_rows, thresholds[task]), "", f"![{task}](curves_{task}.png)", ""]
        plot_task(task, {m: loaded[task, m] for m in suite.methods_of(task)
                         if (task, m) in loaded},
                  out / f"curves_{task}.png", suite.reps)
    if comps:
        md += ["## RTRL against BPTT at the same core and unroll", "",
               "Differences of the means over seeds, with 95% bootstrap intervals; 'tie' "
               "when the interval holds zero. Frames saved: BPTT's frames to the threshold "
               "minus RTRL's.", "", _comparison_table(comps), ""]
    md += ["## Normalised MMER", "",
           "(MMER IQM − random) / (best published score known − random), the best of the "
           "published scores; – where none is known.", "",
           _summary_table(rows, suite.tasks, "normalized"), "",
           "(MMER IQM − random) / (the task's highest possible return − random):", "",
           _summary_table(rows, suite.tasks, "normalized_max"), ""]
    write_atomic(out / "report.md", "\n".join(md))
    summary = {"suite": suite.name, "runs": len(runs), "finished": done, "command": command,
               "rows": [asdict(r) for r in rows], "comparisons": comps}
    write_json(out / "summary.json", summary)
    return out
