"""The small per-chunk quantities of the RTRL update, from an element-wise layer's terms.

With ``g_t = a_t * (1 - first_t)`` and ``P_s = prod_{r=s+1..T-1} g_r`` (a reverse running
product; 1 for the last step), the end-of-chunk update needs

    pu[s, :, j]  = P_s * u_j[s]                          [T, B, M, N]
    p0           = P_0 * g_0 = prod_r g_r                 [B, N]
    new_vec[:, v] = p0 * s_vec[:, v] + sum_s pu[s, :, key_v] * factor_v[s]   [B, V, N]

(``factor_v`` is 1 for the biases). In PyTorch this is some 60 small operations over
``[T, B, N]`` tensors, most of them the step-by-step sweep for ``P``, after the eLSTM's terms
took another 8. For eLSTM terms on the CPU, a numba kernel computes the terms and all of the
above in one pass over ``c_prev, z, f``, faster than the PyTorch terms and sweep
(measurements: docs/performance.md). On CUDA, Triton kernels do the same sweeps
(``rtrl_rl.grad.factors_triton``) where triton is installed (it comes with PyTorch's CUDA
builds). The PyTorch form serves every other case (other element-wise cells, no numba or
triton) and is the kernels' test oracle. Which form runs is chosen in
``rtrl_rl.grad.backends``; this module holds the PyTorch forms and the numba sweeps.

For layers with 2 reals per unit (``PairTerms``), ``g_t`` and ``P_s`` are 2x2 matrices per
unit (``P_s = g_{T-1} ... g_{s+1}``, in that order), products with them are matrix products,
and ``pu``, ``new_vec`` gain a trailing axis of 2 (``p0``: ``[B, N, 2, 2]``). On the CPU a
second numba kernel does that sweep, far faster than the PyTorch form, most of whose time
goes to ``T`` steps of small 2x2 products.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from rtrl_rl.models.rtrl_contracts import ELSTMSweepTerms, RTRLTerms

log = logging.getLogger(__name__)

#: The dtypes the numba sweeps are compiled for.
KERNEL_DTYPES = (torch.float32, torch.float64)
_kernel = None  # the compiled numba functions, once built; False if numba is unavailable
prange = range  # numba's prange once ``numba_sweeps`` has imported numba


def suffix_products(g: torch.Tensor, sweep: bool | None = None) -> torch.Tensor:
    """``P_s = prod_{r=s+1..T-1} g_r`` for g ``[T, ...]`` (``P_{T-1} = 1``). By one reverse
    sweep on the CPU (faster there than flip/cumprod/flip), by one cumprod elsewhere (not T
    small kernels on a GPU); ``sweep`` forces either."""
    sweep = g.device.type == "cpu" if sweep is None else sweep
    p = torch.empty_like(g)
    p[-1] = 1.0
    if sweep:
        for s in range(g.shape[0] - 1, 0, -1):
            torch.mul(p[s], g[s], out=p[s - 1])
    elif g.shape[0] > 1:
        p[:-1] = g[1:].flip(0).cumprod(0).flip(0)
    return p


def elementwise_torch(terms: RTRLTerms, first: torch.Tensor, s_vec: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The PyTorch form for ``block = 1`` terms: ``pu [T, B, M, N]``, ``p0 [B, N]``,
    ``new_vec [B, V, N]``, from terms ``[T, B, N]`` and s_vec ``[B, V, N]``."""
    with torch.no_grad():
        t_len, b, n = terms.a.shape
        g = terms.a * (~first).to(terms.a.dtype).unsqueeze(-1)
        p = suffix_products(g)
        p0 = p[0] * g[0]
        keys = list(terms.matrix)
        pu = torch.empty(t_len, b, len(keys), n, dtype=g.dtype, device=g.device)
        for j, key in enumerate(keys):
            torch.mul(p, terms.matrix[key], out=pu[:, :, j])
        new_vec = s_vec * p0[:, None, :]
        # Vector terms share factors (c_prev for w_z and w_f, 1 for the biases): one
        # reduction over time per distinct factor, for all matrix keys at once.
        sums: dict[int, torch.Tensor] = {}
        for j, (key, factor) in enumerate(terms.vector.values()):
            fid = id(factor)
            if fid not in sums:
                sums[fid] = (pu if factor is None else pu * factor.unsqueeze(2)).sum(0)
            new_vec[:, j] += sums[fid][:, keys.index(key)]
    return pu, p0, new_vec


def _matmul2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for ``[..., 2, 2]`` blocks, written out (a bmm of 2x2s is slow on CPU)."""
    return torch.addcmul(a[..., :, :1] * b[..., :1, :], a[..., :, 1:], b[..., 1:, :])


def _matvec2(a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``a @ v`` for ``[..., 2, 2]`` blocks and ``[..., 2]`` vectors (broadcasting)."""
    return torch.addcmul(a[..., :, 0] * v[..., :1], a[..., :, 1], v[..., 1:])


def pairs_torch(terms: RTRLTerms, first: torch.Tensor, s_vec: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The PyTorch form for 2x2 blocks per unit: terms.a ``[T, B, N, 2, 2]``, u and v
    ``[T, B, N, 2]``, s_vec ``[B, V, N, 2]``."""
    with torch.no_grad():
        g = terms.a * (~first).to(terms.a.dtype)[:, :, None, None, None]
        p = torch.empty_like(g)  # P_s, by one sweep of T small matrix products
        p[-1] = torch.eye(2, dtype=g.dtype, device=g.device)
        for s in range(g.shape[0] - 1, 0, -1):
            p[s - 1] = _matmul2(p[s], g[s])
        p0 = _matmul2(p[0], g[0])
        u = torch.stack(list(terms.matrix.values()), 2)  # [T, B, M, N, 2]
        pu = _matvec2(p.unsqueeze(2), u)
        v = torch.stack(list(terms.vector.values()), 2)  # [T, B, V, N, 2]
        new_vec = _matvec2(p0.unsqueeze(1), s_vec) + _matvec2(p.unsqueeze(2), v).sum(0)
    return pu, p0, new_vec


def elstm_numba(kernel, terms: ELSTMSweepTerms, first: torch.Tensor, s_vec: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The eLSTM's terms computed inside the sweep from ``c_prev, z, f`` (see ELSTMTerms):
    no ``a``, ``zeta``, ``phi`` tensors at all. ``pu`` is a ``[T, B, 2, N]`` view of
    ``[B, T, 2, N]`` storage, the layout the one-pass update kernel reads
    (``rtrl_rl.grad.sensitivity_pass``)."""
    t_len, b, n = terms.z.shape
    dtype = terms.z.dtype
    pu = torch.empty(b, t_len, 2, n, dtype=dtype)
    p0 = torch.empty(b, n, dtype=dtype)
    new_vec = torch.empty(s_vec.shape, dtype=dtype)
    kernel(terms.c_prev.contiguous().numpy(), terms.z.contiguous().numpy(),
           terms.f.contiguous().numpy(), terms.w_z.numpy(), terms.w_f.numpy(),
           (~first).to(dtype).contiguous().numpy(), s_vec.contiguous().numpy(), pu.numpy(),
           p0.numpy(), new_vec.numpy())
    return pu.transpose(0, 1), p0, new_vec


def pairs_numba(kernel, terms: RTRLTerms, first: torch.Tensor, s_vec: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pair layers' factors by one numba sweep; ``pu`` is a ``[T, B, M, N, 2]`` view of
    ``[B, T, M, N, 2]`` storage, as for the eLSTM."""
    dtype = terms.a.dtype
    a = _unbroadcast([terms.a])[0].contiguous()  # [T or 1, B or 1, N, 2, 2]
    u = torch.stack(_unbroadcast(list(terms.matrix.values())), 2)  # [T or 1, B or 1, M, N, 2]
    v = torch.stack(list(terms.vector.values()), 2)  # [T, B, V, N, 2]
    t_len, b, _, n, _ = v.shape
    m = u.shape[2]
    pu = torch.empty(b, t_len, m, n, 2, dtype=dtype)
    p0 = torch.empty(b, n, 2, 2, dtype=dtype)
    new_vec = torch.empty(s_vec.shape, dtype=dtype)
    kernel(a.numpy(), u.numpy(), v.numpy(), (~first).to(dtype).contiguous().numpy(),
           s_vec.contiguous().numpy(), pu.numpy(), p0.numpy(), new_vec.numpy())
    return pu.transpose(0, 1), p0, new_vec


def _unbroadcast(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The tensors ``[T, B, ...]`` cut to length 1 in time and/or streams where all of them
    are broadcast there (stride 0): a linear pair layer's Jacobian blocks and matrix terms
    are the same at every step and stream, and materialising them (13 MB for ``a`` at B=32,
    T=50, N=256) cost more than the sweep that reads them."""
    for dim in (0, 1):
        if all(t.stride(dim) == 0 for t in tensors):
            tensors = [t.narrow(dim, 0, 1) for t in tensors]
    return tensors


def numba_sweeps():
    """The compiled sweeps, ``{"elstm": ..., "pairs": ...}``; False without numba."""
    global _kernel, prange
    if _kernel is None:
        try:
            import numba
        except ImportError:
            log.info("numba not installed: RTRL uses the PyTorch form of the chunk factors")
            _kernel = False
        else:
            prange = numba.prange
            # Streams threaded, with the same bits: that sped up the pair layers' sweep,
            # and the eLSTM's when timed inside whole updates (alone it gained little).
            # Measurements: docs/performance.md.
            jit = numba.njit(cache=True, nogil=True, parallel=True)
            _kernel = {"elstm": jit(_sweep_elstm), "pairs": jit(_sweep_pairs)}
    return _kernel


def _sweep_pairs(a, u, v, keep, s_vec, pu, p0, new_vec):  # pragma: no cover (numba)
    """Streams in parallel, each backwards in time: the running product ``P_s`` (2x2 per
    unit) applied to the matrix terms ``u`` and the vector terms ``v``, then ``P_{s-1} =
    P_s g_s``. a ``[T, B, N, 2, 2]``; u ``[T, B, M, N, 2]``, either of them of length 1 in
    time or streams where it is the same at every step or stream; v ``[T, B, V, N, 2]``; pu
    ``[B, T, M, N, 2]``. ``P`` is kept as two rows in the pairs' own interleaved layout,
    ``qa = (P00, P11)`` and ``qc = (P01, P10)`` of each unit, and every loop runs over a row
    slice: so they vectorise (with lane permutes), where ``[4, N]`` rows and 5-d indexing
    compiled to slower scalar code with the same bits (measurements: docs/performance.md)."""
    t_len, b_len, m_len, n_len = v.shape[0], v.shape[1], u.shape[2], u.shape[3]
    v_len, n2 = v.shape[2], 2 * n_len
    a_f = a.reshape(a.shape[0], a.shape[1], 4 * n_len)
    u_f = u.reshape(u.shape[0], u.shape[1], m_len, n2)
    a_t, a_b, u_t, u_b = a.shape[0] > 1, a.shape[1] > 1, u.shape[0] > 1, u.shape[1] > 1
    v_f = v.reshape(t_len, b_len, v_len, n2)
    pu_f = pu.reshape(b_len, t_len, m_len, n2)
    s_f = s_vec.reshape(b_len, v_len, n2)
    nv_f = new_vec.reshape(b_len, v_len, n2)
    p_f = p0.reshape(b_len, 4 * n_len)
    for b in prange(b_len):
        bi = np.int64(b)  # prange's index is unsigned: with 0 it would unify to a float
        qa = np.ones(n2, a.dtype)
        qc = np.zeros(n2, a.dtype)
        acc = np.zeros((v_len, n2), a.dtype)
        for s in range(t_len - 1, -1, -1):
            for j in range(m_len):
                src = u_f[s if u_t else 0, bi if u_b else 0, j]
                dst = pu_f[b, s, j]
                for n in range(n_len):
                    x0, x1 = src[2 * n], src[2 * n + 1]
                    dst[2 * n] = qa[2 * n] * x0 + qc[2 * n] * x1
                    dst[2 * n + 1] = qc[2 * n + 1] * x0 + qa[2 * n + 1] * x1
            for j in range(v_len):
                src, dst = v_f[s, b, j], acc[j]
                for n in range(n_len):
                    x0, x1 = src[2 * n], src[2 * n + 1]
                    dst[2 * n] += qa[2 * n] * x0 + qc[2 * n] * x1
                    dst[2 * n + 1] += qc[2 * n + 1] * x0 + qa[2 * n + 1] * x1
            k = keep[s, b]
            g = a_f[s if a_t else 0, bi if a_b else 0]
            for n in range(n_len):
                g00, g01 = g[4 * n] * k, g[4 * n + 1] * k
                g10, g11 = g[4 * n + 2] * k, g[4 * n + 3] * k
                q00, q01, q10, q11 = qa[2 * n], qc[2 * n], qc[2 * n + 1], qa[2 * n + 1]
                qa[2 * n] = q00 * g00 + q01 * g10
                qc[2 * n] = q00 * g01 + q01 * g11
                qc[2 * n + 1] = q10 * g00 + q11 * g10
                qa[2 * n + 1] = q10 * g01 + q11 * g11
        row = p_f[b]
        for n in range(n_len):
            row[4 * n], row[4 * n + 1] = qa[2 * n], qc[2 * n]
            row[4 * n + 2], row[4 * n + 3] = qc[2 * n + 1], qa[2 * n + 1]
        for j in range(v_len):
            src, part, dst = s_f[b, j], acc[j], nv_f[b, j]
            for n in range(n_len):
                x0, x1 = src[2 * n], src[2 * n + 1]
                dst[2 * n] = part[2 * n] + (qa[2 * n] * x0 + qc[2 * n] * x1)
                dst[2 * n + 1] = part[2 * n + 1] + (qc[2 * n + 1] * x0 + qa[2 * n + 1] * x1)


def _sweep_elstm(c_prev, z, f, w_z, w_f, keep, s_vec, pu, p, new_vec):  # pragma: no cover
    """The fused pass, compiled by numba (plain numpy semantics), streams in parallel. The
    eLSTM's terms are inlined (ELSTMTerms has the formulas); vector order w_z, w_f, b_z,
    b_f; pu ``[B, T, 2, N]``. Backwards in time, units innermost, one store per inner loop
    and no float64 constants, so that every inner loop vectorises."""
    t_len, b_len, n_len = z.shape
    one = np.ones(1, z.dtype)[0]
    for b in prange(b_len):
        zeta = np.empty(n_len, z.dtype)
        phi = np.empty(n_len, z.dtype)
        for n in range(n_len):
            p[b, n] = one
        for v in range(4):
            for n in range(n_len):
                new_vec[b, v, n] = 0
        for s in range(t_len - 1, -1, -1):
            for n in range(n_len):
                zeta[n] = (one - f[s, b, n]) * (one - z[s, b, n] * z[s, b, n])
            for n in range(n_len):
                phi[n] = (c_prev[s, b, n] - z[s, b, n]) * f[s, b, n] * (one - f[s, b, n])
            for n in range(n_len):
                pu[b, s, 0, n] = p[b, n] * zeta[n]
            for n in range(n_len):
                pu[b, s, 1, n] = p[b, n] * phi[n]
            for n in range(n_len):
                new_vec[b, 0, n] += pu[b, s, 0, n] * c_prev[s, b, n]
            for n in range(n_len):
                new_vec[b, 1, n] += pu[b, s, 1, n] * c_prev[s, b, n]
            for n in range(n_len):
                new_vec[b, 2, n] += pu[b, s, 0, n]
            for n in range(n_len):
                new_vec[b, 3, n] += pu[b, s, 1, n]
            k = keep[s, b]
            for n in range(n_len):
                p[b, n] *= (f[s, b, n] + w_z[n] * zeta[n] + w_f[n] * phi[n]) * k
        for v in range(4):
            for n in range(n_len):
                new_vec[b, v, n] += s_vec[b, v, n] * p[b, n]
