"""Copy-task scan: where does each gradient method stop solving the copy task?

A wrapper over the Hydra multirun preset ``configs/copy/experiment/scan.yaml``: for every
pattern length ``L`` in ``--lengths`` and every method in ``--grads``, ``rtrl-copy -m
+experiment=scan ...`` trains one eLSTM with the same budget, the same chunk ``M`` (update
every ``M`` steps) and the same seed into its own run dir under ``--sweep-dir``; the wrapper
then reads each run's ``results.json`` and prints where each method fails.

    python scripts/copy_scan.py                                # the default scan
    python scripts/copy_scan.py --lengths 5,10,20,50 --json copy_scan.json
    python scripts/copy_scan.py --grads rtrl,bptt steps=40000 hidden_size=256
    python scripts/copy_scan.py --from multirun/copy_scan/2026-12-02/10-00-00  # no training

``key=value`` arguments are copy-task options applied to every run (``grad`` and
``pattern_length`` are set by the scan). Every run's config is checked before the first one
starts. A run counts as solved when its whole-sequence accuracy is >= ``--solved``; "fails
at" is the smallest ``L`` that is not solved. Runs stop early once a periodic evaluation is
solved (``stop_at``), so only failing runs use the whole budget. The default scan (12 runs,
15000 steps per stream each) takes about 3 minutes of wall time on one CPU thread.

``--jobs N`` runs N ``rtrl-copy -m`` processes at once over disjoint parts of the grid (the
lengths dealt round-robin, or one process per run when N exceeds the number of lengths),
each part in ``<sweep dir>/part<i>``; with ``--jobs 1`` it is one multirun in the sweep dir.
``rtrl-compare <sweep dir>`` reads the same run dirs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rtrl_rl.diagnostics.copy_config import GRADS, compose_many
from rtrl_rl.errors import ConfigError

APP = [sys.executable, "-m", "rtrl_rl.diagnostics.copy_task", "-m"]
AUTO_FORGET_BIAS = "forget_bias='${auto_forget_bias:${pattern_length}}'"  # ln(L + 1)


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got '{text}'") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"lengths must be >= 1, got '{text}'")
    return values


def _grads(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    bad = [n for n in names if n not in GRADS]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"unknown grad {bad}; choices: {', '.join(GRADS)}")
    return names


def fails_at(rows: list[dict[str, Any]], grad: str, key: str, bar: float) -> int | None:
    """Smallest pattern length whose ``key`` accuracy is below ``bar`` for ``grad``."""
    failed = [r["pattern_length"] for r in rows if r["grad"] == grad and r[key] < bar]
    return min(failed) if failed else None


def table(rows: list[dict[str, Any]], lengths: list[int], grads: list[str], bar: float) -> str:
    """Rows ``L``, columns per grad ``bit / seq`` accuracy (``*``: solved), then "fails at"."""
    by = {(r["pattern_length"], r["grad"]): r for r in rows}
    varied = any("seq_acc_at_L" in r for r in rows)
    width = 34 if varied else 24
    lines = ["L".rjust(5) + "majority".rjust(10) + "".join(g.rjust(width) for g in grads)]
    for length in lengths:
        cells = []
        for g in grads:
            r = by[(length, g)]
            mark = "*" if r["seq_acc"] >= bar else " "
            at_l = f" @L {r['seq_acc_at_L']:.3f}" if "seq_acc_at_L" in r else ""
            cells.append(f"{r['bit_acc']:.3f} / {r['seq_acc']:.3f}{mark}{at_l} {r['train_s']:4.0f}s"
                         .rjust(width))
        majority = f"{by[(length, grads[0])]['majority_bit_acc']:.3f}".rjust(10)
        lines.append(str(length).rjust(5) + majority + "".join(cells))
    cells = []
    for g in grads:
        cells.append(" ".join(f"{by[(length, g)]['solved_up_to']}" for length in lengths)
                     .rjust(width))
    lines.append("solved up to".ljust(15) + "".join(cells))
    for key, name in (("seq_acc", "fails at (seq)"), ("bit_acc", "fails at (bit)")):
        cells = []
        for g in grads:
            at = fails_at(rows, g, key, bar)
            cells.append(("-" if at is None else f"L={at}").rjust(width))
        lines.append(name.ljust(15) + "".join(cells))
    lines.append(f"cells: per-bit / whole-sequence accuracy on fresh patterns, train time; "
                 f"* = whole-sequence >= {bar}; majority: per-bit accuracy of answering the "
                 "pattern's most frequent symbol (no order memory); solved up to: per L, the "
                 "longest k with every pattern length <= k at >= 0.99 whole-sequence accuracy"
                 + ("; @L: whole-sequence accuracy on patterns of exactly length L" if varied
                    else ""))
    return "\n".join(lines)


def plot_by_length(rows: list[dict[str, Any]], lengths: list[int], grads: list[str],
                   path: Path) -> None:
    """One panel per trained ``L``: whole-sequence accuracy against pattern length, a line
    per method."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    by = {(r["pattern_length"], r["grad"]): r for r in rows}
    fig = Figure(figsize=(4 * len(lengths), 3.4), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(lengths), squeeze=False)[0]
    for ax, length in zip(axes, lengths, strict=True):
        for g in grads:
            accs = by[(length, g)]["seq_acc_by_length"]
            ax.plot(range(1, len(accs) + 1), accs, marker=".", label=g)
        ax.set_title(f"trained on L={length}")
        ax.set_xlabel("pattern length")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("whole-sequence accuracy")
    axes[-1].legend()
    fig.tight_layout()
    fig.savefig(path)


def parts(lengths: list[int], grads: list[str], jobs: int) -> list[tuple[list[int], list[str]]]:
    """Disjoint (lengths, grads) sub-grids covering the scan, one per ``rtrl-copy -m``."""
    n = min(jobs, len(lengths) * len(grads))
    if n <= len(lengths):
        return [(lengths[i::n], grads) for i in range(n)]
    return [([length], [g]) for length in lengths for g in grads]


def launch(commands: list[list[str]], jobs: int) -> None:
    """Run the commands, at most ``jobs`` at once, their output on stderr; the first failure
    stops the others and exits with its status."""
    pending, running = list(commands), []
    while pending or running:
        while pending and len(running) < jobs:
            running.append(subprocess.Popen(pending.pop(0), stdout=sys.stderr))
        time.sleep(0.1)
        for proc in [p for p in running if p.poll() is not None]:
            running.remove(proc)
            if proc.returncode != 0:
                for other in running:
                    other.terminate()
                    other.wait()
                raise SystemExit(proc.returncode)


def read_runs(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every run's ``results.json`` under ``sweep_dir`` (hidden dirs skipped), no history."""
    rows = []
    for path in sorted(sweep_dir.rglob("results.json")):
        if not any(part.startswith(".") for part in path.relative_to(sweep_dir).parts):
            result = json.loads(path.read_text())
            rows.append({k: v for k, v in result.items() if k != "history"})
    return rows


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=_ints, default=[5, 10, 20, 50])
    p.add_argument("--grads", type=_grads, default=["rtrl", "bptt", "one_step"])
    p.add_argument("--chunk", type=int, default=10, help="M for every method (default 10)")
    p.add_argument("--solved", type=float, default=0.99,
                   help="whole-sequence accuracy that counts as solved (default 0.99)")
    p.add_argument("--forget-bias", default="1.0",
                   help="initial forget-gate bias for every run (default 1.0), or auto: ln(L + 1)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--plot", type=Path, default=None,
                   help="also write a PNG of accuracy against pattern length here")
    p.add_argument("--jobs", type=int, default=1,
                   help="rtrl-copy processes at once (default 1; each run uses threads=1)")
    p.add_argument("--sweep-dir", type=Path, default=None,
                   help="where the run dirs go (default multirun/copy_scan/<date>/<time>)")
    p.add_argument("--from", dest="from_dir", type=Path, default=None,
                   help="no training: report the scan whose run dirs are under this dir")
    p.add_argument("overrides", nargs="*", help="copy-task key=value options for every run")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = _parser()
    args = p.parse_args(argv)
    fb = AUTO_FORGET_BIAS if args.forget_bias == "auto" else f"forget_bias={args.forget_bias}"
    base = ["+experiment=scan", f"chunk={args.chunk}", fb] + args.overrides
    if args.jobs < 1:
        p.exit(2, f"copy_scan: error: --jobs must be >= 1, got {args.jobs}\n")
    start = time.perf_counter()
    if args.from_dir is None:
        cells = [[*base, f"grad={g}", f"pattern_length={length}"]
                 for length in args.lengths for g in args.grads]
        try:  # every run's options are checked before the first one starts
            compose_many(cells)
        except ConfigError as e:
            p.exit(2, f"copy_scan: error: {e}\n")
        sweep_dir = args.sweep_dir or Path("multirun/copy_scan") / time.strftime(
            "%Y-%m-%d/%H-%M-%S")
        grid = parts(args.lengths, args.grads, args.jobs)
        launch([[*APP, *base, "pattern_length=" + ",".join(map(str, lengths)),
                 "grad=" + ",".join(grads),
                 f"hydra.sweep.dir={sweep_dir / f'part{i}' if len(grid) > 1 else sweep_dir}"]
                for i, (lengths, grads) in enumerate(grid)], args.jobs)
    else:
        sweep_dir = args.from_dir
    runs = read_runs(sweep_dir)
    if args.from_dir is not None and runs:
        args.chunk = runs[0]["config"]["chunk"]
        args.lengths = sorted({r["pattern_length"] for r in runs})
        args.grads = [g for g in GRADS if any(r["grad"] == g for r in runs)]
    order = {(length, g): i for i, (length, g) in enumerate(
        (length, g) for length in args.lengths for g in args.grads)}
    rows = sorted((r for r in runs if (r["pattern_length"], r["grad"]) in order),
                  key=lambda r: order[(r["pattern_length"], r["grad"])])
    missing = sorted(set(order) - {(r["pattern_length"], r["grad"]) for r in rows})
    if missing:
        p.exit(2, f"copy_scan: error: no results.json under {sweep_dir} for (L, grad) in "
                  f"{missing}\n")
    wall = time.perf_counter() - start
    print(table(rows, args.lengths, args.grads, args.solved))
    print(f"wall time {wall:.0f}s; run dirs under {sweep_dir}; options: {' '.join(base)}")
    result = {
        "lengths": args.lengths, "grads": args.grads, "chunk": args.chunk,
        "solved_bar": args.solved, "overrides": base, "forget_bias": args.forget_bias,
        "sweep_dir": str(sweep_dir), "wall_s": round(wall, 1),
        "fails_at_seq": {g: fails_at(rows, g, "seq_acc", args.solved) for g in args.grads},
        "fails_at_bit": {g: fails_at(rows, g, "bit_acc", args.solved) for g in args.grads},
        "runs": rows,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        plot_by_length(rows, args.lengths, args.grads, args.plot)
    return result


if __name__ == "__main__":
    main()
