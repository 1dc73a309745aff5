"""Environment-only throughput: agent steps per second summed over streams.

Random actions, measured after a warm-up, for Atari Pong, ProcGen CoinRun and the built-in
delayed-recall task at 1 and 2 threads (Atari / ProcGen: backend threads; delayed recall:
``torch.set_num_threads``), plus CartPole through gymnasium's sync vector env.

    python scripts/bench_envs.py [--num-envs 16] [--seconds 3] [--json /tmp/bench_envs.json]

The whole run takes about a minute with the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any

import torch

from rtrl_rl.envs import make_env

# (label, env config, threads, backend option name or None, backend value)
CASES: list[tuple[str, dict[str, Any], int, str | None, int]] = [
    ("atari pong", {"family": "atari", "game": "pong"}, 1, "num_threads", 1),
    ("atari pong", {"family": "atari", "game": "pong"}, 2, "num_threads", 2),
    # ProcGen num_threads = 0 steps in the calling thread: one thread in all.
    ("procgen coinrun", {"family": "procgen", "game": "coinrun"}, 1, "num_threads", 0),
    ("procgen coinrun", {"family": "procgen", "game": "coinrun"}, 2, "num_threads", 2),
    ("delayed_recall", {"family": "delayed_recall"}, 1, None, 0),
    ("delayed_recall", {"family": "delayed_recall"}, 2, None, 0),
    ("gym CartPole-v1", {"family": "gym", "id": "CartPole-v1"}, 1, None, 0),
]


def bench_one(
    cfg: dict[str, Any], num_envs: int, threads: int, seconds: float, warmup: float
) -> dict[str, float]:
    """Steps the env with random actions; returns steps, seconds and steps/s (after warm-up)."""
    torch.set_num_threads(threads)
    env = make_env(cfg, num_envs, seed=0)
    gen = torch.Generator().manual_seed(0)
    pool = torch.randint(env.spec.num_actions, (256, num_envs), generator=gen)
    env.reset()
    i = 0
    deadline = time.perf_counter() + warmup
    while time.perf_counter() < deadline:
        env.step(pool[i % 256])
        i += 1
    calls = 0
    start = time.perf_counter()
    while True:
        for _ in range(16):  # check the clock every 16 calls
            env.step(pool[i % 256])
            i += 1
        calls += 16
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    env.close()
    steps = calls * num_envs
    return {"steps": steps, "seconds": elapsed, "steps_per_s": steps / elapsed}


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    headers = ("env", "B", "threads", "backend", "steps/s")
    cells = [
        (r["env"], str(r["num_envs"]), str(r["threads"]), r["backend"], f"{r['steps_per_s']:,.0f}")
        for r in rows
    ]
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for h in headers:
            table.add_column(h, justify="left" if h in ("env", "backend") else "right")
        for c in cells:
            table.add_row(*c)
        Console().print(table)
    except ImportError:
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
        print(title)
        print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
        for c in cells:
            print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=16, help="streams B")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per case")
    parser.add_argument("--warmup", type=float, default=0.5, help="untimed seconds per case")
    parser.add_argument("--json", type=str, default=None, help="write the rows to this path")
    args = parser.parse_args()

    load_start = os.getloadavg()[0]  # other processes skew the numbers; record it
    rows = []
    for label, cfg, threads, option, value in CASES:
        cfg = dict(cfg)
        backend = "torch threads" if cfg["family"] == "delayed_recall" else "-"
        if option is not None:
            cfg[option] = value
            backend = f"{option}={value}"
        result = bench_one(cfg, args.num_envs, threads, args.seconds, args.warmup)
        rows.append({"env": label, "config": cfg, "num_envs": args.num_envs, "threads": threads,
                     "backend": backend, **result})
        print(f"{label:18s} threads={threads}  {result['steps_per_s']:>12,.0f} steps/s",
              flush=True)

    load = os.getloadavg()[0]
    title = (f"env steps/s ({os.cpu_count()} CPUs, torch {torch.__version__}, "
             f"load avg at start {load_start:.1f}, end {load:.1f})")
    print_table(rows, title)
    if args.json:
        meta = {"machine": platform.node(), "cpus": os.cpu_count(),
                "loadavg_start": load_start, "loadavg_end": load}
        with open(args.json, "w") as f:
            json.dump({**meta, "rows": rows}, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
