"""Recurrent cores: eLSTM (element-wise LSTM, docs/methods/rtrl.md, "The eLSTM"), stacked
eLSTM, an LSTM baseline, and the feed-forward "none" core (RTU and LRU:
``rtrl_rl.models.pair_cells``).

Every core maps a chunk ``x [T, B, I]``, a flat carried state ``[B, D]`` and episode-start
flags ``first [T, B]`` to outputs ``h [T, B, H]`` and the state after the last step. The
state is zeroed before consuming ``x[t]`` wherever ``first[t]`` is set. A flat ``[B, D]``
state keeps checkpoints and shared-memory buffers simple.

How gradients cross time steps is not decided here: ``rtrl_rl.grad`` drives the cores.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import torch
from torch import nn

from rtrl_rl.models.options import CoreOptions
from rtrl_rl.models.rtrl_contracts import ELSTMSweepTerms, RTRLLayer, RTRLTerms


@dataclass
class ElementwiseTerms(RTRLTerms):
    """Forward quantities that RTRL needs from one element-wise layer over a chunk (the
    ``RTRLTerms`` of a ``block = 1`` layer).

    All tensors are detached, ``[T, B, N]``.
    a: the diagonal Jacobian ``dc_t / dc_{t-1}`` (before the episode-start mask).
    matrix: name -> ``u``; the immediate derivative of ``c_t[n]`` w.r.t. the ``[N, I]``
        parameter entry ``[n, i]`` is ``u_t[n] * x_t[i]``.
    vector: name -> ``(key, factor)``; the immediate derivative of ``c_t[n]`` w.r.t. the
        ``[N]`` parameter entry ``[n]`` is ``matrix[key]_t[n] * factor_t[n]`` (factor None
        means 1). Sharing the matrix terms saves elementwise passes over ``[T, B, N]``.
    """

    a: torch.Tensor
    matrix: dict[str, torch.Tensor]
    vector: dict[str, tuple[str, torch.Tensor | None]]
    block = 1
    sweep = None  # generic element-wise terms: the PyTorch form only

    @property
    def like(self) -> torch.Tensor:
        return self.a

    def keys(self) -> tuple[list[str], list[str]]:
        """The matrix and the vector parameter names, in order."""
        return list(self.matrix), list(self.vector)


class ELSTMTerms(ElementwiseTerms, ELSTMSweepTerms):
    """The eLSTM's terms, kept as ``c_prev, z, f [T, B, N]`` (detached) and ``w_z, w_f [N]``
    (copies). ``a``, ``matrix`` and ``vector`` are derived on first access; the fused CPU
    kernel of the RTRL factors (``rtrl_rl.grad.factors``) reads the raw quantities instead
    and never materialises them (``sweep = "elstm"``).

    With ``zeta = (1 - f)(1 - z^2) = dc/d(pre_z)`` and ``phi = (c_prev - z) f (1 - f) =
    dc/d(pre_f)``: ``a = f + w_z zeta + w_f phi``, the ``W_z / W_f`` terms are ``zeta / phi``,
    and the ``w`` terms carry the factor ``c_prev`` (the biases none).
    """

    sweep = "elstm"

    def __init__(self, c_prev: torch.Tensor, z: torch.Tensor, f: torch.Tensor,
                 w_z: torch.Tensor, w_f: torch.Tensor) -> None:  # no dataclass __init__
        self.c_prev, self.z, self.f, self.w_z, self.w_f = c_prev, z, f, w_z, w_f

    @property
    def like(self) -> torch.Tensor:
        return self.z  # not ``a``, which would derive the terms the kernels never need

    def keys(self) -> tuple[list[str], list[str]]:
        return ["W_z", "W_f"], ["w_z", "w_f", "b_z", "b_f"]

    @cached_property
    def _derived(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            z, f = self.z, self.f
            one_minus_f = 1.0 - f
            zeta = torch.addcmul(torch.ones((), dtype=z.dtype, device=z.device), z, z,
                                 value=-1.0).mul_(one_minus_f)
            phi = (self.c_prev - z).mul_(f).mul_(one_minus_f)
            a = torch.addcmul(f, zeta, self.w_z).addcmul_(phi, self.w_f)
        return a, zeta, phi

    @property
    def a(self) -> torch.Tensor:  # type: ignore[override]
        return self._derived[0]

    @property
    def matrix(self) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return {"W_z": self._derived[1], "W_f": self._derived[2]}

    @property
    def vector(self) -> dict[str, tuple[str, torch.Tensor | None]]:  # type: ignore[override]
        return {"w_z": ("W_z", self.c_prev), "w_f": ("W_f", self.c_prev),
                "b_z": ("W_z", None), "b_f": ("W_f", None)}


def _mask(first_t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``[B]`` bool episode starts -> ``[B, 1]`` keep-multiplier in ``like``'s dtype."""
    return (~first_t).to(like.dtype).unsqueeze(-1)


class ELSTMLayer(nn.Module, RTRLLayer):
    """One eLSTM layer. Recurrent parameters: ``W_z, W_f [N, I]``, ``w_z, w_f, b_z, b_f [N]``;
    the output gate ``W_o [N, I + N], b_o [N]`` is feed-forward.

    The input projections of z, f and the x-part of o are one fused matmul over the whole
    chunk; only element-wise work runs step by step.
    """

    block = 1
    matrix_names = ("W_z", "W_f")
    vector_names = ("w_z", "w_f", "b_z", "b_f")

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float = 1.0) -> None:
        super().__init__()
        n, i = hidden_size, input_size
        self.input_size, self.hidden_size, self.state_size = i, n, n
        self.W_z = nn.Parameter(torch.empty(n, i))
        self.W_f = nn.Parameter(torch.empty(n, i))
        self.w_z = nn.Parameter(torch.empty(n))
        self.w_f = nn.Parameter(torch.empty(n))
        self.b_z = nn.Parameter(torch.zeros(n))
        self.b_f = nn.Parameter(torch.full((n,), float(forget_bias)))
        self.W_o = nn.Parameter(torch.empty(n, i + n))
        self.b_o = nn.Parameter(torch.zeros(n))
        bound_x, bound_h = 1.0 / math.sqrt(i), 1.0 / math.sqrt(n)
        for w in (self.W_z, self.W_f):
            nn.init.uniform_(w, -bound_x, bound_x)
        for w in (self.w_z, self.w_f):
            nn.init.uniform_(w, -bound_h, bound_h)
        nn.init.uniform_(self.W_o, -1.0 / math.sqrt(i + n), 1.0 / math.sqrt(i + n))

    def recurrent_params(self) -> dict[str, nn.Parameter]:
        return {k: getattr(self, k) for k in (*self.matrix_names, *self.vector_names)}

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """``x [T, B, I]`` -> pre-activations ``[T, B, 3N]`` (z | f | o-from-x)."""
        weight = torch.cat([self.W_z, self.W_f, self.W_o[:, : self.input_size]], 0)
        bias = torch.cat([self.b_z, self.b_f, self.b_o])
        return torch.nn.functional.linear(x, weight, bias)

    def unroll(
        self,
        x: torch.Tensor,
        c0: torch.Tensor,
        first: torch.Tensor,
        detach_every_step: bool = False,
        with_terms: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, ElementwiseTerms | None]:
        """Run the layer over a chunk.

        x: ``[T, B, I]``; c0: ``[B, N]`` (may carry an RTRL injection); first: ``[T, B]`` bool.
        detach_every_step: cut ``c_{t-1}`` from the graph at every step (one-step gradients).
        Returns ``h [T, B, N]``, ``c_T [B, N]`` and, if asked, the RTRL terms.
        """
        n = self.hidden_size
        pre = self.project(x)
        # Per-step views through one unbind: its backward is a single stack, where indexing
        # pre[t] would zero-fill a [T, B, 3N] gradient for every step (O(T^2) traffic).
        pre_steps = pre.unbind(0)
        c = c0
        cs, cprevs, zs, fs = [], [], [], []
        for t, pre_t in enumerate(pre_steps):
            c_prev = c * _mask(first[t], c)
            if detach_every_step:
                c_prev = c_prev.detach()
            z = torch.tanh(pre_t[:, :n] + self.w_z * c_prev)
            f = torch.sigmoid(pre_t[:, n : 2 * n] + self.w_f * c_prev)
            c = f * c_prev + (1.0 - f) * z
            cs.append(c)
            if with_terms:
                cprevs.append(c_prev)
                zs.append(z)
                fs.append(f)
        c_all = torch.stack(cs)
        po = pre[..., 2 * n :]
        o = torch.sigmoid(po + torch.nn.functional.linear(c_all, self.W_o[:, self.input_size :]))
        h = o * c_all
        terms = None
        if with_terms:
            with torch.no_grad():  # one stack each instead of a detach per step
                terms = self.terms(torch.stack(cprevs), torch.stack(zs), torch.stack(fs))
        return h, c, terms

    def terms(self, c_prev: torch.Tensor, z: torch.Tensor, f: torch.Tensor) -> ELSTMTerms:
        """RTRL terms from the (masked) previous cell and the gates, all ``[T, B, N]``."""
        return ELSTMTerms(c_prev, z, f, self.w_z.detach().clone(), self.w_f.detach().clone())


class Core(nn.Module, ABC):
    """Base class. ``state_size`` D of the flat state, ``output_size`` H of ``h``."""

    state_size: int
    output_size: int
    #: True when the recurrence is element-wise, so exact RTRL is tractable.
    elementwise: bool = False
    #: True when one step's forward has no data-dependent control flow, so the policy step
    #: may be traced (``rtrl_rl.models.traced``).
    traceable: bool = False
    name: str = "core"
    #: The dataclass of the core's own options (``model.<name>``), passed to ``__init__``.
    options: ClassVar[type[CoreOptions]] = CoreOptions

    def initial_state(
        self, batch: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        return torch.zeros(batch, self.state_size, device=device, dtype=dtype)

    @abstractmethod
    def forward(
        self,
        x: torch.Tensor,
        state: torch.Tensor,
        first: torch.Tensor,
        detach_every_step: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x ``[T, B, I]``, state ``[B, D]``, first ``[T, B]`` -> h ``[T, B, H]``, state after
        ``x[T-1]``. ``detach_every_step`` cuts the recurrence from the graph at every step."""


class LayerStack(Core):
    """Layers run one after another over the chunk, each with its own ``unroll(x, c0,
    first, detach_every_step)``; the state holds the layers' states side by side."""

    elementwise = True  # every layer subclass here has per-unit recurrences
    traceable = True
    layers: nn.ModuleList

    def split_state(self, state: torch.Tensor) -> list[torch.Tensor]:
        return list(state.split([layer.state_size for layer in self.layers], dim=-1))

    def forward(self, x, state, first, detach_every_step=False):
        out, finals = x, []
        for layer, c0 in zip(self.layers, self.split_state(state), strict=True):
            out, c_t, _ = layer.unroll(out, c0, first, detach_every_step)
            finals.append(c_t)
        return out, torch.cat(finals, -1)


@dataclass
class GateOptions(CoreOptions):
    """The eLSTM's and the LSTM's options."""

    forget_bias: float = 1.0
    """Initial forget-gate bias ``b_f``: larger keeps the cell longer at initialization."""


class ELSTM(LayerStack):
    """Stacked eLSTM; state ``[B, L * N]`` holds each layer's cell ``c``."""

    name = "elstm"
    options = GateOptions

    def __init__(
        self, input_size: int, hidden_size: int, layers: int = 1, forget_bias: float = 1.0
    ) -> None:
        super().__init__()
        sizes = [input_size] + [hidden_size] * layers
        self.layers = nn.ModuleList(
            ELSTMLayer(sizes[i], hidden_size, forget_bias) for i in range(layers)
        )
        self.hidden_size = hidden_size
        self.state_size = layers * hidden_size
        self.output_size = hidden_size


class LSTM(Core):
    """``torch.nn.LSTM`` baseline; state ``[B, 2 * L * N]`` = (h of all layers, c of all layers).

    Runs as one fused call when no episode starts inside the chunk (after step 0), and step by
    step otherwise so the state can be zeroed exactly where episodes start.
    """

    name = "lstm"
    traceable = True  # one step (T = 1) always takes the fused path
    options = GateOptions

    def __init__(self, input_size: int, hidden_size: int, layers: int = 1,
                 forget_bias: float = 1.0) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers=layers)
        n = hidden_size
        for k in range(layers):  # gate order i, f, g, o; only one bias needs the offset
            getattr(self.lstm, f"bias_ih_l{k}").data[n : 2 * n] = float(forget_bias)
            getattr(self.lstm, f"bias_hh_l{k}").data[n : 2 * n] = 0.0
        self.layers, self.hidden_size = layers, hidden_size
        self.state_size = 2 * layers * hidden_size
        self.output_size = hidden_size

    def _unpack(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = state.shape[0]
        hc = state.view(b, 2, self.layers, self.hidden_size).permute(1, 2, 0, 3)
        return hc[0].contiguous(), hc[1].contiguous()

    def _pack(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return torch.stack([h, c]).permute(2, 0, 1, 3).reshape(h.shape[1], -1)

    def forward(self, x, state, first, detach_every_step=False):
        h, c = self._unpack(state)
        if not detach_every_step and not bool(first[1:].any()):
            keep = _mask(first[0], h)
            out, (h, c) = self.lstm(x, (h * keep, c * keep))
            return out, self._pack(h, c)
        outs = []
        for t, x_t in enumerate(x.split(1)):  # one split: its backward is a single cat
            keep = _mask(first[t], h)
            h, c = h * keep, c * keep
            if detach_every_step:
                h, c = h.detach(), c.detach()
            out, (h, c) = self.lstm(x_t, (h, c))
            outs.append(out[0])
        return torch.stack(outs), self._pack(h, c)


class FeedForward(Core):
    """No recurrence (the feed-forward baseline): ``h = x``, empty state."""

    elementwise = True
    traceable = True
    name = "none"
    layers: nn.ModuleList

    def __init__(self, input_size: int, hidden_size: int = 0, layers: int = 0) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        self.state_size = 0
        self.output_size = input_size

    def forward(self, x, state, first, detach_every_step=False):
        return x, state
