"""One run over many processes (``torchrun``): each rank is a learner with its own envs.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) every rank builds the same agent,
steps its own share of the job's env streams with its own seed, and keeps its own carried
state (core states, RTRL sensitivities). The job's hyperparameters (``runner.num_envs``,
``runner.total_frames``, the batch) are totals over ranks, so the number of ranks changes
the speed of a job, not what it learns. Each update, one flat all-reduce combines the
ranks' gradients so that the step equals one process's step over the union of all ranks'
streams: summed for ``algo.loss_reduction=sum``, averaged for ``mean``. The learner calls
several of the agent's modules (the core through the gradient module, the heads, a
bootstrap step), not one ``forward``, so ``DistributedDataParallel``'s module wrapper does
not fit; the all-reduce after ``backward`` covers every path, the RTRL injection included.

Outside ``torchrun`` (or with one rank) every collective here is a no-op, so the training
loop reads the same either way.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from rtrl_rl.config import TrainConfig


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job, from torchrun's environment variables."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Ranks:
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)),
                   int(env.get("LOCAL_RANK", 0)))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def seed(self, seed: int) -> int:
        """This rank's seed for envs and sampling: rank 0 keeps ``seed`` (so its streams
        replay a one-process run's); other ranks get unrelated streams."""
        if self.rank == 0:
            return int(seed)
        state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, self.rank, 0x7A11])
        return int(state.generate_state(1, dtype=np.uint32)[0]) % (2**31 - 2**20)

    def device(self, device: torch.device) -> torch.device:
        """The rank's own GPU (``cuda:LOCAL_RANK``) when ``device`` is CUDA."""
        if device.type == "cuda" and self.active:
            return torch.device("cuda", self.local_rank)
        return device


def rank_config(cfg: TrainConfig, ranks: Ranks) -> TrainConfig:
    """This rank's share of the job: ``runner.num_envs`` (and ``runner.batch_size``) are the
    job's totals, split evenly, so a job learns the same on any number of ranks; envs and
    action samples use the rank's seed. Raises a one-line ``ConfigError``."""
    if ranks.world_size == 1:
        return cfg
    return replace(cfg, seed=ranks.seed(cfg.seed), runner=cfg.runner.split(ranks.world_size))


class Collective:
    """The few collectives the training loop needs; every one is a no-op with one rank."""

    def __init__(self, ranks: Ranks, device: torch.device, timeout_s: float = 60.0) -> None:
        self.ranks = ranks
        self.device = device
        self.started = False
        if ranks.active and not dist.is_initialized():
            # imported later (torch._dynamo does), its default arguments would keep the group
            # alive past destroy_process_group, and gloo's threads abort the rank at exit
            import torch.distributed.nn as _  # noqa: F401

            backend = "nccl" if device.type == "cuda" else "gloo"
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
            self.started = True
        # gloo reduces CPU tensors, nccl CUDA ones
        self.reduce_device = device if device.type == "cuda" else torch.device("cpu")

    @property
    def active(self) -> bool:
        return self.ranks.active

    def combine_grads(self, params: Sequence[torch.nn.Parameter], reduction: str) -> None:
        """All-reduce every parameter's gradient in one flat buffer: the sum over ranks for
        ``reduction='sum'``, the mean for ``'mean'``. A parameter without a gradient
        contributes zeros (and receives the others')."""
        if not self.active:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads]).to(self.reduce_device)
        dist.all_reduce(flat)
        if reduction == "mean":
            flat /= self.ranks.world_size
        offset = 0
        for p, g in zip(params, grads, strict=True):
            n = g.numel()
            p.grad = flat[offset:offset + n].view_as(p).to(p.device)
            offset += n

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Every rank starts from rank 0's parameters and buffers."""
        if not self.active:
            return
        for t in [*module.parameters(), *module.buffers()]:
            buf = t.data.to(self.reduce_device)
            dist.broadcast(buf, src=0)
            t.data.copy_(buf.to(t.device))

    def max_values(self, *values: float) -> list[float]:
        """Each value's maximum over ranks (a flag set on any rank is set on all)."""
        if not self.active:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64,
                         device=self.reduce_device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.tolist()

    def mean_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Each metric averaged over ranks (the keys are the same on every rank)."""
        if not self.active or not metrics:
            return metrics
        keys = sorted(metrics)
        t = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64,
                         device=self.reduce_device)
        dist.all_reduce(t)
        return dict(zip(keys, (t / self.ranks.world_size).tolist(), strict=True))

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.ranks.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self, clean: bool = True) -> None:
        """Leave the process group. On a clean exit every rank first meets the others:
        gloo aborted a rank (SIGABRT) whose peer tore its connections down while it was
        still leaving. After an error the peers may be gone, so no rank waits."""
        if self.started and dist.is_initialized():
            if clean:  # nccl needs the device named, or it guesses one
                dist.barrier(device_ids=[torch.cuda.current_device()]
                             if self.device.type == "cuda" else None)
            dist.destroy_process_group()
            self.started = False
