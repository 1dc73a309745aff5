"""Frames per second of the default job with the non-finite checks on and off.

The default job's collect-and-learn loop (delayed recall, eLSTM 64, RTRL, sync runner,
32 streams x 10 steps, one torch thread) runs in alternating blocks of ``--block`` updates,
``on`` as the code is and ``off`` without the checks: the actor steps the bare env adapter
(the one ``CheckedEnv`` wraps) and the learner takes the step from before them
(``clip_grad_norm_``, then the optimizer step, with no finiteness test). It is one loop,
one agent and one env throughout, switched between blocks, so that the drift of a shared VM,
larger than the difference measured here, falls on both alike. The table gives each
variant's frames/s over all its blocks and the median of the per-block-pair ratios.

    python scripts/bench_guards.py --blocks 150 --block 20 --json out.json
    python scripts/bench_guards.py --blocks 150 --block 20 --per-step   # the env check per step
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rtrl_rl.algos import make_learner  # noqa: E402
from rtrl_rl.envs import make_env  # noqa: E402
from rtrl_rl.grad import make_grad, sensitivity_pass  # noqa: E402
from rtrl_rl.models.agent import Agent  # noqa: E402
from rtrl_rl.runners.sync import SyncRunner  # noqa: E402
from tests.runners.helpers import make_cfg  # noqa: E402


def _unchecked_step(self, loss: torch.Tensor) -> tuple[torch.Tensor, bool]:
    self.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
    self.optimizer.step()
    return grad_norm, True


def build(cfg):
    """The default job's runner and learner (with the checks)."""
    torch.manual_seed(cfg.seed)
    env = make_env(cfg.env, cfg.runner.num_envs, cfg.seed)
    agent = Agent(env.spec, cfg.model, cfg.algo.reward_clip)
    grad = make_grad(cfg.grad.name, agent.core, cfg.runner.num_envs)
    updates = math.ceil(cfg.runner.total_frames / (cfg.runner.unroll * cfg.runner.num_envs))
    learner = make_learner(agent, grad, cfg.algo, updates)
    return SyncRunner(cfg.env, cfg.runner, agent, torch.device("cpu"), cfg.seed, env=env), learner


def per_step(runner) -> None:
    """Check the env's data at every step instead of once per rollout."""
    runner.actor._check = None
    runner.env._deferred = False


def switch(runner, learner, checks: bool) -> None:
    """Checks on, or off: the actor's env and the learner's step."""
    checked = runner.env
    runner.actor.env = checked if checks else checked.env
    if checks:
        learner.__dict__.pop("step", None)
    else:
        learner.step = types.MethodType(_unchecked_step, learner)


def run_block(runner, learner, n: int) -> float:
    """Seconds for ``n`` updates (collect, then learn)."""
    t0 = time.perf_counter()
    for _ in range(n):
        rollout, _ = runner.next_rollout(learner.updates)
        learner.update(rollout)
        runner.after_update()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=int, default=100, help="block pairs (on, off)")
    ap.add_argument("--block", type=int, default=20, help="updates per block")
    ap.add_argument("--per-step", action="store_true",
                    help="on: the env check at every step, not once per rollout")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        cfg = make_cfg(Path(d), "runner.num_envs=32", "runner.unroll=10")
    threads = cfg.torch_threads or 1
    torch.set_num_threads(threads)
    sensitivity_pass.limit_threads(threads)  # as the training loop does
    runner, learner = build(cfg)
    if args.per_step:
        per_step(runner)
    frames = args.block * cfg.runner.unroll * cfg.runner.num_envs
    for c in (True, False):  # warm-up: JIT loads, allocator
        switch(runner, learner, c)
        run_block(runner, learner, 2 * args.block)
    secs = {True: [], False: []}
    for b in range(args.blocks):
        for c in ((True, False) if b % 2 == 0 else (False, True)):
            switch(runner, learner, c)
            secs[c].append(run_block(runner, learner, args.block))
    fps = {c: frames * len(v) / sum(v) for c, v in secs.items()}
    ratios = [off / on for on, off in zip(secs[True], secs[False], strict=True)]
    ratio = statistics.median(ratios)
    print(f"| checks | frames/s |\n|---|---|\n| on | {fps[True]:,.0f} |\n"
          f"| off | {fps[False]:,.0f} |\n\n{args.blocks} block pairs of {args.block} updates; "
          f"median per-pair on/off frames/s: {ratio:.4f} ({(ratio - 1) * 100:+.2f}%); "
          f"all blocks: {fps[True] / fps[False]:.4f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.node()} ({platform.machine()}, torch {torch.__version__}, "
                       f"{torch.get_num_threads()} thread)",
            "command": " ".join(["python", *sys.argv]), "block_updates": args.block,
            "env_check": "per step" if args.per_step else "per rollout",
            "fps_on": fps[True], "fps_off": fps[False], "median_ratio": ratio,
            "seconds_on": secs[True], "seconds_off": secs[False]}, indent=1))


if __name__ == "__main__":
    main()
