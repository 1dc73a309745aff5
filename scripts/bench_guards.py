"""Frames per second of the default job with the non-finite checks on and off.

``on`` is the code as it is. ``off`` is the same job with the checks taken out: ``make_env``
returns the bare adapter (no ``CheckedEnv``) and the learner's step is the one before the
checks (``clip_grad_norm_``, then the optimizer step, with no finiteness test). Rounds run
``on`` and ``off`` back to back, in alternating order; the table gives each variant's median
frames/s and the median of the per-round ratios, since a shared VM drifts by more than the
difference measured here.

    python scripts/bench_guards.py --rounds 7 --updates 400 --json out.json
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rtrl_rl.algos.learner import LearnerBase  # noqa: E402
from rtrl_rl.runners import loop  # noqa: E402
from rtrl_rl.runners.loop import train  # noqa: E402
from tests.runners.helpers import make_cfg  # noqa: E402


def _unchecked_step(self, loss: torch.Tensor) -> tuple[torch.Tensor, bool]:
    self.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if self.combine_grads is not None:
        self.combine_grads(self.params)
    grad_norm = nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
    self.optimizer.step()
    return grad_norm, True


@contextmanager
def checks_off():
    make_env, step = loop.make_env, LearnerBase.step
    loop.make_env = lambda *a, **k: make_env(*a, **k).env
    LearnerBase.step = _unchecked_step
    try:
        yield
    finally:
        loop.make_env, LearnerBase.step = make_env, step


def one_run(updates: int, checks: bool) -> float:
    """The default job for ``updates`` updates; its logged frames/s (first update
    excluded)."""
    with tempfile.TemporaryDirectory() as d:
        cfg = make_cfg(Path(d), "logger=default", "runner.num_envs=32", "runner.unroll=10",
                       f"max_updates={updates}", "checkpoint_interval_s=100000")
        if checks:
            train(cfg)
        else:
            with checks_off():
                train(cfg)
        with open(Path(d) / "metrics.csv", newline="") as f:
            return float(list(csv.DictReader(f))[-1]["fps"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--updates", type=int, default=400)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    one_run(20, True)  # warm-up: imports, JIT loads
    rows = []
    for r in range(args.rounds):
        order = (True, False) if r % 2 == 0 else (False, True)
        fps = {c: one_run(args.updates, c) for c in order}
        rows.append({"round": r, "on": fps[True], "off": fps[False],
                     "ratio": fps[True] / fps[False]})
        print(f"round {r}: on {fps[True]:,.0f}  off {fps[False]:,.0f}  "
              f"on/off {fps[True] / fps[False]:.4f}", flush=True)
    med_on = statistics.median(x["on"] for x in rows)
    med_off = statistics.median(x["off"] for x in rows)
    ratio = statistics.median(x["ratio"] for x in rows)
    print(f"\n| checks | median frames/s |\n|---|---|\n| on | {med_on:,.0f} |\n"
          f"| off | {med_off:,.0f} |\n\nmedian per-round on/off: {ratio:.4f} "
          f"({(ratio - 1) * 100:+.2f}%)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "updates": args.updates, "rows": rows, "median_on": med_on,
            "median_off": med_off, "median_ratio": ratio}, indent=1))


if __name__ == "__main__":
    main()
