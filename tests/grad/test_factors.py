"""The per-chunk RTRL factors (numba kernel and PyTorch form) against their definition,
computed by explicit loops in float64."""

from __future__ import annotations

import pytest
import torch

from rtrl_rl.grad.backends import chunk_factors
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


def test_torch_form_matches_definition_for_generic_terms():
    terms, first, s_vec = random_terms()
    got = chunk_factors(terms, first, s_vec)  # generic terms always take the PyTorch form
    for g, w, name in zip(got, by_definition(terms, first, s_vec), ("pu", "p0", "new_vec"),
                          strict=True):
        assert g.dtype == torch.float64
        assert torch.allclose(g, w, atol=1e-12, rtol=0), name


def random_elstm_terms(dtype, seed=2):
    g = torch.Generator().manual_seed(seed)
    z = torch.rand(T, B, N, generator=g, dtype=dtype) * 2 - 1
    f = torch.rand(T, B, N, generator=g, dtype=dtype)
    terms = ELSTMTerms(torch.randn(T, B, N, generator=g, dtype=dtype), z, f,
                       torch.randn(N, generator=g, dtype=dtype),
                       torch.randn(N, generator=g, dtype=dtype))
    first = torch.rand(T, B, generator=g) < 0.2
    first[3, 1] = True
    return terms, first, torch.randn(B, V, N, generator=g, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_elstm_fused_kernel_matches_definition(dtype):
    """The kernel computes the eLSTM's terms inline from c_prev, z, f; the oracle takes
    ELSTMTerms' derived a / matrix / vector through the definition (float64) or the PyTorch
    form (float32, whose summation order differs)."""
    pytest.importorskip("numba")
    terms, first, s_vec = random_elstm_terms(dtype)
    plain = ElementwiseTerms(a=terms.a, matrix=terms.matrix, vector=terms.vector)
    if dtype == torch.float64:
        want, tol = by_definition(plain, first, s_vec), 1e-12
    else:
        want, tol = chunk_factors(plain, first, s_vec, backend="torch"), 1e-5
    for backend in ("numba", "torch"):
        got = chunk_factors(terms, first, s_vec, backend=backend)
        for a, b, name in zip(got, want, ("pu", "p0", "new_vec"), strict=True):
            assert a.dtype == dtype
            assert torch.allclose(a, b, atol=tol, rtol=tol), (backend, name)


def test_chunk_factors_rejects_bad_backend():
    terms, first, s_vec = random_terms()
    with pytest.raises(ValueError, match="backend"):
        chunk_factors(terms, first, s_vec, backend="cuda")
    with pytest.raises(ValueError, match="eLSTM terms"):
        chunk_factors(terms, first, s_vec, backend="numba")


@pytest.mark.parametrize("sweep", [True, False])
def test_suffix_products_both_forms_match_a_loop(sweep):
    """P_s = prod_{r>s} g_r: the CPU sweep and the GPU cumprod, against a plain loop."""
    from rtrl_rl.grad.factors import suffix_products

    g = torch.rand(7, 3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    want = torch.ones_like(g)
    for s in range(7):
        for r in range(s + 1, 7):
            want[s] = want[s] * g[r]
    assert torch.allclose(suffix_products(g, sweep=sweep), want, atol=1e-14, rtol=0)
    one = suffix_products(g[:1], sweep=sweep)
    assert torch.equal(one, torch.ones_like(one))


def random_pair_terms(seed=0):
    from rtrl_rl.models.pair_cells import PairTerms

    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    terms = PairTerms(r(T, B, N, 2, 2), {"W1": r(T, B, N, 2), "W2": r(T, B, N, 2)},
                      {"nu": r(T, B, N, 2), "theta": r(T, B, N, 2), "gamma": r(T, B, N, 2)})
    first = torch.rand(T, B, generator=g) < 0.2
    first[3, 1] = True
    return terms, first, r(B, 3, N, 2)


def pair_factors_by_definition(terms, first, s_vec):
    """P_s = g_{T-1} ... g_{s+1} with g_t = a_t (1 - first_t), one 2x2 matrix per unit."""
    g = terms.a * (~first).double()[:, :, None, None, None]
    eye = torch.eye(2, dtype=torch.float64)
    pu = torch.zeros(T, B, 2, N, 2, dtype=torch.float64)
    p0 = torch.zeros(B, N, 2, 2, dtype=torch.float64)
    new_vec = torch.zeros(B, 3, N, 2, dtype=torch.float64)
    for b in range(B):
        for n in range(N):
            def prod(lo, b=b, n=n):
                out = eye
                for r in range(T - 1, lo - 1, -1):
                    out = out @ g[r, b, n]
                return out
            p0[b, n] = prod(0)
            new_vec[b, :, n] = (p0[b, n] @ s_vec[b, :, n].T).T
            for s in range(T):
                for j, u in enumerate(terms.matrix.values()):
                    pu[s, b, j, n] = prod(s + 1) @ u[s, b, n]
                for j, v in enumerate(terms.vector.values()):
                    new_vec[b, j, n] += prod(s + 1) @ v[s, b, n]
    return pu, p0, new_vec


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_pair_factors_match_definition(backend):
    from rtrl_rl.grad import factors

    if backend == "numba" and not factors.numba_sweeps():
        pytest.skip("numba is not installed")
    terms, first, s_vec = random_pair_terms()
    got = chunk_factors(terms, first, s_vec, backend=backend)
    for a, b in zip(got, pair_factors_by_definition(terms, first, s_vec), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("a_dims,u_dims", [((0, 1), (0, 1)), ((0,), (1,)), ((1,), ())])
def test_pair_kernel_reads_broadcast_terms_without_copies(a_dims, u_dims):
    """A linear pair layer's Jacobian blocks and matrix terms are broadcast views (the same
    at every step and stream); the numba sweep reads them in place, as the definition
    reads the full tensors."""
    from rtrl_rl.grad import factors
    from rtrl_rl.models.pair_cells import PairTerms

    if not factors.numba_sweeps():
        pytest.skip("numba is not installed")
    terms, first, s_vec = random_pair_terms(seed=1)

    def broadcast(t, dims):
        for d in dims:
            t = t.narrow(d, 0, 1).expand_as(t)
        return t

    a = broadcast(terms.a, a_dims)
    matrix = {k: broadcast(u, u_dims) for k, u in terms.matrix.items()}
    assert all(a.stride(d) == 0 for d in a_dims)
    bterms = PairTerms(a, matrix, terms.vector)
    want = pair_factors_by_definition(PairTerms(a.contiguous(), {
        k: u.contiguous() for k, u in matrix.items()}, terms.vector), first, s_vec)
    got = chunk_factors(bterms, first, s_vec, backend="numba")
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
