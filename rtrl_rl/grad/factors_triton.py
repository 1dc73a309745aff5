"""The RTRL chunk factors as Triton kernels, for CUDA.

The PyTorch form of ``rtrl_rl.grad.factors`` launches a few small kernels per time step
(for a 2x2-block layer, ``T`` steps of small matrix products; for the eLSTM, some 20 kernels
over ``[T, B, N]``), which on a GPU costs launch latency, not arithmetic. Here one program
owns a block of units of one stream and runs the whole reverse sweep over the chunk in
registers: ``P_s``, the ``pu`` rows it stores, and the running sums of the vector
sensitivities, as the numba kernels do on the CPU. Same inputs and outputs as those
(``pu`` as a ``[T, B, ...]`` view of ``[B, T, ...]`` storage).

Importing this module imports triton. With ``TRITON_INTERPRET=1`` set before that import,
the kernels also run on CPU tensors (Triton's interpreter), which is how the tests check
them on machines without a GPU.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

#: Units per program: at B=32, N=256 that is 128 programs, about one per SM of a large GPU.
BLOCK_N = 64
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"


def usable(t: torch.Tensor) -> bool:
    """Whether the kernels can take ``t``'s device (CUDA, or any device when interpreted)."""
    return t.dtype in (torch.float32, torch.float64) and (t.is_cuda or INTERPRETED)


@triton.jit
def _elstm_sweep(c_prev, z, f, w_z, w_f, keep, s_vec, pu, p0, new_vec, T, B, N,
                 BLOCK: tl.constexpr):
    """c_prev, z, f ``[T, B, N]``; keep ``[T, B]``; s_vec, new_vec ``[B, 4, N]`` (w_z, w_f,
    b_z, b_f); pu ``[B, T, 2, N]``; p0 ``[B, N]``."""
    b = tl.program_id(0)
    n = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    live = n < N
    wz = tl.load(w_z + n, mask=live, other=0.0)
    wf = tl.load(w_f + n, mask=live, other=0.0)
    p = wz * 0.0 + 1.0
    v_wz, v_wf, v_bz, v_bf = wz * 0.0, wz * 0.0, wz * 0.0, wz * 0.0
    for i in range(0, T):
        s = T - 1 - i
        at = (s * B + b) * N + n
        cp = tl.load(c_prev + at, mask=live, other=0.0)
        zz = tl.load(z + at, mask=live, other=0.0)
        ff = tl.load(f + at, mask=live, other=0.0)
        zeta = (1.0 - ff) * (1.0 - zz * zz)
        phi = (cp - zz) * ff * (1.0 - ff)
        pz, pf = p * zeta, p * phi
        row = (b * T + s) * 2 * N + n
        tl.store(pu + row, pz, mask=live)
        tl.store(pu + row + N, pf, mask=live)
        v_wz += pz * cp
        v_wf += pf * cp
        v_bz += pz
        v_bf += pf
        p = p * (ff + wz * zeta + wf * phi) * tl.load(keep + s * B + b)
    tl.store(p0 + b * N + n, p, mask=live)
    base = b * 4 * N + n
    tl.store(new_vec + base, v_wz + p * tl.load(s_vec + base, mask=live, other=0.0),
             mask=live)
    tl.store(new_vec + base + N, v_wf + p * tl.load(s_vec + base + N, mask=live, other=0.0),
             mask=live)
    tl.store(new_vec + base + 2 * N,
             v_bz + p * tl.load(s_vec + base + 2 * N, mask=live, other=0.0), mask=live)
    tl.store(new_vec + base + 3 * N,
             v_bf + p * tl.load(s_vec + base + 3 * N, mask=live, other=0.0), mask=live)


@triton.jit
def _pairs_sweep(a, u, v, keep, s_vec, pu, p0, new_vec, T, B, N, M: tl.constexpr,
                 V: tl.constexpr, M_PAD: tl.constexpr, V_PAD: tl.constexpr,
                 BLOCK: tl.constexpr):
    """a ``[T, B, N, 2, 2]``; u ``[T, B, M, N, 2]``; v ``[T, B, V, N, 2]``; keep ``[T, B]``;
    s_vec, new_vec ``[B, V, N, 2]``; pu ``[B, T, M, N, 2]``; p0 ``[B, N, 2, 2]``. ``P_s``
    is kept as its four entries, each ``[BLOCK]``; the matrix and vector terms as
    ``[M_PAD, BLOCK]`` and ``[V_PAD, BLOCK]`` tiles."""
    b = tl.program_id(0)
    n = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    live = n < N
    jm = tl.arange(0, M_PAD)[:, None]
    jv = tl.arange(0, V_PAD)[:, None]
    live_m = (jm < M) & live[None, :]
    live_v = (jv < V) & live[None, :]
    zero = tl.load(a + (b * N + n) * 4, mask=live, other=0.0) * 0.0
    q00, q01, q10, q11 = zero + 1.0, zero, zero, zero + 1.0
    acc0 = tl.zeros([V_PAD, BLOCK], dtype=zero.dtype)
    acc1 = tl.zeros([V_PAD, BLOCK], dtype=zero.dtype)
    for i in range(0, T):
        s = T - 1 - i
        at_u = (((s * B + b) * M + jm) * N + n[None, :]) * 2
        u0 = tl.load(u + at_u, mask=live_m, other=0.0)
        u1 = tl.load(u + at_u + 1, mask=live_m, other=0.0)
        at_pu = (((b * T + s) * M + jm) * N + n[None, :]) * 2
        tl.store(pu + at_pu, q00[None, :] * u0 + q01[None, :] * u1, mask=live_m)
        tl.store(pu + at_pu + 1, q10[None, :] * u0 + q11[None, :] * u1, mask=live_m)
        at_v = (((s * B + b) * V + jv) * N + n[None, :]) * 2
        v0 = tl.load(v + at_v, mask=live_v, other=0.0)
        v1 = tl.load(v + at_v + 1, mask=live_v, other=0.0)
        acc0 += q00[None, :] * v0 + q01[None, :] * v1
        acc1 += q10[None, :] * v0 + q11[None, :] * v1
        k = tl.load(keep + s * B + b)
        at_a = ((s * B + b) * N + n) * 4
        g00 = tl.load(a + at_a, mask=live, other=0.0) * k
        g01 = tl.load(a + at_a + 1, mask=live, other=0.0) * k
        g10 = tl.load(a + at_a + 2, mask=live, other=0.0) * k
        g11 = tl.load(a + at_a + 3, mask=live, other=0.0) * k
        q00, q01, q10, q11 = (q00 * g00 + q01 * g10, q00 * g01 + q01 * g11,
                              q10 * g00 + q11 * g10, q10 * g01 + q11 * g11)
    at_p = (b * N + n) * 4
    tl.store(p0 + at_p, q00, mask=live)
    tl.store(p0 + at_p + 1, q01, mask=live)
    tl.store(p0 + at_p + 2, q10, mask=live)
    tl.store(p0 + at_p + 3, q11, mask=live)
    at_s = ((b * V + jv) * N + n[None, :]) * 2
    s0 = tl.load(s_vec + at_s, mask=live_v, other=0.0)
    s1 = tl.load(s_vec + at_s + 1, mask=live_v, other=0.0)
    tl.store(new_vec + at_s, acc0 + q00[None, :] * s0 + q01[None, :] * s1, mask=live_v)
    tl.store(new_vec + at_s + 1, acc1 + q10[None, :] * s0 + q11[None, :] * s1, mask=live_v)


def _grid(b: int, n: int) -> tuple[int, int]:
    return b, triton.cdiv(n, BLOCK_N)


def elstm_factors(terms, first: torch.Tensor, s_vec: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``pu [T, B, 2, N]`` (a view of ``[B, T, 2, N]`` storage), ``p0 [B, N]``, ``new_vec
    [B, 4, N]`` from ``ELSTMTerms``."""
    t_len, b, n = terms.z.shape
    z = terms.z
    pu = z.new_empty(b, t_len, 2, n)
    p0 = z.new_empty(b, n)
    new_vec = z.new_empty(s_vec.shape)
    _elstm_sweep[_grid(b, n)](
        terms.c_prev.contiguous(), z.contiguous(), terms.f.contiguous(),
        terms.w_z.contiguous(), terms.w_f.contiguous(), (~first).to(z.dtype).contiguous(),
        s_vec.to(z.dtype).contiguous(), pu, p0, new_vec, t_len, b, n, BLOCK=BLOCK_N)
    return pu.transpose(0, 1), p0, new_vec


def pair_factors(terms, first: torch.Tensor, s_vec: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``pu [T, B, M, N, 2]`` (a view of ``[B, T, M, N, 2]`` storage), ``p0 [B, N, 2, 2]``,
    ``new_vec [B, V, N, 2]`` from ``PairTerms``."""
    a = terms.a.contiguous()
    u = torch.stack(list(terms.matrix.values()), 2)  # [T, B, M, N, 2]
    v = torch.stack(list(terms.vector.values()), 2)  # [T, B, V, N, 2]
    t_len, b, m, n, _ = u.shape
    nv = v.shape[2]
    pu = a.new_empty(b, t_len, m, n, 2)
    p0 = a.new_empty(b, n, 2, 2)
    new_vec = a.new_empty(s_vec.shape)
    _pairs_sweep[_grid(b, n)](
        a, u, v, (~first).to(a.dtype).contiguous(), s_vec.to(a.dtype).contiguous(), pu, p0,
        new_vec, t_len, b, n, M=m, V=nv, M_PAD=triton.next_power_of_2(m),
        V_PAD=triton.next_power_of_2(nv), BLOCK=BLOCK_N)
    return pu.transpose(0, 1), p0, new_vec
