"""Time of one whole learner update (stem, core with its temporal gradient, heads, loss,
optimizer step) per gradient method, on a synthetic rollout of a preset's shapes.

Unlike ``bench_grad.py``, which times the core alone, this is the update a training run
pays, so the ratio rtrl/bptt here is what a run's learner sees (on Atari the IMPALA stem
dominates). Every method starts from the same initial weights; the methods take turns in
rounds of ``--block`` consecutive updates, each round ending in a device sync, and the
ratio is the median over rounds of the per-round ratio.

    python scripts/bench_learner.py --device cuda                       # Atari Pong, T=50, B=32
    python scripts/bench_learner.py --preset delayed_recall --batch 32 --unroll 10
    python scripts/bench_learner.py --device cuda model.amp=bf16 --json learner.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rtrl_rl.algos import make_learner  # noqa: E402
from rtrl_rl.envs import make_env  # noqa: E402
from rtrl_rl.grad import make_grad  # noqa: E402
from rtrl_rl.malloc import keep_freed_memory  # noqa: E402
from rtrl_rl.models.agent import Agent  # noqa: E402
from rtrl_rl.rollout import Rollout  # noqa: E402


def load_config(preset: str, overrides: list[str]):
    """The validated config of ``experiment=preset`` with ``overrides`` (no run is written,
    so its run_dir is never used)."""
    from rtrl_rl.config import validate
    from rtrl_rl.train import compose_config

    return validate(compose_config([f"experiment={preset}", "logger=none", *overrides], "."))


def synthetic_rollout(spec, agent: Agent, t: int, b: int, device: torch.device,
                      seed: int = 0) -> Rollout:
    """A rollout ``[T+1, B, ...]`` of random observations and actions, with episode starts
    at rate 1/20 (so the gradient modules take their reset paths)."""
    g = torch.Generator().manual_seed(seed)
    shape = (t + 1, b, *spec.obs_shape)
    obs = (torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
           if spec.obs_dtype == torch.uint8 else torch.randn(shape, generator=g))
    n = spec.num_actions
    action = torch.randint(n, (t + 1, b), generator=g)
    return Rollout(
        obs=obs, reward=torch.randn(t + 1, b, generator=g),
        first=torch.rand(t + 1, b, generator=g) < 0.05,
        prev_action=torch.randint(n, (t + 1, b), generator=g), action=action,
        dist_params=torch.randn(t + 1, b, agent.dist.param_size, generator=g),
        core_state=agent.core.initial_state(b),
        stream_ids=torch.arange(b), policy_version=torch.zeros(b, dtype=torch.long),
    ).to(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="atari_r2ac")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=32, help="streams B (32)")
    ap.add_argument("--unroll", type=int, default=50, help="T (50)")
    ap.add_argument("--methods", default="rtrl,bptt")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--block", type=int, default=4, help="consecutive updates per turn")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. model.amp=bf16")
    args = ap.parse_args()
    keep_freed_memory()  # as the learner does
    device = torch.device(args.device)
    overrides = [*(["env.game=pong"] if args.preset.startswith("atari") else []),
                 *args.overrides]
    cfg = load_config(args.preset, overrides)
    env = make_env(cfg.env, 1, seed=0)
    spec, frames_per_step = env.spec, int(getattr(env, "frames_per_step", 1))
    env.close()
    torch.manual_seed(0)
    template = Agent(spec, cfg.model, cfg.algo.reward_clip)
    rollout = synthetic_rollout(spec, template, args.unroll, args.batch, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    runs = {}
    for name in args.methods.split(","):
        agent = copy.deepcopy(template).to(device)
        grad = make_grad(name, agent.core, args.batch)
        runs[name] = make_learner(agent, grad, cfg.algo, 10**6)
    for learner in runs.values():  # warm-up: allocator, cudnn, kernel compilation
        for _ in range(2):
            learner.update(rollout)
    sync()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, learner in runs.items():
            t0 = time.perf_counter()
            for _ in range(args.block):
                learner.update(rollout)
            sync()
            times[name].append((time.perf_counter() - t0) / args.block * 1e3)
    base = args.methods.split(",")[-1]
    rows = []
    print(f"{args.preset} {' '.join(overrides)}: B={args.batch}, T={args.unroll}, "
          f"{device}, {args.rounds} rounds of {args.block} updates")
    for name, ts in times.items():
        ratio = statistics.median(a / b for a, b in zip(ts, times[base], strict=True))
        rows.append({"preset": args.preset, "overrides": overrides, "device": str(device),
                     "batch": args.batch, "unroll": args.unroll, "grad": name,
                     "ms_per_update": statistics.median(ts), f"vs_{base}": ratio,
                     "frames_per_update": args.batch * args.unroll * frames_per_step,
                     "date": time.strftime("%Y-%m-%d")})
        print(f"  {name:9s} {statistics.median(ts):8.2f} ms/update   {ratio:.3f}x {base}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
