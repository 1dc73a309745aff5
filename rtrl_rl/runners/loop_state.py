"""What a training checkpoint holds, and where the loop finds the one to resume from.

A checkpoint is rank 0's file: the shared weights and optimizer state, the frame count, and
each rank's per-stream part (temporal-gradient state, runner state, RNG state and its recent
episodes). Rank 0's part sits at the top level, so a single-process checkpoint has no
``ranks`` entry; rank ``r > 0``'s is ``ranks[r - 1]``.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rtrl_rl.algos.learner import LearnerBase
from rtrl_rl.checkpoint import capture_rng
from rtrl_rl.config import TrainConfig
from rtrl_rl.errors import ConfigError
from rtrl_rl.grad.base import TemporalGrad
from rtrl_rl.models.agent import Agent
from rtrl_rl.resume import check_resume_config, load_resume_checkpoint
from rtrl_rl.runners.distributed import Collective, Ranks

log = logging.getLogger(__name__)

#: Top-level keys every checkpoint the loop resumes from must have.
CHECKPOINT_KEYS = ("agent", "learner", "grad", "runner", "counters", "rng", "wandb_id")


class EpisodeWindow:
    """This rank's most recent finished episodes: its share of the window ``return_mean``
    and ``episode_length`` are taken over (at least 100 episodes over all ranks)."""

    def __init__(self, num_envs: int, world_size: int) -> None:
        size = max(100, 2 * num_envs)
        self.returns: deque[float] = deque(maxlen=math.ceil(size / world_size))
        self.lengths: deque[int] = deque(maxlen=self.returns.maxlen)

    def add(self, episodes: Iterable[tuple[float, int]]) -> None:
        """Episodes ``(return, length)`` that ended since the last call."""
        for ret, length in episodes:
            self.returns.append(ret)
            self.lengths.append(length)

    def state_dict(self) -> dict[str, list]:
        return {"returns": list(self.returns), "lengths": list(self.lengths)}

    def load_state_dict(self, part: dict[str, Any]) -> None:
        """Restore from a rank's part of a checkpoint (``rank_part``)."""
        self.returns.extend(part["returns"])
        self.lengths.extend(part["lengths"])

    def gather(self, coll: Collective) -> tuple[list[float], list[int]]:
        """Every rank's recent returns and lengths (a collective: every rank calls it)."""
        parts = coll.gather((list(self.returns), list(self.lengths)))
        return [r for p in parts for r in p[0]], [n for p in parts for n in p[1]]


def find_resume_state(cfg: TrainConfig, config_dict: dict[str, Any],
                      ranks: Ranks) -> tuple[Path | None, dict]:
    """The checkpoint ``cfg.resume`` asks for and its state, checked against this run's
    config and world size; ``(None, {})`` for a fresh run."""
    found = load_resume_checkpoint(cfg.resume, cfg.run_dir, CHECKPOINT_KEYS)
    if found is None:
        return None, {}
    path, ckpt = found
    saved = int(ckpt.get("world_size", 1))
    if saved != ranks.world_size:
        raise ConfigError(f"resume: checkpoint {path} was written by {saved} rank(s), this "
                          f"run has {ranks.world_size}; resume with the same world size")
    if "config" not in ckpt:
        log.warning("checkpoint %s records no config: cannot check this run's against it", path)
        return path, ckpt
    for change in check_resume_config(ckpt["config"], config_dict, path):
        log.info("resume: applying the changed %s", change)
    return path, ckpt


def rank_part(ckpt: dict, rank: int) -> dict:
    """Rank ``rank``'s per-stream state in a checkpoint: grad, runner, rng, returns and
    lengths."""
    if rank == 0:
        c = ckpt["counters"]
        return {"grad": ckpt["grad"], "runner": ckpt["runner"], "rng": ckpt["rng"],
                "returns": c["returns"], "lengths": c["lengths"]}
    return ckpt["ranks"][rank - 1]


def own_part(grad: TemporalGrad, runner: Any, window: EpisodeWindow,
             with_runner: bool = True) -> dict:
    """This rank's per-stream state, as ``rank_part`` reads it back. ``with_runner=False``
    leaves the runner's out (its envs are mid-rollout: episodes restart on resume)."""
    return {"grad": grad.state_dict(), "runner": runner.state_dict() if with_runner else {},
            "rng": capture_rng(), **window.state_dict()}


def checkpoint_state(parts: list[dict], agent: Agent, learner: LearnerBase, frames: int,
                     wandb_id: str | None, config_dict: dict[str, Any],
                     ranks: Ranks) -> dict[str, Any]:
    """The state rank 0 saves, from every rank's ``own_part`` (``parts[r]`` is rank r's)."""
    own = parts[0]
    state = {
        "agent": agent.state_dict(), "learner": learner.state_dict(),
        "grad": own["grad"], "runner": own["runner"],
        "counters": {"frames": frames, "returns": own["returns"], "lengths": own["lengths"]},
        "rng": own["rng"], "wandb_id": wandb_id, "config": config_dict,
    }
    if ranks.active:
        state.update(world_size=ranks.world_size, ranks=parts[1:])
    return state
