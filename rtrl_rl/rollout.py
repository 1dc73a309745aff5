"""The unit of data between actors and the learner.

A rollout holds ``T + 1`` entries per stream; entry ``t`` is what the actor saw and did at
observation ``t``. Consecutive rollouts of a stream overlap by one entry: entry ``T`` of one
is entry ``0`` of the next. The learner trains on transitions ``t -> t+1`` for ``t < T`` and
bootstraps from entry ``T``; the core is unrolled over entries ``0..T-1`` from
``core_state``, the actor's state *before* entry 0, so successive chunks tile time exactly
(which is what makes RTRL's carried sensitivities line up).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

#: Fields indexed by stream first (``[B, ...]``); the others are ``[T + 1, B, ...]``.
PER_STREAM = ("core_state", "stream_ids", "policy_version")


@dataclass
class Rollout:
    obs: torch.Tensor  # [T+1, B, *obs_shape], uint8 images or float32 vectors
    reward: torch.Tensor  # [T+1, B] float32: the (raw) reward that came with obs[t]
    first: torch.Tensor  # [T+1, B] bool: obs[t] starts an episode
    prev_action: torch.Tensor  # [T+1, B, *action_shape]: the action that led to obs[t]
    action: torch.Tensor  # [T+1, B, *action_shape]: the action taken at obs[t]
    # [T+1, B, P] float32: the behaviour policy's distribution parameters at obs[t]
    # (P = PolicyDist.param_size: logits, or a Gaussian's mean and log-std)
    dist_params: torch.Tensor
    core_state: torch.Tensor  # [B, D]: core state before obs[0]
    stream_ids: torch.Tensor  # [B] long: which streams these are
    policy_version: torch.Tensor  # [B] long: learner update count the actor acted with

    @property
    def unroll(self) -> int:
        return self.obs.shape[0] - 1

    @property
    def batch(self) -> int:
        return self.obs.shape[1]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Rollout:
        """A copy on ``device``, except ``stream_ids``, which stays on the host: the
        temporal-gradient modules choose their path from it without waiting for the
        device."""
        return Rollout(**{
            f.name: getattr(self, f.name) if f.name == "stream_ids"
            else getattr(self, f.name).to(device, non_blocking=non_blocking)
            for f in fields(self)
        })

    def select(self, idx: torch.Tensor) -> Rollout:
        """The streams ``idx`` (positions along the batch axis), with their stream ids."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            i = idx.to(v.device)
            out[f.name] = v[i] if f.name in PER_STREAM else v[:, i]
        return Rollout(**out)

    def pin_memory(self) -> Rollout:
        """A copy in page-locked memory (CUDA machines only)."""
        return Rollout(**{f.name: getattr(self, f.name).pin_memory() for f in fields(self)})

    @staticmethod
    def cat(parts: list[Rollout], pin_memory: bool = False) -> Rollout:
        """Concatenate rollouts along the stream axis (into page-locked memory if asked,
        so that ``to(cuda, non_blocking=True)`` does not wait)."""
        out = {}
        for f in fields(Rollout):
            dim = 0 if f.name in PER_STREAM else 1
            tensors = [getattr(p, f.name) for p in parts]
            if pin_memory:
                shape = list(tensors[0].shape)
                shape[dim] = sum(t.shape[dim] for t in tensors)
                dst = torch.empty(shape, dtype=tensors[0].dtype, pin_memory=True)
                out[f.name] = torch.cat(tensors, dim, out=dst)
            else:
                out[f.name] = torch.cat(tensors, dim)
        return Rollout(**out)
