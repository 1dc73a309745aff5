"""The RTRL engine's kernel backends: one object per kernel family, and the one place that
chooses among them.

Two computations of the engine (``rtrl_rl.grad.rtrl``) have fused kernels:

- the chunk factors ``pu, p0, new_vec`` from a layer's terms (``rtrl_rl.grad.factors``);
- the injection's backward over the carried matrix sensitivities ``S [B, I, M, N(, 2)]``:
  ``acc = sum_b S[b] * g[b]``, with the chunk's pending update of ``S`` in the same read.

Each family does both behind ``KernelBackend``: ``torch`` (PyTorch ops; every device, dtype
and terms, and the kernels' test oracle), ``numba`` (the CPU, where numba imports:
``factors`` and ``sensitivity_pass``) and ``triton`` (CUDA, where triton imports, as it
does with PyTorch's CUDA builds: ``factors_triton`` and ``sensitivity_triton``). Each says
what it takes; ``factor_backend`` and ``pass_backend`` give, per call, the first fused
backend of the tensors' device type that takes them, else ``torch``.
"""

from __future__ import annotations

import functools
from typing import Protocol

import torch
from torch.autograd.graph import increment_version

from rtrl_rl.grad import factors, sensitivity_pass
from rtrl_rl.models.cells import ELSTMTerms
from rtrl_rl.models.pair_cells import PairTerms
from rtrl_rl.models.rtrl_contracts import RTRLTerms

Factors = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # pu, p0, new_vec


class PendingUpdate(Protocol):
    """The engine's end-of-chunk update of ``S`` in place, ``S_T = P_0 * S_0 + X^T (P u)``,
    as a backend runs it inside the injection's backward; streams are done in order."""

    x: torch.Tensor
    """``[T, B, I]``: the layer's inputs over the chunk (detached)."""

    pu: torch.Tensor
    """``[T, B, M, N(, 2)]``: the chunk factors ``P_s u_s``."""

    p0: torch.Tensor
    """``[B, N]``, or ``[B, N, 2, 2]`` for 2x2 blocks: the decay of ``S_0``."""

    def block(self, lo: int, hi: int) -> None:
        """The whole update of streams ``[lo, hi)``, in PyTorch ops."""

    def rank_t(self, lo: int, hi: int) -> None:
        """Only ``S += X^T (P u)`` for streams ``[lo, hi)``, which the backend has already
        scaled by ``P_0``."""

    def mark_updated(self, lo: int, hi: int) -> None:
        """Streams ``[lo, hi)`` were updated whole by the backend's own pass."""


class KernelBackend(Protocol):
    """One kernel family's form of both fused computations."""

    name: str
    """The ``backend=`` name of ``chunk_factors``."""

    device: str | None
    """The device type whose tensors the automatic choice gives it, or None (``torch``: the
    fallback on every device)."""

    def refusal(self, terms: RTRLTerms, s_vec: torch.Tensor) -> Exception | None:
        """None if ``chunk_factors`` takes these terms and ``s_vec``, else the one-line
        error for a caller that asked for this backend by name."""

    def chunk_factors(self, terms: RTRLTerms, first: torch.Tensor, s_vec: torch.Tensor
                      ) -> Factors:
        """``pu [T, B, M, N(, 2)]``, ``p0 [B, N]`` (``[B, N, 2, 2]``) and ``new_vec
        [B, V, N(, 2)]`` as ``rtrl_rl.grad.factors`` defines them; first ``[T, B]`` bool,
        s_vec ``[B, V, N(, 2)]``. ``pu`` may be a view of ``[B, T, ...]`` storage."""

    def takes_sensitivities(self, s_mat: torch.Tensor) -> bool:
        """Whether ``backward`` takes ``s_mat`` ``[B, I, M, N(, 2)]``."""

    def backward(self, s_mat: torch.Tensor, g: torch.Tensor,
                 update: PendingUpdate | None) -> torch.Tensor:
        """``acc [I, M, N(, 2)] = sum_b s_mat[b] * g[b]`` (g ``[B, N(, 2)]``) and, given the
        chunk's pending update of ``s_mat``, all of that update too, reading ``s_mat`` as
        few times as the backend can."""

    def warm_up(self, device: torch.device, dtype: torch.dtype) -> None:
        """Load or compile now what the first update would, for tensors of this device and
        dtype (nothing where that is quick)."""


#: Streams per block in the PyTorch backward. Blocks of [2, I, M, N] (1 MB at I=257,
#: N=256) stay cache-resident; in place, 2 beat 1, 4 and 8 by 1-3% at B=32, T=50.
_BLOCK = 2


def stream_block(s_mat: torch.Tensor) -> int:
    """Streams per block of the PyTorch update: cache-sized on the CPU; on a GPU the whole
    batch, in one kernel per operation rather than a Python loop over streams."""
    return _BLOCK if s_mat.device.type == "cpu" else max(1, s_mat.shape[0])


class TorchBackend:
    """PyTorch ops: every device, dtype and terms."""

    name, device = "torch", None

    def refusal(self, terms: RTRLTerms, s_vec: torch.Tensor) -> Exception | None:
        return None

    def chunk_factors(self, terms, first, s_vec) -> Factors:
        form = factors.pairs_torch if terms.block == 2 else factors.elementwise_torch
        return form(terms, first, s_vec)

    def takes_sensitivities(self, s_mat: torch.Tensor) -> bool:
        return True

    def backward(self, s_mat, g, update):
        """A block of streams at a time (no ``[B, ...]`` temporary; 2-3x faster than
        multiply-then-sum, bmm or einsum), each block updated right after it was read,
        while it is still in cache."""
        g_b = g[:, None, None]
        acc = None
        step = stream_block(s_mat)
        for lo in range(0, s_mat.shape[0], step):
            hi = min(lo + step, s_mat.shape[0])
            if acc is None:
                acc = s_mat[lo:hi] * g_b[lo:hi]
            else:
                acc[: hi - lo].addcmul_(s_mat[lo:hi], g_b[lo:hi])
            if update is not None:
                update.block(lo, hi)
        return acc.sum(0)

    def warm_up(self, device: torch.device, dtype: torch.dtype) -> None:
        pass


class NumbaBackend:
    """Threaded numba kernels on the CPU: the fused factor sweeps of ``factors`` and the
    one-pass gradient and update of ``sensitivity_pass``."""

    name, device = "numba", "cpu"

    def refusal(self, terms: RTRLTerms, s_vec: torch.Tensor) -> Exception | None:
        t = terms.like if terms.sweep is not None else None
        if t is None or not (t.device.type == "cpu" and t.dtype in factors.KERNEL_DTYPES
                             and s_vec.dtype == t.dtype):
            return ValueError("the numba kernels take eLSTM terms or 2x2-block terms as CPU "
                              "float32/float64 tensors")
        if not factors.numba_sweeps():
            return ImportError("backend='numba' needs the numba package")
        return None

    def chunk_factors(self, terms, first, s_vec) -> Factors:
        sweeps = factors.numba_sweeps()
        if terms.sweep == "pairs":
            return factors.pairs_numba(sweeps["pairs"], terms, first, s_vec)
        return factors.elstm_numba(sweeps["elstm"], terms, first, s_vec)

    def takes_sensitivities(self, s_mat: torch.Tensor) -> bool:
        return sensitivity_pass.usable(s_mat)

    def backward(self, s_mat, g, update):
        """Short chunks: the gradient and the whole update in one pass over ``s_mat``;
        longer ones: the gradient and the scaling, then one whole-batch matmul, which MKL
        does better than the kernel once the rank-T update is compute-bound."""
        if update is None:
            return sensitivity_pass.grad_and_update(s_mat, g)
        if update.x.shape[0] <= sensitivity_pass.ONE_PASS_MAX_T:
            acc = sensitivity_pass.grad_and_update(s_mat, g, update.p0, update.x, update.pu)
            update.mark_updated(0, s_mat.shape[0])
        else:
            acc = sensitivity_pass.grad_and_update(s_mat, g, update.p0)
            update.rank_t(0, s_mat.shape[0])
        return acc

    def warm_up(self, device: torch.device, dtype: torch.dtype) -> None:
        """Compile (or load from numba's cache) the factor sweeps with one tiny chunk each,
        rather than inside the first update."""
        if device.type != "cpu" or dtype not in factors.KERNEL_DTYPES:
            return
        if not factors.numba_sweeps():
            return
        c, w = torch.zeros(1, 1, 1, dtype=dtype), torch.zeros(1, dtype=dtype)
        first = torch.zeros(1, 1, dtype=torch.bool)
        self.chunk_factors(ELSTMTerms(c, c, c, w, w), first, torch.zeros(1, 4, 1, dtype=dtype))
        u = torch.zeros(1, 1, 1, 2, dtype=dtype)
        self.chunk_factors(PairTerms(torch.zeros(1, 1, 1, 2, 2, dtype=dtype), {"W": u},
                                     {"p": u}), first, torch.zeros(1, 1, 1, 2, dtype=dtype))


@functools.cache
def triton_modules():
    """``(factors_triton, sensitivity_triton)``, or None where triton does not import.
    Looked up once: the engine asks on every chunk."""
    try:
        from rtrl_rl.grad import factors_triton, sensitivity_triton
    except ImportError:
        return None
    return factors_triton, sensitivity_triton


class TritonBackend:
    """Triton kernels on CUDA (on any device with ``TRITON_INTERPRET=1``, for the tests):
    the factor sweeps of ``factors_triton`` and the gradient-and-scaling pass of
    ``sensitivity_triton``, whose rank-T rest of the update is one ``baddbmm_``."""

    name, device = "triton", "cuda"

    def refusal(self, terms: RTRLTerms, s_vec: torch.Tensor) -> Exception | None:
        if terms.sweep is None:
            return ValueError("the Triton kernels take eLSTM terms or 2x2-block terms")
        modules = triton_modules()
        if modules is None:
            return ImportError("backend='triton' needs the triton package")
        t = terms.like
        if not (modules[0].usable(t) and t.dtype == s_vec.dtype):
            return ValueError("the Triton kernels take CUDA float32/float64 tensors (any "
                              "device with TRITON_INTERPRET=1)")
        return None

    def chunk_factors(self, terms, first, s_vec) -> Factors:
        sweeps = triton_modules()[0]
        form = sweeps.pair_factors if terms.sweep == "pairs" else sweeps.elstm_factors
        return form(terms, first, s_vec)

    def takes_sensitivities(self, s_mat: torch.Tensor) -> bool:
        modules = triton_modules() if s_mat.is_cuda and s_mat.is_contiguous() else None
        return modules is not None and modules[0].usable(s_mat)

    def backward(self, s_mat, g, update):
        kernels = triton_modules()[1]
        if update is None:
            return kernels.grad_and_scale(s_mat, g)
        acc = kernels.grad_and_scale(s_mat, g, update.p0)
        increment_version(s_mat)  # written behind autograd's back: a second backward fails
        update.rank_t(0, s_mat.shape[0])
        return acc

    def warm_up(self, device: torch.device, dtype: torch.dtype) -> None:
        pass  # the kernels compile on their first call, for the shapes they get


TORCH, NUMBA, TRITON = TorchBackend(), NumbaBackend(), TritonBackend()
BACKENDS: dict[str, KernelBackend] = {b.name: b for b in (TORCH, NUMBA, TRITON)}
_FUSED = (NUMBA, TRITON)  # tried in this order by the automatic choice; torch otherwise


def factor_backend(terms: RTRLTerms, s_vec: torch.Tensor, name: str = "auto"
                   ) -> KernelBackend:
    """The backend for the chunk factors of ``terms``: ``name`` (``torch``, ``numba``,
    ``triton``: that one, or its error), or for ``auto`` the fused backend of the terms'
    device type that takes them, else ``torch``."""
    if name == "auto":
        if terms.sweep is not None:
            kind = terms.like.device.type
            for backend in _FUSED:
                if backend.device == kind and backend.refusal(terms, s_vec) is None:
                    return backend
        return TORCH
    if name not in BACKENDS:
        raise ValueError(f"backend must be auto, torch, numba or triton, not {name!r}")
    error = BACKENDS[name].refusal(terms, s_vec)
    if error is not None:
        raise error
    return BACKENDS[name]


def pass_backend(s_mat: torch.Tensor) -> KernelBackend:
    """The backend for the injection's backward over ``s_mat`` ``[B, I, M, N(, 2)]``."""
    kind = s_mat.device.type
    for backend in _FUSED:
        if backend.device == kind and backend.takes_sensitivities(s_mat):
            return backend
    return TORCH


def chunk_factors(terms: RTRLTerms, first: torch.Tensor, s_vec: torch.Tensor,
                  backend: str = "auto") -> Factors:
    """``pu``, ``p0`` and ``new_vec`` of one chunk (``KernelBackend.chunk_factors``) by the
    backend ``factor_backend`` gives for ``backend`` (``auto`` | ``torch`` | ``numba`` |
    ``triton``). s_vec: the vector sensitivities at the chunk's start, in ``terms.vector``
    order."""
    return factor_backend(terms, s_vec, backend).chunk_factors(terms, first, s_vec)


def warm_up(device: torch.device, dtype: torch.dtype) -> None:
    """Every backend's ``warm_up`` for tensors of this device and dtype."""
    for backend in BACKENDS.values():
        backend.warm_up(device, dtype)
