"""``rtrl-eval`` (python -m rtrl_rl.evaluate): run a trained policy for N episodes.

    rtrl-eval runs/2026-11-21/12-00-00                     # latest checkpoint of a run dir
    rtrl-eval path/to/ckpt_000000001000.pt --episodes 50 --split train
    rtrl-eval RUN_DIR --video first_episodes.mp4 --video-episodes 2

ProcGen evaluates on unseen levels by default (``--split eval``). Prints mean/std return and
writes ``eval.json`` next to the checkpoints unless ``--json`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rtrl_rl.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from rtrl_rl.errors import ConfigError, EnvDataError


def find_checkpoint(path: Path) -> Path:
    if path.is_file():
        return path
    for d in (path / "checkpoints", path):
        ckpt = latest_checkpoint(d) if d.is_dir() else None
        if ckpt is not None:
            return ckpt
    raise ConfigError(f"no checkpoint found at '{path}'")


def evaluate(ckpt_path: Path, episodes: int, split: str, num_envs: int, greedy: bool,
             device: str, video: Path | None, video_episodes: int, seed: int) -> dict:
    from rtrl_rl.config import validate
    from rtrl_rl.envs import make_env
    from rtrl_rl.models.agent import Agent
    from rtrl_rl.runners.evaluation import run_episodes, summary
    from rtrl_rl.runners.loop import resolve_device

    ckpt = load_checkpoint(ckpt_path, required=("agent", "config"))
    cfg = validate(ckpt["config"], saved=True)
    dev = resolve_device(device)
    env = make_env(cfg.env, num_envs, seed, split=split)
    if video is not None and not env.spec.is_image:
        raise ConfigError("--video needs image observations; this env's are vectors")
    agent = Agent(env.spec, cfg.model, cfg.algo.reward_clip).to(dev).eval()
    agent.load_state_dict(ckpt["agent"])
    returns, lengths, frames = run_episodes(agent, env, episodes, dev, seed, greedy,
                                            video_episodes if video is not None else 0)
    if video is not None and frames:
        import imageio.v2 as imageio

        video.parent.mkdir(parents=True, exist_ok=True)
        imageio.mimsave(video, frames, **({"fps": 30} if video.suffix == ".mp4" else
                                          {"duration": 1 / 30}))
    return {"checkpoint": str(ckpt_path), "split": split, **summary(returns, lengths),
            "greedy": greedy, "video": str(video) if video else None}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="rtrl-eval", description=__doc__.splitlines()[0])
    ap.add_argument("path", type=Path, help="a run dir or a checkpoint file")
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--split", choices=("eval", "train"), default="eval",
                    help="ProcGen: unseen levels (eval) or the training levels")
    ap.add_argument("--num-envs", type=int, default=8)
    ap.add_argument("--greedy", action="store_true", help="argmax actions instead of sampling")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--video", type=Path, help="write the first episodes of stream 0 (.mp4/.gif)")
    ap.add_argument("--video-episodes", type=int, default=1)
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--json", type=Path, help="where to write the result (default: run dir)")
    args = ap.parse_args(argv)
    if args.episodes < 1 or args.num_envs < 1:
        ap.error("--episodes and --num-envs must be >= 1")
    try:
        ckpt = find_checkpoint(args.path)
        result = evaluate(ckpt, args.episodes, args.split, args.num_envs, args.greedy,
                          args.device, args.video, args.video_episodes, args.seed)
    except (ConfigError, CheckpointError, EnvDataError) as e:
        print(f"rtrl-eval: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"{result['episodes']} episodes ({result['split']} split): "
          f"return {result['return_mean']:.3f} +- {result['return_std']:.3f}")
    out = args.json or ckpt.parent.parent / "eval.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
