"""The per-chunk RTRL factors (numba kernel and PyTorch form) against their definition,
computed by explicit loops in float64."""

from __future__ import annotations

import pytest
import torch

from rtrl_rl.grad.factors import chunk_factors
from rtrl_rl.models.cells import ElementwiseTerms, ELSTMTerms

T, B, N, V = 7, 3, 5, 4


def random_terms(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda: torch.randn(T, B, N, generator=g, dtype=dtype)  # noqa: E731
    c_prev = r()
    terms = ElementwiseTerms(
        a=r(), matrix={"W_z": r(), "W_f": r()},
        vector={"w_z": ("W_z", c_prev), "w_f": ("W_f", c_prev), "b_z": ("W_z", None),
                "b_f": ("W_f", None)},
    )
    first = torch.rand(T, B, generator=g) < 0.2
    first[3, 1] = True
    s_vec = torch.randn(B, V, N, generator=g, dtype=dtype)
    return terms, first, s_vec


def by_definition(terms, first, s_vec):
    keys = list(terms.matrix)
    g = [[[terms.a[t, b, n].item() * (0.0 if first[t, b] else 1.0) for n in range(N)]
          for b in range(B)] for t in range(T)]
    pu = torch.zeros(T, B, len(keys), N, dtype=torch.float64)
    p0 = torch.zeros(B, N, dtype=torch.float64)
    new_vec = torch.zeros(B, V, N, dtype=torch.float64)
    for b in range(B):
        for n in range(N):
            def prod(lo, b=b, n=n):  # prod_{r=lo..T-1} g_r
                out = 1.0
                for r in range(lo, T):
                    out *= g[r][b][n]
                return out
            p0[b, n] = prod(0)
            for s in range(T):
                for j, key in enumerate(keys):
                    pu[s, b, j, n] = prod(s + 1) * terms.matrix[key][s, b, n].item()
            for v, (key, factor) in enumerate(terms.vector.values()):
                j = keys.index(key)
                acc = p0[b, n].item() * s_vec[b, v, n].item()
                for s in range(T):
                    f = 1.0 if factor is None else factor[s, b, n].item()
                    acc += pu[s, b, j, n].item() * f
                new_vec[b, v, n] = acc
    return pu, p0, new_vec


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_chunk_factors_match_definition(backend):
    pytest.importorskip("numba") if backend == "numba" else None
    terms, first, s_vec = random_terms()
    got = chunk_factors(terms, first, s_vec, backend=backend)
    for g, w, name in zip(got, by_definition(terms, first, s_vec), ("pu", "p0", "new_vec"),
                          strict=True):
        assert g.dtype == torch.float64
        assert torch.allclose(g, w, atol=1e-12, rtol=0), name


def test_numba_kernel_float32_matches_torch():
    pytest.importorskip("numba")
    terms, first, s_vec = random_terms(torch.float32, seed=1)
    for g, w in zip(chunk_factors(terms, first, s_vec, backend="numba"),
                    chunk_factors(terms, first, s_vec, backend="torch"), strict=True):
        assert g.dtype == torch.float32
        assert torch.allclose(g, w, atol=1e-5, rtol=1e-5)


def test_chunk_factors_rejects_unknown_backend():
    terms, first, s_vec = random_terms()
    with pytest.raises(ValueError, match="backend"):
        chunk_factors(terms, first, s_vec, backend="cuda")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_elstm_fused_kernel_matches_derived_terms(dtype):
    """The eLSTM kernel computes its terms inline from c_prev, z, f; the PyTorch form uses
    ELSTMTerms' derived a / matrix / vector (and is checked against the definition above)."""
    pytest.importorskip("numba")
    g = torch.Generator().manual_seed(2)
    z = torch.rand(T, B, N, generator=g, dtype=dtype) * 2 - 1
    f = torch.rand(T, B, N, generator=g, dtype=dtype)
    terms = ELSTMTerms(torch.randn(T, B, N, generator=g, dtype=dtype), z, f,
                       torch.randn(N, generator=g, dtype=dtype),
                       torch.randn(N, generator=g, dtype=dtype))
    first = torch.rand(T, B, generator=g) < 0.2
    s_vec = torch.randn(B, V, N, generator=g, dtype=dtype)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    plain = ElementwiseTerms(a=terms.a, matrix=terms.matrix, vector=terms.vector)
    want = by_definition(plain, first, s_vec.double()) if dtype == torch.float64 else \
        chunk_factors(plain, first, s_vec, backend="torch")
    for name, backend in (("fused", "numba"), ("torch", "torch")):
        got = chunk_factors(terms, first, s_vec, backend=backend)
        for a, b in zip(got, want, strict=True):
            assert a.dtype == dtype
            assert torch.allclose(a, b.to(dtype), atol=tol, rtol=tol), name
