"""Env frames per second, end to end, against the env-only ceiling.

Per env: the env-only ceiling (random actions, the same streams split over as many processes
as there are env workers, all stepping at once), then training with
{sync, async inference=worker, async inference=learner} x {rtrl, bptt}. Each row gives
frames/s, its fraction of the ceiling, learner updates/s, the mean policy lag, the mean
observations per batched policy step (inference=learner) and, on a GPU, its mean
utilisation. Frames count emulator frames (Atari: 4 per agent step). With ``--rounds R``
every setting runs R times, one row of each setting per round, and the table gives medians
and "vs sync", the median per-round ratio to the same round's sync row: single rows on a
shared VM drift by 10-20% within minutes. The JSON keeps every row, with its round.

    python scripts/bench_throughput.py --quick --json out.json   # default job + Pong, CPU
    python scripts/bench_throughput.py --device cuda --num-envs 32 --unroll 50 --workers 16
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rtrl_rl.envs import make_env  # noqa: E402
from rtrl_rl.runners.runner_config import AsyncRunnerConfig  # noqa: E402

#: name -> (experiment preset, env overrides, env config for the ceiling)
ENVS = {
    "delayed_recall": ("delayed_recall", [], {"family": "delayed_recall", "num_cues": 4,
                                              "delay": 30}),
    "atari_pong": ("atari_r2ac", ["env.game=pong"], {"family": "atari", "game": "pong"}),
    "procgen_coinrun": ("procgen_r2ac", ["env.game=coinrun"],
                        {"family": "procgen", "game": "coinrun"}),
}
#: name -> (runner, inference)
PLACEMENTS = {"sync": ("sync", "-"), "worker": ("async", "worker"),
              "learner": ("async", "learner")}


def env_only(env_cfg: dict, num_envs: int, seconds: float, seed: int = 0) -> float:
    """Frames/s of ``num_envs`` streams stepped with random actions in this process."""
    env = make_env(env_cfg, num_envs, seed=seed)
    fps_step = int(getattr(env, "frames_per_step", 1))
    env.reset(seed=0)
    n = env.spec.num_actions
    for _ in range(10):
        env.step(torch.randint(n, (num_envs,)))
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        env.step(torch.randint(n, (num_envs,)))
        steps += num_envs
    env.close()
    return steps * fps_step / (time.perf_counter() - t0)


def env_only_parallel(env_cfg: dict, num_envs: int, seconds: float, workers: int) -> float:
    """The env-only ceiling of ``workers`` processes sharing ``num_envs`` streams, as the
    env workers of the async runner do: the sum of their frames/s, measured together."""
    if workers <= 1:
        return env_only(env_cfg, num_envs, seconds)
    per = [num_envs // workers + (w < num_envs % workers) for w in range(workers)]
    with mp.get_context("spawn").Pool(workers) as pool:
        return sum(pool.starmap(env_only, [(env_cfg, n, seconds, w)
                                           for w, n in enumerate(per) if n]))


class GpuSampler:
    """Mean GPU utilisation (nvidia-smi, every 0.2 s) while a measurement runs."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and shutil.which("nvidia-smi") is not None
        self.samples: list[float] = []
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu",
                                      "--format=csv,noheader,nounits"], capture_output=True,
                                     text=True, timeout=5).stdout.split()
                self.samples.append(float(out[0]))
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                pass
            self._stop.wait(0.2)

    def __enter__(self) -> GpuSampler:
        if self.enabled:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def train_row(preset: str, overrides: list[str], updates: int) -> dict:
    """Train for ``updates`` updates; the metrics of the last logged row, plus means."""
    from rtrl_rl.config import validate
    from rtrl_rl.runners import affinity
    from rtrl_rl.runners.loop import resolve_device, train
    from rtrl_rl.train import compose_config

    with tempfile.TemporaryDirectory() as d:
        typed = validate(compose_config([f"experiment={preset}", "logger=none",
                                         f"max_updates={updates}", *overrides], d))
        train(typed)
        rows = list(csv.DictReader((Path(d) / "metrics.csv").open()))
    last = rows[-1]
    frames_per_update = typed.runner.unroll * typed.runner.streams_per_batch * (
        4 if preset.startswith("atari") else 1)

    def mean(key: str) -> float | None:
        vals = [float(r[key]) for r in rows[1:] if r.get(key) not in (None, "", "nan")]
        return sum(vals) / len(vals) if vals else None

    fps = float(last["fps"])
    rc = typed.runner
    workers = isinstance(rc, AsyncRunnerConfig)
    pinned = workers and affinity.wanted(rc.cpu_affinity, rc.kind, rc.inference,
                                         resolve_device(typed.device).type)
    return {"frames_per_s": fps, "updates_per_s": fps / frames_per_update,
            "cpu_affinity": pinned,
            "policy_lag": mean("policy_lag"),
            "inference_batch_mean": mean("inference_batch_mean"),
            "inference": rc.inference if workers else "-",
            "num_envs": rc.num_envs, "streams_per_batch": rc.streams_per_batch,
            "unroll": rc.unroll, "workers": rc.num_workers if workers else "-"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--num-envs", type=int, default=16)
    ap.add_argument("--unroll", type=int, default=20)
    ap.add_argument("--updates", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=0,
                    help="streams per learner batch: runner.batch_size for async rows, and "
                         "the sync rows' runner.num_envs (0: --num-envs for both)")
    ap.add_argument("--env-seconds", type=float, default=8.0)
    ap.add_argument("--envs", default="atari_pong,procgen_coinrun")
    ap.add_argument("--grads", default="rtrl,bptt")
    ap.add_argument("--placements", default="sync,worker,learner",
                    help="comma-separated: sync, worker (async, policy in the env workers), "
                         "learner (async, policy in one inference process)")
    ap.add_argument("--quick", action="store_true",
                    help="the default job (its own sizes, 600 updates, 2 rounds) and Atari Pong "
                         "(8 streams, T=10, 6 updates): both placements, both grads, under "
                         "4 min on 2 CPU cores")
    ap.add_argument("--rounds", type=int, default=1,
                    help="rows of every setting per env, taken in turns (round 1 of each, "
                         "then round 2, ...); the table gives medians (--quick: 2 for the "
                         "default job)")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    wrong = sorted(set(args.placements.split(",")) - set(PLACEMENTS))
    if wrong:
        ap.error(f"--placements: unknown {', '.join(wrong)} "
                 f"(choose from {', '.join(PLACEMENTS)})")
    placements = [PLACEMENTS[p] for p in args.placements.split(",")]
    plan = []  # (env name, overrides for every row, updates, streams for the ceiling, rounds)
    for name in (["delayed_recall", "atari_pong"] if args.quick else args.envs.split(",")):
        if name == "delayed_recall":  # the default job as `make train` runs it
            sizes = ["runner.num_workers=2"] + ([] if args.quick else [
                f"runner.num_envs={args.num_envs}", f"runner.unroll={args.unroll}"])
            plan.append((name, sizes, 600 if args.quick else args.updates * 100,
                         32 if args.quick else args.num_envs, max(args.rounds, 2 * args.quick)))
        else:
            n, t, u = (8, 10, 6) if args.quick else (args.num_envs, args.unroll, args.updates)
            plan.append((name, [f"runner.num_envs={n}", f"runner.unroll={t}",
                                f"runner.num_workers={args.workers}"], u, n, args.rounds))
    rows = []
    for name, sizes, updates, streams, rounds in plan:
        preset, env_over, env_cfg = ENVS[name]
        ceiling = env_only_parallel(env_cfg, streams, 3.0 if args.quick else args.env_seconds,
                                    2 if args.quick else args.workers)
        rows.append({"env": name, "runner": "env-only", "inference": "-", "grad": "-",
                     "frames_per_s": ceiling, "fraction": 1.0})
        print(f"{name:16s} env-only                  {ceiling:9.0f} frames/s", flush=True)
        resized = args.batch_size and name != "delayed_recall"
        settings = [(r, i, g) for r, i in placements for g in args.grads.split(",")]
        # in turns, so that every setting sees the same drift of a shared machine
        for rnd, (runner, inference, grad) in ((k, s) for k in range(rounds) for s in settings):
            mine = [o for o in sizes if not (runner == "sync" and (
                o.startswith("runner.num_workers=")
                or (resized and o.startswith("runner.num_envs="))))]
            over = [f"device={args.device}", "runner.total_frames=1000000000", *mine,
                    *env_over, f"runner={runner}", f"grad={grad}"]
            if runner == "async":
                over.append(f"runner.inference={inference}")
            if resized:
                over.append(f"runner.batch_size={args.batch_size}" if runner == "async"
                            else f"runner.num_envs={args.batch_size}")
            with GpuSampler(args.device == "cuda") as gpu:
                row = train_row(preset, over, updates)
            row.update(env=name, runner=runner, grad=grad, gpu_util=gpu.mean,
                       fraction=row["frames_per_s"] / ceiling, round=rnd)
            rows.append(row)
            if args.json:  # after every row: a run cut short keeps what it measured
                Path(args.json).write_text(json.dumps(rows, indent=1))
            print(f"{name:16s} {runner:5s} {row['inference']:7s} {grad:5s} round {rnd + 1}  "
                  f"{row['frames_per_s']:9.0f} frames/s ({row['fraction']:.1%} of "
                  f"env-only), {row['updates_per_s']:.1f} updates/s", flush=True)
    ceilings = {r["env"]: r["frames_per_s"] for r in rows if r["runner"] == "env-only"}
    for r in rows:
        r.update(device=args.device, env_only_frames_per_s=ceilings[r["env"]],
                 threads=torch.get_num_threads(), date=time.strftime("%Y-%m-%d"))
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
        print(f"wrote {args.json}")


def print_table(rows: list[dict]) -> None:
    """One line per setting: medians over its rounds, and "vs sync", the median over rounds
    of its frames/s over the same round's sync row with the same grad."""
    def med(group: list[dict], key: str, fmt: str) -> str:
        vals = [r[key] for r in group if r.get(key) is not None]
        return format(statistics.median(vals), fmt) if vals else "-"

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["env"], r["runner"], r["inference"], r["grad"]), []).append(r)
    sync = {(r["env"], r["grad"], r.get("round")): r["frames_per_s"] for r in rows
            if r["runner"] == "sync"}
    pinned = {None: "-", True: "yes", False: "no"}
    print("\n| env | runner | inference | grad | rounds | frames/s | vs sync | of env-only "
          "| updates/s | lag | obs/policy step | CPUs pinned |\n" + "|---" * 12 + "|")
    for (env, runner, inference, grad), group in groups.items():
        ratios = [r["frames_per_s"] / sync[env, grad, r.get("round")] for r in group
                  if (env, grad, r.get("round")) in sync]
        vs = f"{statistics.median(ratios):.2f}x" if ratios and runner != "env-only" else "-"
        print(f"| {env} | {runner} | {inference} | {grad} | {len(group)} | "
              f"{med(group, 'frames_per_s', '.0f')} | {vs} | {med(group, 'fraction', '.1%')} | "
              f"{med(group, 'updates_per_s', '.1f')} | {med(group, 'policy_lag', '.1f')} | "
              f"{med(group, 'inference_batch_mean', '.1f')} | "
              f"{pinned[group[0].get('cpu_affinity')]} |")


if __name__ == "__main__":
    main()
