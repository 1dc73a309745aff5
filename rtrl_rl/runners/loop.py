"""The training loop, read top to bottom: build, maybe resume, collect -> learn -> log ->
checkpoint, until the frame budget is spent or a signal arrives.

``train(cfg)`` is shared by every runner and every gradient method; it returns the final
``return_mean`` (the objective for sweeps). Under ``torchrun`` each rank runs this loop with
its own envs; ``rtrl_rl.runners.distributed`` combines their gradients, returns and
checkpoints, and every collective there is a no-op for a single process.
"""

from __future__ import annotations

import logging
import math
import random
import signal
import time
from collections import deque
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rtrl_rl.algos import make_learner
from rtrl_rl.algos.learner import read_metrics
from rtrl_rl.checkpoint import (
    CheckpointError,
    capture_rng,
    load_module_state,
    restore_rng,
    save_checkpoint,
)
from rtrl_rl.config import TrainConfig, to_dict
from rtrl_rl.envs import make_env
from rtrl_rl.errors import ConfigError, EnvDataError, TrainingDiverged
from rtrl_rl.grad import make_grad, sensitivity_pass
from rtrl_rl.malloc import keep_freed_memory
from rtrl_rl.models.agent import Agent
from rtrl_rl.resume import check_resume_config, load_resume_checkpoint
from rtrl_rl.run_dir import RunDirLock
from rtrl_rl.run_logger import RunLogger
from rtrl_rl.runners import RUNNERS
from rtrl_rl.runners.distributed import Collective, Ranks, rank_config

log = logging.getLogger(__name__)
CHECKPOINT_KEYS = ("agent", "learner", "grad", "runner", "counters", "rng", "wandb_id")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: '{name}' asked for but CUDA is not available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_runner(cfg: TrainConfig, agent: Agent, device: torch.device, env):
    """The runner ``cfg.runner.kind`` names (``rtrl_rl.runners.RUNNERS``)."""
    return RUNNERS[cfg.runner.kind](cfg, agent, device, env)


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint and exits at the next update."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old = {}

    def __enter__(self) -> _StopFlag:
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: give up at once
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


class _NoLogger:
    """What ranks other than 0 log: nothing (rank 0 logs the aggregate)."""

    wandb_id = None

    def log(self, frames: int, metrics: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


def _resume_state(cfg: TrainConfig, config_dict: dict[str, Any],
                  ranks: Ranks) -> tuple[Path | None, dict]:
    """The checkpoint to resume from and its state, checked against this run's config."""
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


def train(cfg: TrainConfig) -> float:
    """Run (or resume) one training job in ``cfg.run_dir``, which it (rank 0) holds locked."""
    ranks = Ranks.from_env()
    device = ranks.device(resolve_device(cfg.device))
    coll = Collective(ranks, device)
    clean = False
    try:
        cfg = replace(cfg, run_dir=coll.broadcast(cfg.run_dir))  # one run dir for all ranks
        with RunDirLock(cfg.run_dir) if ranks.is_main else nullcontext():
            result = _train(cfg, ranks, device, coll)
        clean = True
        return result
    except SystemExit:  # a signal: every rank stopped at the same update and saved
        clean = True
        raise
    finally:
        coll.close(clean)


def _rank_part(ckpt: dict, rank: int) -> dict:
    """Rank ``rank``'s per-stream state in a checkpoint (rank 0's sits at the top level)."""
    if rank == 0:
        c = ckpt["counters"]
        return {"grad": ckpt["grad"], "runner": ckpt["runner"], "rng": ckpt["rng"],
                "returns": c["returns"], "lengths": c["lengths"]}
    return ckpt["ranks"][rank - 1]


def _train(cfg: TrainConfig, ranks: Ranks, device: torch.device, coll: Collective) -> float:
    run_dir = Path(cfg.run_dir)
    ckpt_dir = run_dir / "checkpoints"
    config_dict = to_dict(cfg)
    resume_from, ckpt = _resume_state(cfg, config_dict, ranks)
    seed_everything(cfg.seed)
    threads = cfg.torch_threads or (torch.get_num_threads() if ranks.active else 0)
    if threads:  # under torchrun OMP_NUM_THREADS (1 by default) sizes both pools
        torch.set_num_threads(threads)
        sensitivity_pass.limit_threads(threads)
    keep_freed_memory()  # the same tensors every update: no page faults for them

    mine = rank_config(cfg, ranks)  # this rank's streams and seed
    env = make_env(cfg.env, mine.runner.num_envs, mine.seed)
    agent = Agent(env.spec, cfg.model, cfg.algo.reward_clip).to(device)
    coll.broadcast_module(agent)
    if mine.seed != cfg.seed:
        seed_everything(mine.seed)  # same initial weights, this rank's own action samples
    grad = make_grad(cfg.grad.name, agent.core, mine.runner.num_envs)
    frames_per_step = int(getattr(env, "frames_per_step", 1))
    frames_per_update = cfg.runner.unroll * cfg.runner.streams_per_batch * frames_per_step
    # The LR schedule spans the frame budget; max_updates only stops the run earlier.
    schedule_updates = math.ceil(cfg.runner.total_frames / frames_per_update)
    total_updates = min(schedule_updates, cfg.max_updates or schedule_updates)
    combine = ((lambda params: coll.combine_grads(params, cfg.algo.loss_reduction))
               if coll.active else None)
    learner = make_learner(agent, grad, cfg.algo, schedule_updates, combine_grads=combine)
    runner = make_runner(mine, agent, device, env)

    frames, wandb_id = 0, None
    # each rank keeps its share of the window over which return_mean is taken
    window = max(100, 2 * cfg.runner.num_envs)
    returns: deque[float] = deque(maxlen=math.ceil(window / ranks.world_size))
    lengths: deque[int] = deque(maxlen=returns.maxlen)
    if ckpt:
        try:
            part = _rank_part(ckpt, ranks.rank)
            load_module_state(agent, ckpt["agent"], what="agent")
            learner.load_state_dict(ckpt["learner"])
            grad.load_state_dict(part["grad"])
            if not runner.load_state_dict(part["runner"]):
                log.warning("this env cannot restore its state: episodes restart on resume")
            frames = int(ckpt["counters"]["frames"])
            returns.extend(part["returns"])
            lengths.extend(part["lengths"])
            restore_rng(part["rng"])
        except (CheckpointError, KeyError, ValueError, TypeError) as e:
            runner.close()
            raise ConfigError(f"resume: cannot apply checkpoint {resume_from}: {e}") from None
        wandb_id = ckpt["wandb_id"] or None
        log.info("resumed from %s at %d frames", resume_from, frames)

    log.info("grad=%s: %s", grad.name, grad.description)
    if ranks.active:
        log.info("rank %d of %d on %s: %d streams, env seed %d", ranks.rank,
                 ranks.world_size, device, mine.runner.num_envs, mine.seed)
    log_every = max(1, total_updates // 200)
    logger = RunLogger(run_dir, cfg.logger, config_dict, cfg.runner.total_frames,
                       start_frames=frames, wandb_id=wandb_id, run_name=cfg.name or None,
                       ) if ranks.is_main else _NoLogger()

    def all_returns() -> tuple[list[float], list[int]]:
        """Every rank's recent episode returns and lengths (a collective)."""
        parts = coll.gather((list(returns), list(lengths)))
        return [r for p in parts for r in p[0]], [n for p in parts for n in p[1]]

    def checkpoint(final: bool, with_runner: bool = True) -> Path | None:
        """Save (rank 0, with every rank's per-stream state); a failed periodic save warns
        and keeps the previous checkpoint. ``with_runner=False``: the envs are mid-rollout
        (bad env data stopped them), so their episodes restart on resume."""
        learner.reset_nonfinite_streams()  # a checkpoint holds finite values only
        parts = coll.gather({"grad": grad.state_dict(),
                             "runner": runner.state_dict() if with_runner else {},
                             "rng": capture_rng(), "returns": list(returns),
                             "lengths": list(lengths)})
        if not ranks.is_main:
            return None
        own = parts[0]
        state = {
            "agent": agent.state_dict(), "learner": learner.state_dict(),
            "grad": own["grad"], "runner": own["runner"],
            "counters": {"frames": frames, "returns": own["returns"],
                         "lengths": own["lengths"]},
            "rng": own["rng"], "wandb_id": logger.wandb_id, "config": config_dict,
        }
        if ranks.active:
            state.update(world_size=ranks.world_size, ranks=parts[1:])
        try:
            return save_checkpoint(ckpt_dir, state, learner.updates, keep=cfg.keep_checkpoints)
        except CheckpointError as e:
            if final:
                raise
            log.warning("periodic checkpoint failed, training goes on and the previous "
                        "checkpoint is kept: %s", e)
            return None

    # fps excludes the first update of this process (worker start-up, allocator warm-up).
    t_start, frames_start, warm = time.time(), frames, None
    last_ckpt = time.time()

    def run(stop: _StopFlag) -> int | None:
        """Collect, learn, log and checkpoint until the budget is spent; returns the signal
        that stopped it early, if one did."""
        nonlocal frames, warm, last_ckpt
        while learner.updates < total_updates:
            rollout, episodes = runner.next_rollout(learner.updates)
            for ret, length in episodes:
                returns.append(ret)
                lengths.append(length)
            if device.type == "cuda" and not rollout.obs.is_pinned():
                rollout = rollout.pin_memory()
            metrics = learner.update(rollout.to(device, non_blocking=True))
            runner.after_update()
            frames += rollout.unroll * rollout.batch * frames_per_step * ranks.world_size
            if warm is None:
                warm = (time.time(), frames)
            if learner.updates % log_every == 0 or learner.updates == total_updates:
                t0, f0 = warm if frames > warm[1] else (t_start, frames_start)
                elapsed = max(time.time() - t0, 1e-9)
                # the one wait for the device; losses are averaged over ranks
                metrics = coll.mean_metrics(read_metrics(metrics))
                rets, lens = all_returns()
                metrics.update({
                    "return_mean": float(np.mean(rets)) if rets else float("nan"),
                    "episode_length": float(np.mean(lens)) if lens else float("nan"),
                    "episodes": len(rets),
                    "fps": (frames - f0) / elapsed,
                    "updates": learner.updates,
                    "world_size": ranks.world_size,
                })
                metrics.update(getattr(runner, "metrics", lambda: {})())
                logger.log(frames, metrics)
            # every rank stops, or saves, at the same update
            signum, due = coll.max_values(
                stop.signum or 0, time.time() - last_ckpt > cfg.checkpoint_interval_s)
            if signum:
                return int(signum)
            if due:
                checkpoint(final=False)
                last_ckpt = time.time()
        return None

    interrupted, stopped, path = None, None, None
    try:
        with _StopFlag() as stop:
            try:
                interrupted = run(stop)
            except (EnvDataError, TrainingDiverged) as e:  # nothing bad reached the weights
                stopped = e
            if not (isinstance(stopped, EnvDataError) and ranks.active):  # else: no collective
                path = checkpoint(final=True, with_runner=not isinstance(stopped, EnvDataError))
    finally:
        runner.close()
        logger.close()
    if stopped is not None:
        log.error("%s; stopped at %d frames, last good state in %s", stopped, frames, path)
        raise stopped
    if interrupted is not None:
        name = signal.Signals(interrupted).name
        if ranks.is_main:
            log.warning("%s: stopped at %d frames; checkpoint %s", name, frames, path)
        raise SystemExit(128 + interrupted)
    rets, _ = all_returns()
    return float(np.mean(rets)) if rets else float("nan")
