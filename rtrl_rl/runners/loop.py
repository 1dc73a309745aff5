"""The training loop, read top to bottom: build, maybe resume, collect -> learn -> log ->
checkpoint, until the frame budget is spent or a signal arrives.

``train(cfg)`` is shared by every runner and every gradient method; it returns the final
``return_mean`` (the objective for sweeps).
"""

from __future__ import annotations

import logging
import math
import random
import signal
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rtrl_rl.algos.learner import Learner, read_metrics
from rtrl_rl.checkpoint import (
    CheckpointError,
    capture_rng,
    load_module_state,
    restore_rng,
    save_checkpoint,
)
from rtrl_rl.config import TrainConfig, to_dict
from rtrl_rl.envs import make_env
from rtrl_rl.errors import ConfigError
from rtrl_rl.grad import make_grad, sensitivity_pass
from rtrl_rl.logging import RunLogger
from rtrl_rl.models.agent import Agent
from rtrl_rl.resume import check_resume_config, load_resume_checkpoint
from rtrl_rl.run_dir import RunDirLock

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
    if cfg.runner.kind == "async":
        from rtrl_rl.runners.async_runner import AsyncRunner

        return AsyncRunner(cfg, agent, device, spec=env.spec, probe_env=env)
    from rtrl_rl.runners.sync import SyncRunner

    return SyncRunner(cfg.env, cfg.runner, agent, device, cfg.seed, env=env)


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


def _resume_state(cfg: TrainConfig, config_dict: dict[str, Any]) -> tuple[Path | None, dict]:
    """The checkpoint to resume from and its state, checked against this run's config."""
    found = load_resume_checkpoint(cfg.resume, cfg.run_dir, CHECKPOINT_KEYS)
    if found is None:
        return None, {}
    path, ckpt = found
    if "config" not in ckpt:
        log.warning("checkpoint %s records no config: cannot check this run's against it", path)
        return path, ckpt
    for change in check_resume_config(ckpt["config"], config_dict, path):
        log.info("resume: applying the changed %s", change)
    return path, ckpt


def train(cfg: TrainConfig) -> float:
    """Run (or resume) one training job in ``cfg.run_dir``, which it holds locked."""
    with RunDirLock(cfg.run_dir):
        return _train(cfg)


def _train(cfg: TrainConfig) -> float:
    device = resolve_device(cfg.device)
    run_dir = Path(cfg.run_dir)
    ckpt_dir = run_dir / "checkpoints"
    config_dict = to_dict(cfg)
    resume_from, ckpt = _resume_state(cfg, config_dict)
    seed_everything(cfg.seed)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
        sensitivity_pass.limit_threads(cfg.torch_threads)

    env = make_env(cfg.env, cfg.runner.num_envs, cfg.seed)
    agent = Agent(env.spec, cfg.model, cfg.algo.reward_clip).to(device)
    grad = make_grad(cfg.grad.name, agent.core, cfg.runner.num_envs)
    frames_per_step = int(getattr(env, "frames_per_step", 1))
    frames_per_update = cfg.runner.unroll * cfg.runner.streams_per_batch * frames_per_step
    # The LR schedule spans the frame budget; max_updates only stops the run earlier.
    schedule_updates = math.ceil(cfg.runner.total_frames / frames_per_update)
    total_updates = min(schedule_updates, cfg.max_updates or schedule_updates)
    learner = Learner(agent, grad, cfg.algo, schedule_updates)
    runner = make_runner(cfg, agent, device, env)

    frames, wandb_id = 0, None
    returns: deque[float] = deque(maxlen=max(100, 2 * cfg.runner.num_envs))
    lengths: deque[int] = deque(maxlen=returns.maxlen)
    if ckpt:
        try:
            load_module_state(agent, ckpt["agent"], what="agent")
            learner.load_state_dict(ckpt["learner"])
            grad.load_state_dict(ckpt["grad"])
            if not runner.load_state_dict(ckpt["runner"]):
                log.warning("this env cannot restore its state: episodes restart on resume")
            counters = ckpt["counters"]
            frames = int(counters["frames"])
            returns.extend(counters["returns"])
            lengths.extend(counters["lengths"])
            restore_rng(ckpt["rng"])
        except (CheckpointError, KeyError, ValueError, TypeError) as e:
            runner.close()
            raise ConfigError(f"resume: cannot apply checkpoint {resume_from}: {e}") from None
        wandb_id = ckpt["wandb_id"] or None
        log.info("resumed from %s at %d frames", resume_from, frames)

    log.info("grad=%s: %s", grad.name, grad.description)
    log_every = max(1, total_updates // 200)
    logger = RunLogger(run_dir, cfg.logger, config_dict, cfg.runner.total_frames,
                       start_frames=frames, wandb_id=wandb_id, run_name=cfg.name or None)

    def checkpoint(final: bool) -> Path | None:
        """Save; a failed periodic save warns and keeps the previous checkpoint."""
        state = {
            "agent": agent.state_dict(), "learner": learner.state_dict(),
            "grad": grad.state_dict(), "runner": runner.state_dict(),
            "counters": {"frames": frames, "returns": list(returns), "lengths": list(lengths)},
            "rng": capture_rng(), "wandb_id": logger.wandb_id, "config": config_dict,
        }
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
    interrupted = None
    try:
        with _StopFlag() as stop:
            while learner.updates < total_updates:
                rollout, episodes = runner.next_rollout(learner.updates)
                for ret, length in episodes:
                    returns.append(ret)
                    lengths.append(length)
                if device.type == "cuda" and not rollout.obs.is_pinned():
                    rollout = rollout.pin_memory()
                metrics = learner.update(rollout.to(device, non_blocking=True))
                runner.after_update()
                frames += rollout.unroll * rollout.batch * frames_per_step
                if warm is None:
                    warm = (time.time(), frames)
                if learner.updates % log_every == 0 or learner.updates == total_updates:
                    t0, f0 = warm if frames > warm[1] else (t_start, frames_start)
                    elapsed = max(time.time() - t0, 1e-9)
                    metrics = read_metrics(metrics)  # the one wait for the device
                    metrics.update({
                        "return_mean": float(np.mean(returns)) if returns else float("nan"),
                        "episode_length": float(np.mean(lengths)) if lengths else float("nan"),
                        "episodes": len(returns),
                        "fps": (frames - f0) / elapsed,
                        "updates": learner.updates,
                    })
                    metrics.update(getattr(runner, "metrics", lambda: {})())
                    logger.log(frames, metrics)
                if stop.signum is not None:
                    interrupted = stop.signum
                    break
                if time.time() - last_ckpt > cfg.checkpoint_interval_s:
                    checkpoint(final=False)
                    last_ckpt = time.time()
            path = checkpoint(final=True)
    finally:
        runner.close()
        logger.close()
    if interrupted is not None:
        name = signal.Signals(interrupted).name
        log.warning("%s: stopped at %d frames; checkpoint %s", name, frames, path)
        raise SystemExit(128 + interrupted)
    return float(np.mean(returns)) if returns else float("nan")
