"""Copy-task scan: where does each gradient method stop solving the copy task?

For every pattern length ``L`` in ``--lengths`` and every method in ``--grads`` it trains one
eLSTM (``rtrl_rl.diagnostics.copy_task``) with the same budget, the same chunk ``M`` (update
every ``M`` steps) and the same seed, then evaluates on fresh patterns. Runs go one after
another in this process (one CPU thread unless ``threads=`` says otherwise).

    python scripts/copy_scan.py                                # the default scan
    python scripts/copy_scan.py --lengths 5,10,20,50,100 --json copy_scan.json
    python scripts/copy_scan.py --grads rtrl,bptt steps=40000 hidden_size=256

``key=value`` arguments are copy-task options applied to every run (``grad`` and
``pattern_length`` are set by the scan). A run counts as solved when its whole-sequence
accuracy is >= ``--solved``; "fails at" is the smallest ``L`` that is not solved. Runs stop
early once a periodic evaluation is solved (``stop_at``), so only failing runs use the whole
budget. The default scan (12 runs, 15000 steps per stream each) takes about 3 minutes of
wall time on one CPU thread.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from rtrl_rl.diagnostics.copy_config import GRADS, CopyConfig, parse_overrides
from rtrl_rl.diagnostics.copy_task import train
from rtrl_rl.errors import ConfigError

#: Applied before the user's key=value options.
SCAN_DEFAULTS = ["steps=15000", "hidden_size=128", "batch_size=32", "lr=3e-2",
                 "eval_episodes=512", "quiet=true"]


def auto_forget_bias(length: int) -> float:
    """``ln(L + 1)``: initial forget gate ``f = (L+1)/(L+2)``, which maximizes a unit's
    write-then-keep factor ``(1 - f) f^(L+1)`` over the copy gap of ``L + 1`` steps."""
    return round(math.log(length + 1), 3)


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


def _run_one(cfg: CopyConfig) -> dict[str, Any]:
    r = train(cfg, progress=None)
    print(f"L={cfg.pattern_length:<4d} {cfg.grad:<9s} bit {r['bit_acc']:.3f} "
          f"seq {r['seq_acc']:.3f} steps {r['steps']:>6d} {r['train_s']:.1f}s",
          file=sys.stderr, flush=True)
    return {k: v for k, v in r.items() if k != "history"}


def run_all(configs: list[CopyConfig], jobs: int) -> list[dict[str, Any]]:
    """Train every config (``jobs`` worker processes, each on its configured threads); the
    rows come back in the order of ``configs``."""
    if jobs <= 1:
        return [_run_one(cfg) for cfg in configs]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        return list(pool.map(_run_one, configs))


def main(argv: list[str] | None = None) -> dict[str, Any]:
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
                   help="runs in parallel, one process each (default 1; each uses threads=1)")
    p.add_argument("overrides", nargs="*", help="copy-task key=value options for every run")
    args = p.parse_args(argv)
    if args.forget_bias != "auto":
        args.overrides.insert(0, f"forget_bias={args.forget_bias}")
    base = SCAN_DEFAULTS + [f"chunk={args.chunk}"] + args.overrides

    def options(g: str, length: int) -> list[str]:
        fb = [] if args.forget_bias != "auto" else [f"forget_bias={auto_forget_bias(length)}"]
        return fb + base + [f"grad={g}", f"pattern_length={length}"]

    if args.jobs < 1:
        p.exit(2, f"copy_scan: error: --jobs must be >= 1, got {args.jobs}\n")
    try:  # every run's options are checked before the first one starts
        configs = [parse_overrides(options(g, length))
                   for length in args.lengths for g in args.grads]
    except ConfigError as e:
        p.exit(2, f"copy_scan: error: {e}\n")
    start = time.perf_counter()
    rows = run_all(configs, args.jobs)
    wall = time.perf_counter() - start
    text = table(rows, args.lengths, args.grads, args.solved)
    print(text)
    fb = " forget_bias=ln(L+1)" if args.forget_bias == "auto" else ""
    print(f"wall time {wall:.0f}s; options: {' '.join(base)}{fb}")
    result = {
        "lengths": args.lengths, "grads": args.grads, "chunk": args.chunk,
        "solved_bar": args.solved, "overrides": base, "forget_bias": args.forget_bias,
        "wall_s": round(wall, 1),
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
