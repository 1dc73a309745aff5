"""The score of a uniform random policy on a task: the floor of the report's normalised scores.

Measured by the suite itself with the task's own env config, so it uses the same episode
returns (raw, unclipped) as the runs. Cached in ``OUT/random/<task>.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rtrl_rl.envs import make_env
from rtrl_rl.envs.base import ActionSpec
from rtrl_rl.run_logger import write_atomic


def random_actions(spec: ActionSpec, num_envs: int, rng: np.random.Generator) -> torch.Tensor:
    """Uniform actions ``[B, *spec.shape]``: each category equally likely; a box uniform
    between its bounds (standard normal where a bound is infinite)."""
    if spec.kind == "box":
        low, high = np.asarray(spec.low), np.asarray(spec.high)
        finite = np.isfinite(low) & np.isfinite(high)
        draw = np.where(finite, rng.uniform(np.where(finite, low, 0), np.where(finite, high, 1),
                                            (num_envs, len(low))),
                        rng.standard_normal((num_envs, len(low))))
        return torch.as_tensor(draw, dtype=torch.float32)
    nvec = np.asarray(spec.nvec)
    draw = rng.integers(0, nvec, (num_envs, len(nvec)))
    out = torch.as_tensor(draw, dtype=torch.long)
    return out[:, 0] if spec.kind == "discrete" else out


def random_score(env_cfg: dict[str, Any], episodes: int, seed: int = 12345,
                 num_envs: int = 16) -> dict[str, float]:
    """Mean and standard error of the return of ``episodes`` random-policy episodes."""
    env = make_env(env_cfg, num_envs, seed, split="eval")
    rng = np.random.default_rng(seed)
    returns: list[float] = []
    try:
        env.reset()
        while len(returns) < episodes:
            ts = env.step(random_actions(env.spec.action, num_envs, rng))
            returns.extend(ts.episode_return[ts.done].tolist())
    finally:
        env.close()
    r = np.asarray(returns[:episodes], dtype=float)
    return {"mean": float(r.mean()), "sem": float(r.std(ddof=1) / np.sqrt(len(r)))
            if len(r) > 1 else 0.0, "episodes": len(r)}


def cached_random_score(path: Path, env_cfg: dict[str, Any], episodes: int) -> dict[str, float]:
    """``random_score``, read from ``path`` when it was measured with as many episodes."""
    try:
        saved = json.loads(path.read_text())
        if saved.get("episodes") == episodes and saved.get("env") == env_cfg:
            return saved
    except (OSError, ValueError, AttributeError):
        pass
    score = {**random_score(env_cfg, episodes), "env": env_cfg}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(score, indent=1) + "\n")
    return score
