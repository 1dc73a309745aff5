"""The injection's backward over the carried matrix sensitivities as a Triton kernel, for
CUDA: the CUDA twin of ``rtrl_rl.grad.sensitivity_pass``.

``acc[i, m, n] = sum_b S_0[b, i, m, n] g[b, n]`` and, where the chunk's update is pending,
``S_0 *= P_0`` in the same read of ``S`` (the rank-T rest of the update is then one
``baddbmm_``, which cuBLAS does well). The PyTorch form this replaces materialises
``S_0 * g`` as a ``[B, I, M, N]`` temporary, sums it, and scales ``S`` in a third pass: five
passes over the tensor against two here. One program owns a tile of rows ``(i, m)`` and
units ``n`` and loops over the streams, so ``acc`` needs no atomics.

2x2-block layers (``[B, I, M, N, 2]``) scale each unit's pair by its ``P_0`` block.
Importing this module imports triton; ``TRITON_INTERPRET=1`` (set before that) runs the
kernel on CPU tensors, which is how the tests check it without a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_R, BLOCK_N = 16, 64


@triton.jit
def _tile(R, N, BR: tl.constexpr, BN: tl.constexpr):
    """This program's rows ``[BR, 1]`` and units ``[1, BN]``, and which of them exist."""
    r = tl.program_id(0) * BR + tl.arange(0, BR)[:, None]
    n = tl.program_id(1) * BN + tl.arange(0, BN)[None, :]
    return r, n, n < N, (r < R) & (n < N)


@triton.jit
def _grad_scale(s, g, p0, acc, B, R, N, SCALE: tl.constexpr, BR: tl.constexpr,
                BN: tl.constexpr):
    """s ``[B, R, N]`` (R = I * M), g and p0 ``[B, N]``, acc ``[R, N]``."""
    r, n, live_n, live = _tile(R, N, BR, BN)
    total = tl.zeros([BR, BN], dtype=s.dtype.element_ty)
    for b in range(0, B):
        at = (b * R + r) * N + n
        x = tl.load(s + at, mask=live, other=0.0)
        total += x * tl.load(g + b * N + n, mask=live_n, other=0.0)
        if SCALE:
            tl.store(s + at, x * tl.load(p0 + b * N + n, mask=live_n, other=0.0), mask=live)
    tl.store(acc + r * N + n, total, mask=live)


@triton.jit
def _grad_scale_pairs(s, g, p0, acc, B, R, N, SCALE: tl.constexpr, BR: tl.constexpr,
                      BN: tl.constexpr):
    """s ``[B, R, N, 2]``, g ``[B, N, 2]``, p0 ``[B, N, 2, 2]``, acc ``[R, N, 2]``."""
    r, n, live_n, live = _tile(R, N, BR, BN)
    total0 = tl.zeros([BR, BN], dtype=s.dtype.element_ty)
    total1 = tl.zeros([BR, BN], dtype=s.dtype.element_ty)
    for b in range(0, B):
        at = ((b * R + r) * N + n) * 2
        x0 = tl.load(s + at, mask=live, other=0.0)
        x1 = tl.load(s + at + 1, mask=live, other=0.0)
        gn = (b * N + n) * 2
        total0 += x0 * tl.load(g + gn, mask=live_n, other=0.0)
        total1 += x1 * tl.load(g + gn + 1, mask=live_n, other=0.0)
        if SCALE:
            pn = (b * N + n) * 4
            p00 = tl.load(p0 + pn, mask=live_n, other=0.0)
            p01 = tl.load(p0 + pn + 1, mask=live_n, other=0.0)
            p10 = tl.load(p0 + pn + 2, mask=live_n, other=0.0)
            p11 = tl.load(p0 + pn + 3, mask=live_n, other=0.0)
            tl.store(s + at, p00 * x0 + p01 * x1, mask=live)
            tl.store(s + at + 1, p10 * x0 + p11 * x1, mask=live)
    out = (r * N + n) * 2
    tl.store(acc + out, total0, mask=live)
    tl.store(acc + out + 1, total1, mask=live)


def grad_and_scale(s_mat: torch.Tensor, g: torch.Tensor, p0: torch.Tensor | None = None
                   ) -> torch.Tensor:
    """``acc [I, M, N(, 2)] = sum_b s_mat[b] * g[b]``, then, where ``p0`` is given,
    ``s_mat *= p0`` in place (for 2x2 blocks, each unit's pair times its block).
    s_mat ``[B, I, M, N]`` or ``[B, I, M, N, 2]`` (contiguous); g ``[B, N(, 2)]``; p0
    ``[B, N]`` or ``[B, N, 2, 2]``."""
    pairs = s_mat.dim() == 5
    b, i, m, n = s_mat.shape[:4]
    rows = i * m
    dtype = s_mat.dtype
    acc = s_mat.new_empty(s_mat.shape[1:])
    g = g.to(dtype).contiguous()
    scale = p0 is not None
    p0 = (p0 if scale else g).to(dtype).contiguous()  # unread when not scaling
    kernel = _grad_scale_pairs if pairs else _grad_scale
    grid = (triton.cdiv(rows, BLOCK_R), triton.cdiv(n, BLOCK_N))
    kernel[grid](s_mat, g, p0, acc, b, rows, n, SCALE=scale, BR=BLOCK_R, BN=BLOCK_N)
    return acc
