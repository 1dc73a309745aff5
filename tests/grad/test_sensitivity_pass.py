"""The CPU kernel over the carried sensitivities against plain tensor arithmetic."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from rtrl_rl.grad import sensitivity_pass

pytestmark = pytest.mark.skipif(not sensitivity_pass.usable(torch.zeros(1, 1, 1, 1)),
                                reason="numba is not installed")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("block", [1, 2])  # reals per unit: element-wise or 2x2 blocks
@pytest.mark.parametrize(("mode", "t_len", "pu_layout"), [
    ("grad", 1, "bt"), ("scale", 1, "bt"),
    *[("update", t, lay) for t in (1, 3, 4, 7, 8, 10, 13, 21) for lay in ("bt", "tb")],
])  # every remainder of the unrolled time loop
def test_gradient_and_update_in_one_pass(dtype, block, mode, t_len, pu_layout):
    """acc = sum_b S[b] g[b], then S <- P_0 S (scale) or S <- P_0 S + sum_t x_t (x) pu_t
    (update), against einsum in float64; P_0 a scalar or a 2x2 matrix per unit. More rows
    than one block holds and a partial last block; pu as a view of [B, T, M, N(, 2)]
    storage (the factor kernels') or [T, B, M, N(, 2)]."""
    g = torch.Generator().manual_seed(t_len)
    b, i, m, n = 3, sensitivity_pass._ROWS + 5, 2, 6
    k = (2,) if block == 2 else ()
    s = torch.randn(b, i, m, n, *k, generator=g, dtype=torch.float64)
    grad = torch.randn(b, n, *k, generator=g, dtype=torch.float64)
    p0 = torch.rand(b, n, *k, *k, generator=g, dtype=torch.float64)
    x = torch.randn(t_len, b, i, generator=g, dtype=torch.float64)
    pu = torch.randn(t_len, b, m, n, *k, generator=g, dtype=torch.float64)
    if block == 2:
        want_acc = torch.einsum("bimnk,bnk->imnk", s, grad)
        scaled = torch.einsum("bnkl,bimnl->bimnk", p0, s)
        rank_t = torch.einsum("tbi,tbmnk->bimnk", x, pu)
    else:
        want_acc = torch.einsum("bimn,bn->imn", s, grad)
        scaled = s * p0[:, None, None, :]
        rank_t = torch.einsum("tbi,tbmn->bimn", x, pu)
    want_s = {"grad": s, "scale": scaled, "update": scaled + rank_t}[mode]
    got_s = s.to(dtype)
    pu_in = pu.to(dtype)
    if pu_layout == "bt":
        pu_in = pu_in.transpose(0, 1).contiguous().transpose(0, 1)
    args = {"grad": (), "scale": (p0.to(dtype),),
            "update": (p0.to(dtype), x.to(dtype), pu_in)}[mode]
    version = got_s._version
    acc = sensitivity_pass.grad_and_update(got_s, grad.to(dtype), *args)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(acc.double(), want_acc, rtol=tol, atol=tol)
    torch.testing.assert_close(got_s.double(), want_s, rtol=tol, atol=tol)
    assert (got_s._version > version) == (mode != "grad")  # autograd sees the write


def test_only_the_cpu_layouts_take_it():
    assert sensitivity_pass.usable(torch.zeros(2, 3, 2, 4))
    assert sensitivity_pass.usable(torch.zeros(2, 3, 2, 4, 2))  # 2x2-block layers
    assert not sensitivity_pass.usable(torch.zeros(2, 3, 2, 4, 3))
    assert not sensitivity_pass.usable(torch.zeros(2, 3, 2, 4).transpose(1, 2))
    assert not sensitivity_pass.usable(torch.zeros(2, 3, 2, 4, dtype=torch.bfloat16))


def test_limit_threads_sizes_numba_pool_before_numba_loads():
    """Idle pool threads spin-wait, so a 1-thread run must not get numba's default pool;
    importing the training loop must not import numba either."""
    code = ("import sys\n"
            "import rtrl_rl.runners.loop\n"
            "assert 'numba' not in sys.modules\n"
            "from rtrl_rl.grad import sensitivity_pass as sp\n"
            "sp.limit_threads(1)\n"
            "assert sp._load()\n"
            "import numba\n"
            "assert numba.config.NUMBA_NUM_THREADS == 1, numba.config.NUMBA_NUM_THREADS\n"
            "assert sp.prange is numba.prange\n")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_NUM_THREADS"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
