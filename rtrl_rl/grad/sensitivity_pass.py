"""One pass over the carried matrix sensitivities on the CPU, for the injection's backward.

The backward needs ``acc[i, m, n] = sum_b S[b, i, m, n] g[b, n]`` (the gradient the carried
credit sends to the ``[N, I]`` matrices), and the end-of-chunk update then starts with
``S *= P_0``. Both read the whole tensor (17 MB at B=32, I=257, N=256), which is the cost
that matters. A numba kernel does both in one read and one write, threaded over ``i``;
the rank-T update matmul then runs as one whole-batch ``baddbmm_`` (MKL). That replaced a
loop over blocks of 2 streams of PyTorch ops, whose Python and dispatch were most of
RTRL's cost above BPTT at short chunks: at B=32, T=10, N=256 on the 2-core CPU, 0.26 +
0.62 ms against about 2.0 ms for the blocked backward.

Only the element-wise layout ``[B, I, M, N]`` in float32/float64 takes it; 2x2-block layers
and other devices use the blocked PyTorch form in ``rtrl_rl.grad.rtrl``.
"""

from __future__ import annotations

import logging
import os
import sys

import torch

prange = range  # numba's prange once ``_load`` has imported numba
log = logging.getLogger(__name__)

_kernel = None  # the compiled function, once built; False if numba is unavailable


def usable(s_mat: torch.Tensor) -> bool:
    """Whether ``s_mat`` can take the kernel (and the kernel exists)."""
    return (s_mat.device.type == "cpu" and s_mat.dim() == 4 and s_mat.is_contiguous()
            and s_mat.dtype in (torch.float32, torch.float64) and bool(_load()))


def grad_and_scale(s_mat: torch.Tensor, g: torch.Tensor, p0: torch.Tensor | None
                   ) -> torch.Tensor:
    """``acc [I, M, N] = sum_b s_mat[b] * g[b]``, then ``s_mat *= p0`` in place (if
    ``p0 [B, N]`` is given), in one pass. s_mat ``[B, I, M, N]``, g ``[B, N]``."""
    import numba

    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    b, i, m, n = s_mat.shape
    acc = torch.zeros(i, m, n, dtype=s_mat.dtype)
    g = g.to(s_mat.dtype).contiguous()
    scale = p0 is not None
    p = p0.to(s_mat.dtype).contiguous() if scale else g
    _load()(s_mat.numpy(), g.numpy(), p.numpy(), acc.numpy(), scale)
    return acc


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
    global _kernel, prange
    if _kernel is None:
        try:
            import numba
        except ImportError:
            log.info("numba not installed: the RTRL backward uses blocked PyTorch ops")
            _kernel = False
        else:
            prange = numba.prange
            _kernel = numba.njit(cache=True, nogil=True, parallel=True)(_pass)
    return _kernel


def _pass(s, g, p0, acc, scale):  # pragma: no cover (compiled by numba)
    """Threaded over rows ``i`` (each owns ``acc[i]`` and ``s[:, i]``); units innermost so
    that the inner loops vectorise."""
    b_len, i_len, m_len, n_len = s.shape
    for i in prange(i_len):
        for b in range(b_len):
            gb, pb = g[b], p0[b]
            for m in range(m_len):
                row, a = s[b, i, m], acc[i, m]
                for n in range(n_len):
                    a[n] += row[n] * gb[n]
                if scale:
                    for n in range(n_len):
                        row[n] *= pb[n]
