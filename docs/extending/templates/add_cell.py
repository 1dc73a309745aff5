"""A new recurrent core as a plugin: a GRU, ``model.core=gru``, with one option of its own.

Its recurrence mixes all units through full matrices, so it is not element-wise: ``grad=bptt``
and ``grad=one_step`` train it, and ``grad=rtrl`` refuses it with one line that names the
cores it can train.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from rtrl_rl.errors import ConfigError
from rtrl_rl.models.cells import Core
from rtrl_rl.models.options import CoreOptions
from rtrl_rl.models.registry import register_core


@dataclass
class GRUOptions(CoreOptions):
    """The GRU's options: the block ``model.gru``."""

    update_bias: float = 1.0
    """Initial bias of the update gate: larger keeps the state longer at initialization."""

    def check(self) -> None:
        if not math.isfinite(self.update_bias):
            raise ConfigError(f"update_bias: must be finite, got {self.update_bias}")


@register_core
class GRU(Core):
    """``torch.nn.GRU`` over a chunk; the flat state ``[B, L * N]`` holds each layer's ``h``.

    One fused call when no episode starts inside the chunk (after step 0); step by step
    otherwise, so that the state is zeroed exactly where episodes start.
    """

    name = "gru"
    elementwise = False  # exact RTRL of full matrices costs O(N^4) per step
    options = GRUOptions

    def __init__(self, input_size: int, hidden_size: int, layers: int = 1,
                 update_bias: float = 1.0) -> None:
        super().__init__()
        self.gru = nn.GRU(input_size, hidden_size, num_layers=layers)
        n = hidden_size
        with torch.no_grad():
            for k in range(layers):  # torch's gate order is r, z, n: z is the second block
                getattr(self.gru, f"bias_ih_l{k}")[n : 2 * n] = float(update_bias)
                getattr(self.gru, f"bias_hh_l{k}")[n : 2 * n] = 0.0
        self.num_layers, self.hidden_size = layers, hidden_size
        self.state_size = layers * hidden_size
        self.output_size = hidden_size

    def forward(self, x: torch.Tensor, state: torch.Tensor, first: torch.Tensor,
                detach_every_step: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        b = state.shape[0]
        h = state.view(b, self.num_layers, self.hidden_size).transpose(0, 1)  # [L, B, N]
        if not detach_every_step and not bool(first[1:].any()):
            out, h = self.gru(x, h * _keep(first[0], h))
            return out, h.transpose(0, 1).reshape(b, -1)
        outs = []
        for t, x_t in enumerate(x.split(1)):
            h = h * _keep(first[t], h)
            if detach_every_step:  # grad=one_step: no credit through the recurrence
                h = h.detach()
            out, h = self.gru(x_t, h)
            outs.append(out[0])
        return torch.stack(outs), h.transpose(0, 1).reshape(b, -1)


def _keep(first_t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``[B]`` episode starts -> a ``[1, B, 1]`` multiplier that zeroes those streams."""
    return (~first_t).to(h.dtype).view(1, -1, 1)
