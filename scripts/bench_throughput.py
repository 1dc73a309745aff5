"""Env frames per second: env-only (the ceiling), the sync runner, the async runner.

Atari Pong and ProcGen CoinRun with the IMPALA stem and an eLSTM core, trained with rtrl
and with bptt. Each runner row reports its fraction of the env-only ceiling at the same
number of streams. Frames count emulator frames (Atari: 4 per agent step).

    python scripts/bench_throughput.py                       # CPU, small batches (~5 min)
    python scripts/bench_throughput.py --device cuda --num-envs 32 --unroll 50
    python scripts/bench_throughput.py --json bench_throughput.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rtrl_rl.envs import make_env  # noqa: E402

ENVS = {"atari_pong": ("atari_r2ac", ["env.game=pong"]),
        "procgen_coinrun": ("procgen_r2ac", ["env.game=coinrun"])}


def env_only(env_cfg: dict, num_envs: int, seconds: float) -> float:
    env = make_env(env_cfg, num_envs, seed=0)
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


def runner_fps(preset: str, overrides: list[str], updates: int) -> float:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from rtrl_rl.config import validate
    from rtrl_rl.runners.loop import train
    from rtrl_rl.train import CONFIG_DIR

    with tempfile.TemporaryDirectory() as d:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose("config", overrides=[f"experiment={preset}", "logger=none",
                                               f"max_updates={updates}", *overrides])
        OmegaConf.set_struct(cfg, False)
        cfg.run_dir = d
        train(validate(cfg))
        rows = (Path(d) / "metrics.csv").read_text().splitlines()
        header = rows[0].split(",")
        return float(rows[-1].split(",")[header.index("fps")])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--num-envs", type=int, default=16)
    ap.add_argument("--unroll", type=int, default=20)
    ap.add_argument("--updates", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--env-seconds", type=float, default=8.0)
    ap.add_argument("--envs", default=",".join(ENVS))
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    common = [f"device={args.device}", f"runner.num_envs={args.num_envs}",
              f"runner.unroll={args.unroll}", "runner.total_frames=1000000000",
              f"runner.num_workers={args.workers}"]
    rows = []
    for name in args.envs.split(","):
        preset, env_over = ENVS[name]
        env_cfg = {"family": "atari", "game": "pong"} if preset.startswith("atari") else {
            "family": "procgen", "game": "coinrun"}
        ceiling = env_only(env_cfg, args.num_envs, args.env_seconds)
        rows.append({"env": name, "runner": "env-only", "inference": "-", "grad": "-",
                     "fps": ceiling, "fraction": 1.0})
        print(f"{name:16s} env-only          {ceiling:9.0f} frames/s", flush=True)
        for runner in ("sync", "async"):
            for grad in ("rtrl", "bptt"):
                over = [*common, *env_over, f"runner={runner}", f"grad={grad}"]
                fps = runner_fps(preset, over, args.updates)
                rows.append({"env": name, "runner": runner, "grad": grad, "fps": fps,
                             "fraction": fps / ceiling})
                print(f"{name:16s} {runner:5s} {grad:5s}       {fps:9.0f} frames/s "
                      f"({fps / ceiling:.1%} of env-only)", flush=True)
    ceilings = {r["env"]: r["fps"] for r in rows if r["runner"] == "env-only"}
    for r in rows:
        r.update(device=args.device, num_envs=args.num_envs, unroll=args.unroll,
                 workers=args.workers, threads=torch.get_num_threads(),
                 frames_per_s=r["fps"], env_only_frames_per_s=ceilings[r["env"]])
    print("\n| env | runner | grad | frames/s | of env-only |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['env']} | {r['runner']} | {r['grad']} | {r['fps']:.0f} | "
              f"{r['fraction']:.1%} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
