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
@pytest.mark.parametrize("scale", [True, False])
def test_gradient_and_scaling_in_one_pass(dtype, scale):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(5, 7, 2, 3, generator=g, dtype=torch.float64)
    grad = torch.randn(5, 3, generator=g, dtype=torch.float64)
    p0 = torch.rand(5, 3, generator=g, dtype=torch.float64)
    want_acc = torch.einsum("bimn,bn->imn", s, grad)
    want_s = s * p0[:, None, None, :] if scale else s.clone()
    got_s = s.to(dtype)
    acc = sensitivity_pass.grad_and_scale(got_s, grad.to(dtype), p0.to(dtype) if scale else None)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(acc.double(), want_acc, rtol=tol, atol=tol)
    torch.testing.assert_close(got_s.double(), want_s, rtol=tol, atol=tol)


def test_only_the_elementwise_cpu_layout_takes_it():
    assert not sensitivity_pass.usable(torch.zeros(2, 3, 2, 4, 2))  # 2x2-block layers
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
