"""The Triton kernels of the RTRL engine (the chunk factors' sweeps and the injection's
pass over the sensitivities) against float64 definitions, and the engine running on them.

Where triton is installed, the kernels run in Triton's interpreter on the CPU (a fresh
process with ``TRITON_INTERPRET=1``: the switch is read when the kernels are defined);
``-m gpu`` runs them compiled on CUDA. Without triton the first tests skip.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rtrl_rl.grad.backends import chunk_factors
from tests.grad.test_factors import (
    pair_factors_by_definition,
    random_elstm_terms,
    random_pair_terms,
)

ROOT = Path(__file__).resolve().parents[2]
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                  reason="triton is not installed")


def _wide_elstm_terms(dtype, device="cpu", t=6, b=2, n=70, seed=5):
    """More units than one program's block (64), so two programs and a masked tail."""
    from rtrl_rl.models.cells import ELSTMTerms

    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    terms = ELSTMTerms(r(t, b, n), torch.rand(t, b, n, generator=g, dtype=dtype) * 2 - 1,
                       torch.rand(t, b, n, generator=g, dtype=dtype), r(n), r(n))
    first = torch.rand(t, b, generator=g) < 0.3
    first[2, 1] = True
    s_vec = r(b, 4, n)
    moved = ELSTMTerms(*(x.to(device) for x in (terms.c_prev, terms.z, terms.f, terms.w_z,
                                                 terms.w_f)))
    return (terms, first, s_vec), (moved, first.to(device), s_vec.to(device))


def _wide_pair_terms(device="cpu", t=6, b=2, n=70, seed=6):
    from rtrl_rl.models.pair_cells import PairTerms

    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64) * 0.7  # noqa: E731
    raw = (r(t, b, n, 2, 2), {"W": r(t, b, n, 2)}, {"nu": r(t, b, n, 2), "th": r(t, b, n, 2),
                                                    "g": r(t, b, n, 2)})
    first = torch.rand(t, b, generator=g) < 0.3
    s_vec = r(b, 3, n, 2)
    moved = PairTerms(raw[0].to(device), {k: v.to(device) for k, v in raw[1].items()},
                      {k: v.to(device) for k, v in raw[2].items()})
    return (PairTerms(*raw), first, s_vec), (moved, first.to(device), s_vec.to(device))


def _close(got, want, tol):
    for a, b, name in zip(got, want, ("pu", "p0", "new_vec"), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        torch.testing.assert_close(a.cpu(), b.cpu(), rtol=tol, atol=tol, msg=name)


def check_all(device: str) -> None:
    """Every Triton sweep against the float64 definition (small case) and the PyTorch form
    (two programs per stream), on ``device``."""
    from rtrl_rl.models.cells import ElementwiseTerms

    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        terms, first, s_vec = random_elstm_terms(dtype)
        plain = ElementwiseTerms(a=terms.a, matrix=terms.matrix, vector=terms.vector)
        want = chunk_factors(plain, first, s_vec, backend="torch")
        (cpu_terms, cpu_first, cpu_s), (dev_terms, dev_first, dev_s) = _wide_elstm_terms(
            dtype, device)
        cpu_plain = ElementwiseTerms(a=cpu_terms.a, matrix=cpu_terms.matrix,
                                     vector=cpu_terms.vector)
        wide_want = chunk_factors(cpu_plain, cpu_first, cpu_s, backend="torch")
        moved = type(terms)(*(x.to(device) for x in (terms.c_prev, terms.z, terms.f,
                                                      terms.w_z, terms.w_f)))
        _close(chunk_factors(moved, first.to(device), s_vec.to(device), backend="triton"),
               want, tol)
        _close(chunk_factors(dev_terms, dev_first, dev_s, backend="triton"), wide_want, tol)
    terms, first, s_vec = random_pair_terms()
    want = pair_factors_by_definition(terms, first, s_vec)
    moved = type(terms)(terms.a.to(device), {k: v.to(device) for k, v in terms.matrix.items()},
                        {k: v.to(device) for k, v in terms.vector.items()})
    _close(chunk_factors(moved, first.to(device), s_vec.to(device), backend="triton"), want,
           1e-12)
    (cpu_terms, cpu_first, cpu_s), dev = _wide_pair_terms(device)
    _close(chunk_factors(*dev, backend="triton"),
           chunk_factors(cpu_terms, cpu_first, cpu_s, backend="torch"), 1e-12)


def check_pass(device: str) -> None:
    """The fused gradient-and-scaling pass against its definition, for eLSTM-shaped and
    2x2-block sensitivities, with and without the scaling (float64; tiles with tails)."""
    from rtrl_rl.grad.sensitivity_triton import grad_and_scale

    g = torch.Generator().manual_seed(7)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    b, i, m, n = 3, 9, 2, 70
    for pairs in (False, True):
        k = (2,) if pairs else ()
        s0, grad = r(b, i, m, n, *k), r(b, n, *k)
        p0 = r(b, n, 2, 2) if pairs else r(b, n)
        want_acc = (s0 * grad[:, None, None]).sum(0)
        if pairs:
            want_s = torch.einsum("bnkl,bimnl->bimnk", p0, s0)
        else:
            want_s = s0 * p0[:, None, None]
        s = s0.to(device)
        acc = grad_and_scale(s, grad.to(device))  # the gradient only
        torch.testing.assert_close(acc.cpu(), want_acc, rtol=1e-12, atol=1e-12)
        assert torch.equal(s.cpu(), s0)
        acc = grad_and_scale(s, grad.to(device), p0.to(device))
        torch.testing.assert_close(acc.cpu(), want_acc, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(s.cpu(), want_s, rtol=1e-12, atol=1e-12)


def check_engine() -> None:
    """Chunked RTRL on the Triton kernels alone (every factor sweep, and the injection's
    pass) equals one BPTT pass over the whole sequence (float64, every cell, whole batch and
    interleaved stream groups)."""
    import functools

    from rtrl_rl.grad import backends
    from tests.grad import test_exactness_cells as cells

    backends.chunk_factors = functools.partial(chunk_factors, backend="triton")
    backends.pass_backend = lambda s_mat: backends.TRITON
    for name in cells.CELLS:
        for groups in (None, cells.GROUPS):
            core = cells._core(name)
            x, first, readout = cells._problem(core)
            want = cells._full_bptt(core, x, first, readout)
            got, _ = cells._chunked(core, "rtrl", x, first, readout, groups)
            assert cells._rel_err(got, want) < 1e-12, name


@needs_triton
def test_triton_kernels_match_the_definitions_in_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, "-c", "from tests.grad.test_triton_kernels import check_all, "
                               "check_engine, check_pass; check_all('cpu'); check_pass('cpu'); "
                               "check_engine(); print('ok')"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-3000:]


def test_triton_backend_errors_are_one_line():
    terms, first, s_vec = random_pair_terms()
    if importlib.util.find_spec("triton") is None:
        with pytest.raises(ImportError, match="triton package"):
            chunk_factors(terms, first, s_vec, backend="triton")
    elif os.environ.get("TRITON_INTERPRET") != "1":
        with pytest.raises(ValueError, match="CUDA"):
            chunk_factors(terms, first, s_vec, backend="triton")


@pytest.mark.gpu
def test_triton_kernels_on_cuda_match_the_definitions():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    check_all("cuda")
    check_pass("cuda")


@pytest.mark.gpu
def test_auto_backend_on_cuda_is_triton(monkeypatch):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from rtrl_rl.grad import factors_triton

    calls = []
    real = factors_triton.pair_factors
    monkeypatch.setattr(factors_triton, "pair_factors",
                        lambda *a: calls.append(1) or real(*a))
    terms, first, s_vec = random_pair_terms()
    moved = type(terms)(terms.a.cuda(), {k: v.cuda() for k, v in terms.matrix.items()},
                        {k: v.cuda() for k, v in terms.vector.items()})
    chunk_factors(moved, first.cuda(), s_vec.cuda())
    assert calls == [1]
