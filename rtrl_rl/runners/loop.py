"""The training loop: build, maybe resume, then collect -> learn -> log -> checkpoint until
the frame budget is spent or a signal arrives (``TrainingLoop.run``).

``train(cfg)`` is shared by every runner and every gradient method; it returns the final
``return_mean`` (the objective for sweeps). Under ``torchrun`` each rank runs this loop with
its own envs; ``rtrl_rl.runners.distributed`` combines their gradients, returns and
checkpoints, and every collective there is a no-op for a single process. What a checkpoint
holds is in ``rtrl_rl.runners.loop_state``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import signal
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rtrl_rl.algos import make_learner
from rtrl_rl.algos.learner import read_metrics
from rtrl_rl.checkpoint import CheckpointError, load_module_state, restore_rng, save_checkpoint
from rtrl_rl.config import TrainConfig, to_dict
from rtrl_rl.envs import make_env
from rtrl_rl.errors import ConfigError, EnvDataError, TrainingDiverged
from rtrl_rl.grad import make_grad, sensitivity_pass
from rtrl_rl.malloc import keep_freed_memory
from rtrl_rl.models.agent import Agent
from rtrl_rl.run_dir import RunDirLock
from rtrl_rl.run_logger import RunLogger, write_atomic
from rtrl_rl.runners import RUNNERS
from rtrl_rl.runners.distributed import Collective, Ranks, rank_config
from rtrl_rl.runners.evaluation import run_episodes, summary
from rtrl_rl.runners.loop_state import (
    EpisodeWindow,
    checkpoint_state,
    find_resume_state,
    own_part,
    rank_part,
)

log = logging.getLogger(__name__)


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


def train(cfg: TrainConfig) -> float:
    """Run (or resume) one training job in ``cfg.run_dir``, which it (rank 0) holds locked."""
    ranks = Ranks.from_env()
    device = ranks.device(resolve_device(cfg.device))
    coll = Collective(ranks, device)
    clean = False
    try:
        cfg = replace(cfg, run_dir=coll.broadcast(cfg.run_dir))  # one run dir for all ranks
        with RunDirLock(cfg.run_dir) if ranks.is_main else nullcontext():
            result = TrainingLoop(cfg, ranks, device, coll).run()
        clean = True
        return result
    except SystemExit:  # a signal: every rank stopped at the same update and saved
        clean = True
        raise
    finally:
        coll.close(clean)


class StopFlag:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint and exits at the next update."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old = {}

    def __enter__(self) -> StopFlag:
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


class TrainingLoop:
    """One rank's training job: its env, agent, gradient method, learner, runner and logger,
    and the counters a checkpoint keeps (``frames``, the episode window).

    ``run`` is the whole job; the other methods are its steps. Those that hold a collective
    (``log``, ``poll``, ``checkpoint``, ``finish``) are reached by every rank at the same
    update, which is what keeps the ranks in step.
    """

    def __init__(self, cfg: TrainConfig, ranks: Ranks, device: torch.device,
                 coll: Collective) -> None:
        self.cfg, self.ranks, self.device, self.coll = cfg, ranks, device, coll
        self.ckpt_dir = Path(cfg.run_dir) / "checkpoints"
        self.config_dict = to_dict(cfg)
        resume_from, ckpt = find_resume_state(cfg, self.config_dict, ranks)  # before building
        seed_everything(cfg.seed)
        threads = cfg.torch_threads or (torch.get_num_threads() if ranks.active else 0)
        if threads:  # under torchrun OMP_NUM_THREADS (1 by default) sizes both pools
            torch.set_num_threads(threads)
            sensitivity_pass.limit_threads(threads)
        keep_freed_memory()  # the same tensors every update: no page faults for them

        mine = rank_config(cfg, ranks)  # this rank's streams and seed
        env = make_env(cfg.env, mine.runner.num_envs, mine.seed)
        self.agent = Agent(env.spec, cfg.model, cfg.algo.reward_clip).to(device)
        coll.broadcast_module(self.agent)
        if mine.seed != cfg.seed:
            seed_everything(mine.seed)  # same initial weights, this rank's own action samples
        self.grad = make_grad(cfg.grad.name, self.agent.core, mine.runner.num_envs)
        self.frames_per_step = int(getattr(env, "frames_per_step", 1))
        frames_per_update = cfg.runner.unroll * cfg.runner.streams_per_batch * self.frames_per_step
        # The LR schedule spans the frame budget; max_updates only stops the run earlier.
        schedule_updates = math.ceil(cfg.runner.total_frames / frames_per_update)
        self.total_updates = min(schedule_updates, cfg.max_updates or schedule_updates)
        # about 200 rows per run, and a row at least every 100 updates, so that a long budget
        # stopped early still has a curve
        self.log_every = max(1, min(self.total_updates // 200, 100))
        combine = ((lambda params: coll.combine_grads(params, cfg.algo.loss_reduction))
                   if coll.active else None)
        self.learner = make_learner(self.agent, self.grad, cfg.algo, schedule_updates,
                                    combine_grads=combine)
        self.runner = make_runner(mine, self.agent, device, env)

        self.frames = 0
        self.window = EpisodeWindow(cfg.runner.num_envs, ranks.world_size)
        try:
            wandb_id = self.resume(resume_from, ckpt) if ckpt else None
            log.info("grad=%s: %s", self.grad.name, self.grad.description)
            if ranks.active:
                log.info("rank %d of %d on %s: %d streams, env seed %d", ranks.rank,
                         ranks.world_size, device, mine.runner.num_envs, mine.seed)
            self.logger = RunLogger(
                Path(cfg.run_dir), cfg.logger, self.config_dict, cfg.runner.total_frames,
                start_frames=self.frames, wandb_id=wandb_id, run_name=cfg.name or None,
            ) if ranks.is_main else _NoLogger()
        except BaseException:
            self.runner.close()
            raise
        # fps excludes the first update of this process (worker start-up, allocator warm-up)
        self._t_start, self._frames_start = time.time(), self.frames
        self._warm: tuple[float, int] | None = None
        self._last_ckpt = time.time()

    def run(self) -> float:
        """Train until ``total_updates``, a signal, bad env data or divergence; returns the
        final ``return_mean``. A signal saves a checkpoint and exits ``128 + signum``
        (``SystemExit``); ``EnvDataError`` and ``TrainingDiverged`` save the last good
        state and are raised again."""
        stopped: EnvDataError | TrainingDiverged | None = None
        signum, path = 0, None
        try:
            with StopFlag() as stop:
                try:
                    while self.learner.updates < self.total_updates:
                        metrics = self.step()
                        if self.log_due():
                            self.log(metrics)
                        signum = self.poll(stop)
                        if signum:
                            break
                except (EnvDataError, TrainingDiverged) as e:  # nothing bad reached the weights
                    stopped = e
                path = self.final_checkpoint(stopped)
        finally:
            self.close()
        return self.finish(stopped, signum, path)

    def resume(self, path: Path | None, ckpt: dict) -> str | None:
        """Load this rank's state from ``ckpt`` (read from ``path``); returns the W&B run id
        to go on with. Raises ``ConfigError`` when the checkpoint does not fit this run."""
        try:
            part = rank_part(ckpt, self.ranks.rank)
            load_module_state(self.agent, ckpt["agent"], what="agent")
            self.learner.load_state_dict(ckpt["learner"])
            self.grad.load_state_dict(part["grad"])
            if not self.runner.load_state_dict(part["runner"]):
                log.warning("this env cannot restore its state: episodes restart on resume")
            self.frames = int(ckpt["counters"]["frames"])
            self.window.load_state_dict(part)
            restore_rng(part["rng"])
        except (CheckpointError, KeyError, ValueError, TypeError) as e:
            raise ConfigError(f"resume: cannot apply checkpoint {path}: {e}") from None
        log.info("resumed from %s at %d frames", path, self.frames)
        return ckpt["wandb_id"] or None

    def step(self) -> dict[str, Any]:
        """One update: collect a rollout, learn from it, count its frames (every rank's).
        Returns the learner's metrics, still on the device."""
        rollout, episodes = self.runner.next_rollout(self.learner.updates)
        self.window.add(episodes)
        if self.device.type == "cuda" and not rollout.obs.is_pinned():
            rollout = rollout.pin_memory()
        metrics = self.learner.update(rollout.to(self.device, non_blocking=True))
        self.runner.after_update()
        self.frames += rollout.unroll * rollout.batch * self.frames_per_step * self.ranks.world_size
        if self._warm is None:
            self._warm = (time.time(), self.frames)
        return metrics

    def log_due(self) -> bool:
        """Every ``log_every`` updates, and always at the last update."""
        u = self.learner.updates
        return u % self.log_every == 0 or u == self.total_updates

    def log(self, metrics: dict[str, Any]) -> None:
        """Log the update's metrics (averaged over ranks) with the episode window and fps."""
        t0, f0 = (self._warm if self.frames > self._warm[1]
                  else (self._t_start, self._frames_start))
        elapsed = max(time.time() - t0, 1e-9)
        # the one wait for the device; losses are averaged over ranks
        out = self.coll.mean_metrics(read_metrics(metrics))
        rets, lens = self.window.gather(self.coll)
        out.update({
            "return_mean": float(np.mean(rets)) if rets else float("nan"),
            "episode_length": float(np.mean(lens)) if lens else float("nan"),
            "episodes": len(rets),
            "fps": (self.frames - f0) / elapsed,
            "agent_steps": self.frames // self.frames_per_step,
            "updates": self.learner.updates,
            "world_size": self.ranks.world_size,
        })
        out.update(getattr(self.runner, "metrics", lambda: {})())
        self.logger.log(self.frames, out)

    def poll(self, stop: StopFlag) -> int:
        """The signal any rank got (0: none), so that every rank stops at the same update;
        otherwise saves a periodic checkpoint when ``checkpoint_interval_s`` has passed on
        any rank."""
        signum, due = self.coll.max_values(
            stop.signum or 0, time.time() - self._last_ckpt > self.cfg.checkpoint_interval_s)
        if signum:
            return int(signum)
        if due:
            self.checkpoint(final=False)
            self._last_ckpt = time.time()
        return 0

    def checkpoint(self, final: bool, with_runner: bool = True) -> Path | None:
        """Save (rank 0, with every rank's per-stream state); the path, None on other ranks.
        A failed periodic save warns and keeps the previous checkpoint; a failed final one
        raises ``CheckpointError``. ``with_runner=False``: the envs are mid-rollout (bad env
        data stopped them), so their episodes restart on resume."""
        self.learner.reset_nonfinite_streams()  # a checkpoint holds finite values only
        parts = self.coll.gather(own_part(self.grad, self.runner, self.window, with_runner))
        if not self.ranks.is_main:
            return None
        state = checkpoint_state(parts, self.agent, self.learner, self.frames,
                                 self.logger.wandb_id, self.config_dict, self.ranks)
        try:
            return save_checkpoint(self.ckpt_dir, state, self.learner.updates,
                                   keep=self.cfg.keep_checkpoints)
        except CheckpointError as e:
            if final:
                raise
            log.warning("periodic checkpoint failed, training goes on and the previous "
                        "checkpoint is kept: %s", e)
            return None

    def final_checkpoint(self, stopped: Exception | None) -> Path | None:
        """The checkpoint at the end of the run. After bad env data the runner's state is
        left out, and under torchrun nothing is saved: the other ranks are not at this
        collective."""
        bad_env = isinstance(stopped, EnvDataError)
        if bad_env and self.ranks.active:
            return None
        return self.checkpoint(final=True, with_runner=not bad_env)

    def close(self) -> None:
        """Stop the runner (its envs and worker processes) and the logger."""
        try:
            self.runner.close()
        finally:
            self.logger.close()

    def finish(self, stopped: Exception | None, signum: int, path: Path | None) -> float:
        """The run's result: raises ``stopped`` again, or ``SystemExit(128 + signum)`` after
        a signal; otherwise returns ``return_mean`` over every rank's window."""
        if stopped is not None:
            log.error("%s; stopped at %d frames, last good state in %s", stopped,
                      self.frames, path)
            raise stopped
        if signum:
            if self.ranks.is_main:
                log.warning("%s: stopped at %d frames; checkpoint %s",
                            signal.Signals(signum).name, self.frames, path)
            raise SystemExit(128 + signum)
        if self.cfg.eval_episodes and path is not None:
            self.evaluate_final(path)
        rets, _ = self.window.gather(self.coll)
        return float(np.mean(rets)) if rets else float("nan")

    def evaluate_final(self, path: Path) -> None:
        """``eval_episodes``: the final policy on that many new episodes (the env's eval
        split: ProcGen's held-out levels, a seed stream of its own elsewhere), written to
        ``run_dir/eval.json``."""
        n = self.cfg.eval_episodes
        env = make_env(self.cfg.env, min(n, self.cfg.runner.num_envs), self.cfg.seed,
                       split="eval")
        returns, lengths, _ = run_episodes(self.agent, env, n, self.device, self.cfg.seed)
        result = {"checkpoint": str(path), "split": "eval", **summary(returns, lengths),
                  "greedy": False, "env_frames": self.frames}
        write_atomic(Path(self.cfg.run_dir) / "eval.json", json.dumps(result, indent=1))
        log.info("eval: %d episodes, return %.3f +- %.3f (eval.json)", result["episodes"],
                 result["return_mean"], result["return_std"])
