"""Cores whose units are pairs of reals with a damped-rotation recurrence: the recurrent
trace unit (RTU; Elelimy et al., NeurIPS 2024) and the linear recurrent unit (LRU; Orvieto
et al., 2023). Both are diagonal complex recurrences written in real arithmetic: unit ``n``
carries ``c[n] = (c1, c2)`` and, with ``r = exp(-exp(nu_log))`` and ``theta =
exp(theta_log)``,

    pre_t = R c_{t-1} + norm * (W1 x_t, W2 x_t),   R = r [[cos theta, -sin theta],
                                                           [sin theta,  cos theta]]

that is ``lambda = r e^{i theta}`` times ``c1 + i c2``, plus the input.

- ``RTU``: ``norm = sqrt(1 - r^2)``. Linear recurrence (``c_t = pre_t``, output
  ``relu(c_t)``) or non-linear recurrence (``c_t = relu(pre_t)``, output ``c_t``). The
  output is ``[T, B, 2N]``.
- ``LRU``: ``norm = exp(gamma_log)``, a parameter initialised to ``sqrt(1 - r^2)``;
  ``c_t = pre_t``, output ``gelu(W_y c_t + b_y)`` ``[T, B, N]`` (``W_y`` acting on the
  pair is ``Re(C c)`` for a complex ``C``).

Each unit's recurrence involves only its own pair, so exact RTRL costs ``O(B I N)`` per
step, as for the eLSTM. A layer declares its 2x2 Jacobian blocks and immediate derivatives
(``PairTerms``); ``rtrl_rl.grad`` does the rest. States are flat ``[B, 2N]``, the pair of
unit ``n`` at ``2n, 2n + 1``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rtrl_rl.errors import check, choice
from rtrl_rl.models.cells import LayerStack
from rtrl_rl.models.options import CoreOptions
from rtrl_rl.models.rtrl_contracts import RTRLLayer, RTRLTerms


@dataclass
class PairTerms(RTRLTerms):
    """Forward quantities RTRL needs from one pair layer over a chunk (all detached): the
    ``RTRLTerms`` of a ``block = 2`` layer, which the fused ``pairs`` sweeps take whole.

    a: ``[T, B, N, 2, 2]``, the Jacobian block ``d c_t[n] / d c_{t-1}[n]`` (before the
        episode-start mask; rows: which component of ``c_t``).
    matrix: name -> ``u [T, B, N, 2]``; ``d c_t[n] / d W[n, i] = u_t[n] * x_t[i]``.
    vector: name -> ``v [T, B, N, 2]``; ``d c_t[n] / d p[n] = v_t[n]``.
    """

    a: torch.Tensor
    matrix: dict[str, torch.Tensor]
    vector: dict[str, torch.Tensor]
    block = 2
    sweep = "pairs"

    @property
    def like(self) -> torch.Tensor:
        return self.a

    def keys(self) -> tuple[list[str], list[str]]:
        return list(self.matrix), list(self.vector)


def _ring_init(n: int, r_min: float, r_max: float, max_phase: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """``nu_log, theta_log [N]``: ``|lambda|^2`` uniform on ``[r_min^2, r_max^2]`` and the
    phase uniform on ``(0, max_phase]`` (the LRU's ring initialisation). The defaults,
    ``[0.9, 0.999]``, are the LRU paper's for long memory; the RTU authors' code uses
    ``[0, 1]``, with which the RTU did not learn delayed recall at D=30 here (final -0.1
    after 4M frames, against a best of 0.64 with ``[0.9, 0.999]``)."""
    u1 = torch.rand(n).clamp(1e-6, 1 - 1e-6)
    u2 = torch.rand(n).clamp(1e-6, 1.0)
    r_sq = u1 * (r_max**2 - r_min**2) + r_min**2
    return torch.log(-0.5 * torch.log(r_sq)), torch.log(max_phase * u2)


class PairLayer(nn.Module, RTRLLayer, ABC):
    """Shared recurrence of the RTU and LRU layers. Subclasses set the input matrices'
    names, the normalisation and the readout."""

    block = 2
    matrix_names: tuple[str, str]  # the input matrices of the pair's two components
    vector_names: tuple[str, ...] = ("nu_log", "theta_log")
    nonlinear = False  # relu inside the recurrence

    def __init__(self, input_size: int, hidden_size: int, r_min: float = 0.9,
                 r_max: float = 0.999, max_phase: float = 2 * math.pi) -> None:
        super().__init__()
        if not 0.0 <= r_min < r_max <= 1.0:
            raise ValueError(f"need 0 <= r_min < r_max <= 1, got {r_min}, {r_max}")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.state_size = 2 * hidden_size
        nu_log, theta_log = _ring_init(hidden_size, r_min, r_max, max_phase)
        for name in self.matrix_names:
            self.register_parameter(name, nn.Parameter(torch.empty(hidden_size, input_size)))
        self.nu_log = nn.Parameter(nu_log)
        self.theta_log = nn.Parameter(theta_log)

    def recurrent_params(self) -> dict[str, nn.Parameter]:
        return {k: getattr(self, k) for k in (*self.matrix_names, *self.vector_names)}

    @abstractmethod
    def norm(self, r: torch.Tensor) -> torch.Tensor:
        """The input's scale ``[N]``, given the moduli ``r [N]``."""

    @abstractmethod
    def readout(self, c: torch.Tensor) -> torch.Tensor:
        """``c [T, B, N, 2]`` -> the layer's output ``[T, B, H]``."""

    def _rotation(self) -> tuple[torch.Tensor, ...]:
        nu, theta = self.nu_log.exp(), self.theta_log.exp()
        r = torch.exp(-nu)
        return nu, theta, r, r * torch.cos(theta), r * torch.sin(theta), self.norm(r)

    def unroll(self, x: torch.Tensor, c0: torch.Tensor, first: torch.Tensor,
               detach_every_step: bool = False, with_terms: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor, PairTerms | None]:
        """x ``[T, B, I]``, c0 ``[B, 2N]`` (may carry an RTRL injection), first ``[T, B]``.
        Returns the output ``[T, B, H]``, ``c_T [B, 2N]`` and, if asked, the terms."""
        t_len, b = x.shape[:2]
        n = self.hidden_size
        nu, theta, r, g, phi, norm = self._rotation()
        weight = torch.cat([getattr(self, k) for k in self.matrix_names])
        wx = F.linear(x, weight).view(t_len, b, 2, n)
        inp = norm * wx  # [T, B, 2, N]
        c = c0.view(b, n, 2)
        keep = (~first).to(x.dtype)
        cs, cprevs, pres = [], [], []
        for t in range(t_len):
            c_prev = c * keep[t, :, None, None]
            if detach_every_step:
                c_prev = c_prev.detach()
            c1, c2 = c_prev.unbind(-1)
            pre = torch.stack([g * c1 - phi * c2 + inp[t, :, 0],
                               phi * c1 + g * c2 + inp[t, :, 1]], -1)
            c = torch.relu(pre) if self.nonlinear else pre
            cs.append(c)
            if with_terms:
                cprevs.append(c_prev)
                pres.append(pre)
        c_all = torch.stack(cs)
        terms = None
        if with_terms:
            with torch.no_grad():
                terms = self._terms(torch.stack(cprevs), torch.stack(pres), wx,
                                    (nu, theta, r, g, phi, norm))
        return self.readout(c_all), c.reshape(b, 2 * n), terms

    @abstractmethod
    def _norm_grads(self, nu: torch.Tensor, r: torch.Tensor, norm: torch.Tensor
                    ) -> dict[str, torch.Tensor]:
        """Parameter name -> ``d norm / d parameter`` ``[N]`` (where not zero)."""

    def _terms(self, c_prev, pre, wx, rot) -> PairTerms:
        """c_prev, pre ``[T, B, N, 2]`` (masked state, pre-activation); wx ``[T, B, 2, N]``."""
        nu, theta, r, g, phi, norm = (v.detach() for v in rot)
        wx = wx.detach().transpose(2, 3)  # [T, B, N, 2]
        shape = pre.shape
        rot_block = torch.stack([torch.stack([g, -phi], -1), torch.stack([phi, g], -1)], -2)
        zero = torch.zeros_like(norm)
        # The linear recurrence's terms need no relu derivative d: its Jacobian block and
        # the matrices' terms are then the same at every step and stream (broadcast views).
        matrix = {self.matrix_names[0]: torch.stack([norm, zero], -1).expand(shape),
                  self.matrix_names[1]: torch.stack([zero, norm], -1).expand(shape)}
        a = rot_block.expand(*shape, 2)  # [T, B, N, 2, 2]
        c = torch.view_as_complex(c_prev.contiguous())  # c1 + i c2, [T, B, N]

        def through_rotation(dg, dphi):  # d pre / d p via g and phi: [T, B, N, 2]
            # (dg c1 - dphi c2, dphi c1 + dg c2) as one complex product: much faster than
            # four real products and a stack (measurements: docs/performance.md)
            return torch.view_as_real(c * torch.complex(dg, dphi))

        vector = {"nu_log": through_rotation(-nu * g, -nu * phi),
                  "theta_log": through_rotation(-theta * phi, theta * g)}
        for name, dnorm in self._norm_grads(nu, r, norm).items():
            vector[name] = vector.get(name, 0) + dnorm.unsqueeze(-1) * wx
        if self.nonlinear:
            d = (pre > 0).to(pre.dtype)
            a = d.unsqueeze(-1) * a
            matrix = {k: d * u for k, u in matrix.items()}
            vector = {k: d * v for k, v in vector.items()}
        return PairTerms(a, matrix, vector)


class RTULayer(PairLayer):
    """Recurrent trace units: ``norm = sqrt(1 - r^2)``; ``recurrence`` linear (output
    ``relu(c)``) or nonlinear (``c = relu(pre)``, output ``c``), ``[T, B, 2N]``. With
    ``readout="gelu"`` the state goes through the LRU's readout layer instead,
    ``gelu(W_y c + b_y)`` ``[T, B, N]`` (outside the recurrence, so autograd trains it)."""

    matrix_names = ("W_c1", "W_c2")

    def __init__(self, input_size: int, hidden_size: int, recurrence: str = "linear",
                 readout: str = "relu", **ring: float) -> None:
        if recurrence not in ("linear", "nonlinear"):
            raise ValueError(f"recurrence must be linear or nonlinear, not {recurrence!r}")
        if readout not in ("relu", "gelu"):
            raise ValueError(f"readout must be relu or gelu, not {readout!r}")
        super().__init__(input_size, hidden_size, **ring)
        self.nonlinear = recurrence == "nonlinear"
        self.output_size = 2 * hidden_size
        for name in self.matrix_names:
            nn.init.normal_(getattr(self, name), std=1.0 / math.sqrt(input_size))
        self.gelu_readout = readout == "gelu"
        if self.gelu_readout:
            self.W_y = nn.Parameter(torch.randn(hidden_size, 2 * hidden_size)
                                    / math.sqrt(2 * hidden_size))
            self.b_y = nn.Parameter(torch.zeros(hidden_size))
            self.output_size = hidden_size

    def norm(self, r):
        return torch.sqrt(1.0 - r * r)

    def _norm_grads(self, nu, r, norm):
        return {"nu_log": nu * r * r / norm}

    def readout(self, c):
        t_len, b = c.shape[:2]
        if self.gelu_readout:
            return F.gelu(F.linear(c.reshape(t_len, b, -1), self.W_y, self.b_y))
        return (c if self.nonlinear else torch.relu(c)).reshape(t_len, b, -1)


class LRULayer(PairLayer):
    """The linear recurrent unit: learned normalisation ``exp(gamma_log)`` and a GELU
    readout ``[T, B, N]``."""

    matrix_names = ("B_re", "B_im")
    vector_names = (*PairLayer.vector_names, "gamma_log")

    def __init__(self, input_size: int, hidden_size: int, **ring: float) -> None:
        super().__init__(input_size, hidden_size, **ring)
        with torch.no_grad():
            r = torch.exp(-self.nu_log.exp())
            self.gamma_log = nn.Parameter(0.5 * torch.log1p(-r * r))
        for name in self.matrix_names:
            nn.init.normal_(getattr(self, name), std=1.0 / math.sqrt(2 * input_size))
        self.W_y = nn.Parameter(torch.randn(hidden_size, 2 * hidden_size)
                                / math.sqrt(2 * hidden_size))
        self.b_y = nn.Parameter(torch.zeros(hidden_size))
        self.output_size = hidden_size

    def norm(self, r):
        return self.gamma_log.exp()

    def _norm_grads(self, nu, r, norm):
        return {"gamma_log": norm}

    def readout(self, c):
        t_len, b = c.shape[:2]
        return F.gelu(F.linear(c.reshape(t_len, b, -1), self.W_y, self.b_y))


class PairCore(LayerStack):
    """Stacked pair layers; state ``[B, L * 2N]``."""

    def __init__(self, layers: list[PairLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.hidden_size = layers[0].hidden_size
        self.state_size = sum(layer.state_size for layer in layers)
        self.output_size = layers[-1].output_size


@dataclass
class RingOptions(CoreOptions):
    """The LRU's options: the ring the initial eigenvalues are drawn from."""

    r_min: float = 0.9
    """Smallest initial eigenvalue modulus; ``|lambda|^2`` is uniform on
    ``[r_min^2, r_max^2]``."""
    r_max: float = 0.999
    """Largest initial eigenvalue modulus (close to 1: long memory)."""
    max_phase: float = 2 * math.pi
    """Initial phases ``theta`` are uniform on ``(0, max_phase]``."""

    def check(self) -> None:
        check(0.0 <= self.r_min < self.r_max <= 1.0, "r_min",
              f"need 0 <= r_min < r_max <= 1, got {self.r_min}, {self.r_max}")
        check(self.max_phase > 0, "max_phase", f"must be > 0, got {self.max_phase}")


@dataclass
class RTUOptions(RingOptions):
    """The RTU's options: its recurrence, its readout and the initial eigenvalue ring."""

    recurrence: str = "linear"
    """``linear`` (``c_t = pre_t``, output ``relu(c_t)``) or ``nonlinear`` (``c_t =
    relu(pre_t)``)."""
    readout: str = "relu"
    """``relu``: the output above; ``gelu``: the state through the LRU's readout layer,
    ``gelu(W_y c + b_y)``."""

    def check(self) -> None:
        super().check()
        choice(self.recurrence, "recurrence", ("linear", "nonlinear"))
        choice(self.readout, "readout", ("relu", "gelu"))


class RTU(PairCore):
    name = "rtu"
    options = RTUOptions

    def __init__(self, input_size: int, hidden_size: int, layers: int = 1,
                 recurrence: str = "linear", readout: str = "relu", **ring: float) -> None:
        stack, size = [], input_size
        for _ in range(layers):
            stack.append(RTULayer(size, hidden_size, recurrence, readout, **ring))
            size = stack[-1].output_size
        super().__init__(stack)


class LRU(PairCore):
    name = "lru"
    options = RingOptions

    def __init__(self, input_size: int, hidden_size: int, layers: int = 1,
                 **ring: float) -> None:
        sizes = [input_size] + [hidden_size] * layers
        super().__init__([LRULayer(sizes[k], hidden_size, **ring) for k in range(layers)])
