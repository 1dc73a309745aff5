"""What the RTRL engine (``rtrl_rl.grad.rtrl``) asks of a recurrent layer and of the terms
it returns, as protocols. They live here, beside the cells, because the cells declare them
(``class ELSTMLayer(nn.Module, RTRLLayer)``) and models never import ``rtrl_rl.grad``.

A layer has ``N`` units of ``block`` reals each: ``block = 1`` for element-wise cells (the
eLSTM: each unit's Jacobian ``dc_t / dc_{t-1}`` is a scalar), ``block = 2`` for complex-pair
cells (RTU, LRU: a 2x2 block per unit). Its recurrent parameters are ``M`` matrices
``[N, I]`` and ``V`` vectors ``[N]``; the engine carries one sensitivity per parameter entry
and reads the layer's terms once per chunk to advance them (DESIGN.md section 3).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import torch
from torch import nn

#: Fused sweeps of the kernel backends: ``elstm`` reads the eLSTM's gates
#: (``ELSTMSweepTerms``), ``pairs`` reads any 2x2-block terms' ``a, matrix, vector``.
Sweep = Literal["elstm", "pairs"]


@runtime_checkable
class RTRLTerms(Protocol):
    """Forward quantities of one layer over a chunk that RTRL needs, all detached.

    For unit ``n``, step ``t`` and ``K = block`` reals per unit (shapes drop the trailing
    ``K`` axes when ``K = 1``): ``a [T, B, N, K, K]``, ``matrix[key] [T, B, N, K]``.
    """

    block: ClassVar[int]
    """Reals per unit, as the layer's ``block``: 1 (``a`` is a diagonal) or 2."""

    sweep: ClassVar[Sweep | None]
    """The fused sweep that takes these terms, or None for the PyTorch form only (any
    element-wise terms that are not the eLSTM's)."""

    a: torch.Tensor
    """The Jacobian ``dc_t[n] / dc_{t-1}[n]`` before the episode-start mask:
    ``[T, B, N]`` or ``[T, B, N, 2, 2]`` (rows: the component of ``c_t``)."""

    matrix: Mapping[str, torch.Tensor]
    """Name -> ``u [T, B, N(, K)]`` for each ``[N, I]`` matrix, in the layer's
    ``matrix_names`` order: ``d c_t[n] / d W[n, i] = u_t[n] * x_t[i]``."""

    vector: Mapping[str, Any]
    """For each ``[N]`` vector, in the layer's ``vector_names`` order. ``block = 1``: name
    -> ``(key, factor)`` with ``d c_t[n] / d p[n] = matrix[key]_t[n] * factor_t[n]``
    (factor ``[T, B, N]``, or None for 1); ``block = 2``: name -> ``v [T, B, N, 2]``, the
    derivative itself."""

    @property
    def like(self) -> torch.Tensor:
        """A ``[T, B, ...]`` tensor with the terms' device and dtype, for choosing a kernel
        backend; reading it derives nothing."""
        ...

    def keys(self) -> tuple[list[str], list[str]]:
        """The matrix and the vector parameter names, in order."""
        ...


@runtime_checkable
class ELSTMSweepTerms(RTRLTerms, Protocol):
    """Terms whose ``sweep`` is ``elstm``: the fused kernels read these gates and derive
    ``a``, ``matrix`` and ``vector`` inside the sweep (formulas: ``ELSTMTerms``). Vector
    order ``w_z, w_f, b_z, b_f``."""

    c_prev: torch.Tensor
    """``[T, B, N]``: the cell before each step, after the episode-start mask."""

    z: torch.Tensor
    """``[T, B, N]``: the candidate ``tanh`` gate."""

    f: torch.Tensor
    """``[T, B, N]``: the forget gate."""

    w_z: torch.Tensor
    """``[N]``: the candidate gate's element-wise recurrent weight (a copy)."""

    w_f: torch.Tensor
    """``[N]``: the forget gate's element-wise recurrent weight (a copy)."""


@runtime_checkable
class RTRLLayer(Protocol):
    """A recurrent layer that exact RTRL can train: each unit's next state depends on its
    own state only (a ``block x block`` Jacobian per unit), so the sensitivities cost
    ``O(B I N)``, not ``O(B I N^2)``."""

    block: ClassVar[int]
    """Reals per unit: 1 for element-wise cells, 2 for complex-pair cells."""

    input_size: int
    """``I``, the width of the layer's input."""

    hidden_size: int
    """``N``, the number of units."""

    state_size: int
    """``block * N``: the width of the layer's flat state ``[B, block * N]``."""

    matrix_names: tuple[str, ...]
    """The ``[N, I]`` recurrent matrices: the order of the sensitivities' ``M`` axis."""

    vector_names: tuple[str, ...]
    """The ``[N]`` recurrent vectors: the order of the sensitivities' ``V`` axis."""

    def recurrent_params(self) -> dict[str, nn.Parameter]:
        """Name -> parameter for ``matrix_names`` then ``vector_names``, in that order."""
        ...

    def unroll(self, x: torch.Tensor, c0: torch.Tensor, first: torch.Tensor,
               detach_every_step: bool = False, with_terms: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor, RTRLTerms | None]:
        """Run over a chunk: x ``[T, B, I]``, c0 ``[B, block * N]`` (the engine adds its
        injection to it), first ``[T, B]`` bool (state zeroed before that step). Returns
        the output ``[T, B, H]``, the state after ``x[T-1]`` and, with ``with_terms``, the
        terms, whose ``keys()`` are ``(matrix_names, vector_names)``."""
        ...
