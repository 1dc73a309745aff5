"""ATen operations per policy step and per learner update: a measure of launch overhead that
needs no GPU. On CUDA each ATen operation is about one kernel launch plus its host-side
dispatch, so fewer operations per step is what CUDA graphs, compilation and fusion buy;
counting them on the CPU tracks that work where there is no GPU to time it.

    python scripts/count_ops.py                               # atari_r2ac: B=32, T=50
    python scripts/count_ops.py --preset delayed_recall --batch 32 --unroll 10 --json ops.json

Counted with a ``TorchDispatchMode``: every ATen call the step makes, forward and backward
(autograd's backward ops run inside the mode too). Work done outside ATen (numba's fused
RTRL kernels on the CPU, Triton's on CUDA) is one call of the custom function, not counted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_learner import load_config, synthetic_rollout  # noqa: E402

from rtrl_rl.algos import make_learner  # noqa: E402
from rtrl_rl.envs import make_env  # noqa: E402
from rtrl_rl.grad import make_grad  # noqa: E402
from rtrl_rl.models.agent import Agent  # noqa: E402


class OpCounter(TorchDispatchMode):
    """Counts the ATen operations run while active, by name (``aten.mm``, ...)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.ops.values())


def count(fn) -> OpCounter:
    """Run ``fn()`` once under a fresh counter."""
    with OpCounter() as counter:
        fn()
    return counter


def measure(preset: str, batch: int, unroll: int, methods: list[str],
            overrides: list[str]) -> dict:
    """Operations of one policy step (``Agent.act`` on ``batch`` streams) and of one learner
    update per gradient method on a synthetic rollout ``[unroll + 1, batch]``; each after
    one warm-up call, so that one-time work (lazy init, caches) is not counted."""
    cfg = load_config(preset, overrides)
    env = make_env(cfg.env, 1, 0)
    spec = env.spec
    env.close()
    torch.manual_seed(0)
    agent = Agent(spec, cfg.model, cfg.algo.reward_clip)
    ro = synthetic_rollout(spec, agent, unroll, batch, torch.device("cpu"))
    state = agent.core.initial_state(batch)

    def act() -> None:
        with torch.no_grad():
            agent.act(ro.obs[0], ro.reward[0], ro.prev_action[0], ro.first[0], state)

    act()
    step = count(act)
    out = {"preset": preset, "batch": batch, "unroll": unroll, "torch": torch.__version__,
           "policy_step": {"ops": step.total, "top": step.ops.most_common(8)}, "update": {}}
    for method in methods:
        torch.manual_seed(0)
        learner_agent = Agent(spec, cfg.model, cfg.algo.reward_clip)
        grad = make_grad(method, learner_agent.core, batch)
        learner = make_learner(learner_agent, grad, cfg.algo, total_updates=100)
        learner.update(ro)
        upd = count(lambda learner=learner: learner.update(ro))
        out["update"][method] = {"ops": upd.total, "top": upd.ops.most_common(8)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="atari_r2ac")
    ap.add_argument("--batch", type=int, default=32, help="streams B (32)")
    ap.add_argument("--unroll", type=int, default=50, help="T (50)")
    ap.add_argument("--methods", default="rtrl,bptt")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. model.hidden_size=64")
    args = ap.parse_args()
    overrides = [*(["env.game=pong"] if args.preset.startswith("atari") else []),
                 *args.overrides]
    result = measure(args.preset, args.batch, args.unroll, args.methods.split(","), overrides)
    print(f"{args.preset}, B={args.batch}, T={args.unroll}, torch {torch.__version__}")
    print(f"  policy step ({args.batch} streams): {result['policy_step']['ops']:>7,} ATen ops")
    for method, row in result["update"].items():
        print(f"  learner update, grad={method:8s} {row['ops']:>7,} ATen ops; most: "
              + ", ".join(f"{k} {v}" for k, v in row["top"][:4]))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
