"""One training job on 1 rank and on K torchrun ranks: frames/s and frames to a return.

Every configuration runs the same job (the default job unless overrides say otherwise),
taking turns within each round so that all of them see the same machine state. A job's
``runner.num_envs`` is split across its ranks, so all configurations learn the same
problem with the same batch; only the placement differs.

    python scripts/bench_ranks.py                               # 1 rank vs 2 ranks
    python scripts/bench_ranks.py --ranks 1,2 --rounds 2 --json docs/results/ranks/ranks.json
    python scripts/bench_ranks.py runner.total_frames=1000000 grad=bptt

Per run: frames/s is the last metrics.csv row's ``fps`` (whole-run average after the first
update), "frames to X" the first logged ``env_frames`` whose ``return_mean`` reached
``--target``, and the final ``return_mean``. The table gives per-configuration medians and
each configuration's frames/s relative to the first one, as the median of per-round ratios.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _command(ranks: int, threads: int, run_dir: Path, overrides: list[str]) -> list[str]:
    job = [f"run_dir={run_dir}", "logger.tensorboard=false", "logger.progress=none",
           *overrides]
    if ranks == 1:
        return [sys.executable, "-m", "rtrl_rl.train", f"torch_threads={threads}", *job]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={ranks}", "-m", "rtrl_rl.train",
            f"torch_threads={threads}", *job]


def _read(run_dir: Path, target: float) -> dict[str, float | None]:
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    hit = next((int(r["env_frames"]) for r in rows if float(r["return_mean"]) >= target), None)
    return {"fps": float(rows[-1]["fps"]), "frames_to_target": hit,
            "final_return": float(rows[-1]["return_mean"]), "frames": int(rows[-1]["env_frames"])}


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ranks", default="1,2", help="comma-separated rank counts (1,2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank (1)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--target", type=float, default=0.8, help="return_mean to reach (0.8)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("overrides", nargs="*", help="rtrl-train overrides for every run")
    args = p.parse_args()
    counts = [int(k) for k in args.ranks.split(",")]
    runs: dict[int, list[dict]] = {k: [] for k in counts}
    with tempfile.TemporaryDirectory(prefix="bench_ranks_") as tmp:
        for r in range(args.rounds):
            for k in counts:
                run_dir = Path(tmp) / f"r{r}_k{k}"
                t0 = time.time()
                subprocess.run(_command(k, args.threads, run_dir, args.overrides), check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                row = {**_read(run_dir, args.target), "wall_s": time.time() - t0, "round": r}
                runs[k].append(row)
                print(f"round {r} ranks {k}: {json.dumps(row)}", flush=True)
    base = counts[0]
    table = []
    for k in counts:
        ratios = [a["fps"] / b["fps"] for a, b in zip(runs[k], runs[base], strict=True)]
        table.append({"ranks": k, "threads_per_rank": args.threads,
                      "fps": _median([x["fps"] for x in runs[k]]),
                      "fps_vs_first": statistics.median(ratios),
                      "frames_to_target": _median([x["frames_to_target"] for x in runs[k]]),
                      "final_return": _median([x["final_return"] for x in runs[k]]),
                      "wall_s": _median([x["wall_s"] for x in runs[k]])})
    print(f"\n| ranks | frames/s | vs {base} rank(s) | frames to {args.target} | final return "
          "| wall s |\n|---:|---:|---:|---:|---:|---:|")
    for t in table:
        hit = f"{t['frames_to_target']:,.0f}" if t["frames_to_target"] is not None else "never"
        print(f"| {t['ranks']} | {t['fps']:,.0f} | {t['fps_vs_first']:.2f} | {hit} | "
              f"{t['final_return']:.2f} | {t['wall_s']:.0f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"overrides": args.overrides, "target": args.target,
                                         "table": table, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
