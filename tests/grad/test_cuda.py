"""The gradient modules on CUDA against the float64 CPU computations (``-m gpu``)."""

from __future__ import annotations

import pytest
import torch

from tests.grad.test_exactness import T_CHUNK, full_bptt, make_elstm, problem, run_chunks

pytestmark = pytest.mark.gpu
__all__ = ["problem"]  # the fixture, imported for its use below


def _cuda(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.float().cuda() if t.is_floating_point() else t.cuda() for t in tensors]


def test_rtrl_on_cuda_matches_the_float64_cpu_gradient(problem):
    """Chunked RTRL in float32 on the device equals whole-sequence BPTT in float64 on the CPU
    (exact for one layer), to float32 rounding."""
    x, first, readout = problem
    ref = full_bptt(make_elstm(), x, first, readout)
    core = make_elstm().float().cuda()
    got, grad = run_chunks(core, "rtrl", *_cuda(x, first, readout), T_CHUNK)
    for k, v in ref.items():
        torch.testing.assert_close(got[k].double().cpu(), v, rtol=2e-4, atol=2e-6)
    assert all(s.is_cuda for s in grad.state_dict().values())


@pytest.mark.parametrize("name", ["bptt", "one_step"])
def test_truncated_modules_on_cuda_match_cpu(problem, name):
    x, first, readout = problem
    ref, _ = run_chunks(make_elstm(), name, x, first, readout, T_CHUNK)
    got, _ = run_chunks(make_elstm().float().cuda(), name, *_cuda(x, first, readout), T_CHUNK)
    for k, v in ref.items():
        torch.testing.assert_close(got[k].double().cpu(), v, rtol=2e-4, atol=2e-6)


@pytest.mark.parametrize("name", ["rtu", "rtu_nonlinear", "lru"])
def test_pair_cells_rtrl_on_cuda_matches_the_float64_cpu_gradient(name):
    from tests.grad.test_exactness_cells import _chunked, _core, _full_bptt, _problem

    core = _core(name)
    x, first, readout = _problem(core)
    ref = _full_bptt(core, x, first, readout)
    got, _ = _chunked(core.float().cuda(), "rtrl", *_cuda(x, first, readout))
    for k, v in ref.items():
        torch.testing.assert_close(got[k].double().cpu(), v, rtol=2e-4, atol=2e-6)
