"""The CPU kernels over the carried matrix sensitivities ``S [B, I, M, N]``, for the
injection's backward.

The backward needs ``acc[i, m, n] = sum_b S_0[b, i, m, n] g[b, n]`` (the gradient the
carried credit sends to the ``[N, I]`` matrices), and the end-of-chunk update is
``S_T = P_0 * S_0 + sum_t x_t (x) pu_t``. Each reads the whole tensor (17 MB at B=32,
I=257, N=256), which is the cost that matters, so a numba kernel, threaded over blocks of
rows ``i``, does them in one read and one write of ``S``, in place:

- chunks of up to ``ONE_PASS_MAX_T`` steps: the gradient, the scaling and the rank-T
  update, block by block while the block and ``pu`` are in L1 (faster than the two passes
  below, which read ``S`` twice);
- longer chunks: the gradient and the scaling; the rank-T update then runs as one
  whole-batch ``baddbmm_`` (MKL), which is compute-bound there and where MKL's register
  blocking beats the kernel's.

This replaced a loop over blocks of 2 streams of PyTorch ops, whose Python and dispatch
were most of RTRL's cost above BPTT at short chunks.

Running the update on a background thread during the backward instead was slower on the
2-core CPU: the backward keeps both cores busy, so the update beside it slowed the
backward by more than the kernel costs inside it.

2x2-block layers (``[B, I, M, N, 2]``) take a twin kernel with the same update loop; with
it and the factor kernel a whole LRU update took much less time than before. Other
devices, and machines without numba, use the blocked PyTorch form in ``rtrl_rl.grad.rtrl``.
(Measurements: docs/performance.md.)
"""

from __future__ import annotations

import logging
import os
import sys

import torch
from torch.autograd.graph import increment_version

prange = range  # numba's prange once ``_load`` has imported numba
log = logging.getLogger(__name__)

_kernel = None  # the compiled function, once built; False if numba is unavailable
_ROWS = 16  # rows i per block: 16 x M*N floats stay in L1


def usable(s_mat: torch.Tensor) -> bool:
    """Whether ``s_mat`` can take the kernel (and the kernel exists): ``[B, I, M, N]`` or,
    for 2x2-block layers, ``[B, I, M, N, 2]``."""
    layout = s_mat.dim() == 4 or (s_mat.dim() == 5 and s_mat.shape[-1] == 2)
    return (s_mat.device.type == "cpu" and layout and s_mat.is_contiguous()
            and s_mat.dtype in (torch.float32, torch.float64) and bool(_load()))


#: Chunks of up to this many steps take the whole update in the kernel's one pass (it won at
#: T=10, 20 and 30 and lost at T=50, at B=32, I=257, N=256 on the 2-core CPU).
ONE_PASS_MAX_T = 32


def grad_and_update(s_mat: torch.Tensor, g: torch.Tensor, p0: torch.Tensor | None = None,
                    x: torch.Tensor | None = None, pu: torch.Tensor | None = None
                    ) -> torch.Tensor:
    """``acc [I, M, N] = sum_b s_mat[b] * g[b]``, then in place (where given)
    ``s_mat *= p0`` and ``s_mat += sum_t x[t] (x) pu[t]``, in one pass over ``s_mat``.
    s_mat ``[B, I, M, N]``; g, p0 ``[B, N]``; x ``[T, B, I]``; pu ``[T, B, M, N]``, ideally
    a view of ``[B, T, M, N]`` storage (the factor kernel's; other layouts are copied).
    For 2x2-block layers: s_mat ``[B, I, M, N, 2]``, g ``[B, N, 2]``, p0 ``[B, N, 2, 2]``
    (applied as a matrix to each unit's pair), pu ``[T, B, M, N, 2]``, and acc
    ``[I, M, N, 2]``."""
    _set_threads()
    b, dtype = s_mat.shape[0], s_mat.dtype
    acc = torch.zeros(s_mat.shape[1:], dtype=dtype)
    mode = 0 if p0 is None else 1 if pu is None else 2
    g = g.to(dtype).contiguous()
    if s_mat.dim() == 5:  # [B, 2, 2N]: (P00, P11) and (P01, P10), interleaved as S's pairs
        p0 = (s_mat.new_zeros(1, 2, 2) if p0 is None else torch.stack(
            [p0.diagonal(dim1=-2, dim2=-1), p0.flip(-1).diagonal(dim1=-2, dim2=-1)], 1
        ).reshape(b, 2, -1))
    elif p0 is None:  # unused, of the dimensions the kernel is compiled for
        p0 = s_mat.new_zeros(1, 1)
    p0 = p0.to(dtype).contiguous()
    if pu is None:
        x, pu_bt = s_mat.new_zeros(1, 1, 1), s_mat.new_zeros(1, 1, 1)
    else:
        x = x.to(dtype).contiguous()
        pu_bt = pu.transpose(0, 1).to(dtype).contiguous().view(b, pu.shape[0], -1)
    kernels = _load()
    kernel = kernels["pairs"] if s_mat.dim() == 5 else kernels["elstm"]
    kernel(s_mat.numpy(), g.numpy(), p0.numpy(), x.numpy(), pu_bt.numpy(), acc.numpy(),
            _ROWS, mode)
    if mode:
        increment_version(s_mat)  # written behind autograd's back: a second backward fails
    return acc


def _set_threads() -> None:
    """Give the kernels as many threads as torch has (within numba's pool)."""
    import numba

    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def limit_threads(n: int) -> None:
    """Give the kernel ``n`` threads. numba sizes its thread pool when it is imported, and
    the pool's idle threads spin-wait between kernels: two 1-thread runs on the 2-core CPU
    each ran 9x slower with a 2-thread pool. So this sets ``NUMBA_NUM_THREADS`` (which
    spawned worker processes inherit) while numba is not yet imported, which is why this
    module imports it only in ``_load``."""
    if "numba" in sys.modules:
        import numba

        if n < numba.config.NUMBA_NUM_THREADS:
            log.warning("numba was imported before the thread count was set: its %d-thread "
                        "pool may spin on cores the run does not own",
                        numba.config.NUMBA_NUM_THREADS)
        return
    os.environ["NUMBA_NUM_THREADS"] = str(n)


def _load():
    """The compiled kernels, ``{"elstm": ..., "pairs": ...}``; False without numba."""
    global _kernel, _rank_t, prange
    if _kernel is None:
        try:
            import numba
        except ImportError:
            log.info("numba not installed: the RTRL backward uses blocked PyTorch ops")
            _kernel = False
        else:
            prange = numba.prange
            _rank_t = numba.njit(inline="always", fastmath={"contract"})(_rank_t_update)
            # contract: x0 * q0 + x1 * q1 + ... as fused multiply-adds
            jit = numba.njit(cache=True, nogil=True, parallel=True, fastmath={"contract"})
            _kernel = {"elstm": jit(_pass), "pairs": jit(_pass_pairs)}
    return _kernel


def _rank_t_update(flat, x, pu, b, lo, hi):  # pragma: no cover (compiled by numba)
    """``flat[b, i] += sum_t x[t, b, i] * pu[b, t]`` for rows ``i`` in ``[lo, hi)``, the
    time steps in groups of 8, then at most one group each of 4, 2 and 1, so that each load
    and store of a row serves up to 8 multiply-adds (T=10: two passes over the rows, not
    three). flat ``[B, I, F]``, pu ``[B, T, F]``."""
    t_len, f_len = pu.shape[1], pu.shape[2]
    t8 = t_len - t_len % 8
    t4 = t8 + (t_len - t8) // 4 * 4
    t2 = t4 + (t_len - t4) // 2 * 2
    for t in range(0, t8, 8):
        for i in range(lo, hi):
            x0, x1, x2, x3 = x[t, b, i], x[t + 1, b, i], x[t + 2, b, i], x[t + 3, b, i]
            x4, x5, x6, x7 = x[t + 4, b, i], x[t + 5, b, i], x[t + 6, b, i], x[t + 7, b, i]
            for k in range(f_len):
                flat[b, i, k] += (x0 * pu[b, t, k] + x1 * pu[b, t + 1, k]
                                  + x2 * pu[b, t + 2, k] + x3 * pu[b, t + 3, k]
                                  + x4 * pu[b, t + 4, k] + x5 * pu[b, t + 5, k]
                                  + x6 * pu[b, t + 6, k] + x7 * pu[b, t + 7, k])
    for t in range(t8, t4, 4):
        for i in range(lo, hi):
            x0, x1, x2, x3 = x[t, b, i], x[t + 1, b, i], x[t + 2, b, i], x[t + 3, b, i]
            for k in range(f_len):
                flat[b, i, k] += (x0 * pu[b, t, k] + x1 * pu[b, t + 1, k]
                                  + x2 * pu[b, t + 2, k] + x3 * pu[b, t + 3, k])
    for t in range(t4, t2, 2):
        for i in range(lo, hi):
            x0, x1 = x[t, b, i], x[t + 1, b, i]
            for k in range(f_len):
                flat[b, i, k] += x0 * pu[b, t, k] + x1 * pu[b, t + 1, k]
    for t in range(t2, t_len):
        for i in range(lo, hi):
            x0 = x[t, b, i]
            for k in range(f_len):
                flat[b, i, k] += x0 * pu[b, t, k]


_rank_t = _rank_t_update  # its compiled form once ``_load`` has run


def _pass(s, g, p0, x, pu, acc, rows, mode):  # pragma: no cover (compiled by numba)
    """Threaded over blocks of ``rows`` rows ``i`` (each owns ``acc[block]`` and
    ``s[:, block]``). Per stream: the gradient (and, for mode >= 1, the scaling) of the
    block, then for mode 2 the rank-T update. Elements are indexed directly: slicing rows
    inside the loops costs a reference count each, which made the update several times
    slower. Units innermost, so that the inner loops vectorise. pu ``[B, T, M*N]``."""
    b_len, i_len, m_len, n_len = s.shape
    flat = s.reshape(b_len, i_len, m_len * n_len)
    for blk in prange((i_len + rows - 1) // rows):
        lo, hi = blk * rows, min(blk * rows + rows, i_len)
        for b in range(b_len):
            for i in range(lo, hi):
                for m in range(m_len):
                    for n in range(n_len):
                        acc[i, m, n] += s[b, i, m, n] * g[b, n]
                    if mode >= 1:
                        for n in range(n_len):
                            s[b, i, m, n] *= p0[b, n]
            if mode == 2:
                _rank_t(flat, x, pu, b, lo, hi)


def _pass_pairs(s, g, p0, x, pu, acc, rows, mode):  # pragma: no cover (compiled by numba)
    """``_pass`` for 2x2-block layers: s ``[B, I, M, N, 2]``, g ``[B, N, 2]``, p0
    ``[B, 2, 2N]`` (row 0: ``P00, P11`` of each unit, row 1: ``P01, P10``, interleaved as
    the pairs of ``s``), acc ``[I, M, N, 2]``, pu ``[B, T, M*N*2]``. The gradient runs over
    each row's ``N*2`` reals as one contiguous loop, the 2x2 products in a loop of their
    own (one loop mixing both did not vectorise, and was slower). That loop reads ``P`` in
    the pairs' own layout and indexes a row slice: it then vectorises (with lane permutes),
    where per-element 5-d indexing and ``[B, 2, 2, N]`` coefficients compiled to slower
    scalar code (measurements: docs/performance.md)."""
    b_len, i_len, m_len, n_len = s.shape[0], s.shape[1], s.shape[2], s.shape[3]
    n2 = 2 * n_len
    flat = s.reshape(b_len, i_len, m_len * n2)
    rows_s = s.reshape(b_len, i_len, m_len, n2)
    acc_f = acc.reshape(i_len, m_len, n2)
    g_f = g.reshape(b_len, n2)
    for blk in prange((i_len + rows - 1) // rows):
        lo, hi = blk * rows, min(blk * rows + rows, i_len)
        for b in range(b_len):
            for i in range(lo, hi):
                for m in range(m_len):
                    for j in range(n2):
                        acc_f[i, m, j] += rows_s[b, i, m, j] * g_f[b, j]
                    if mode >= 1:
                        row, pa, pc = rows_s[b, i, m], p0[b, 0], p0[b, 1]
                        for n in range(n_len):
                            x0, x1 = row[2 * n], row[2 * n + 1]
                            row[2 * n] = pa[2 * n] * x0 + pc[2 * n] * x1
                            row[2 * n + 1] = pc[2 * n + 1] * x0 + pa[2 * n + 1] * x1
            if mode == 2:
                _rank_t(flat, x, pu, b, lo, hi)
