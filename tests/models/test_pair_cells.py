"""RTU and LRU cores: the forward against complex arithmetic, the declared RTRL terms
against autograd Jacobians, and gradcheck of a chunk."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rtrl_rl.models.pair_cells import LRULayer, PairTerms, RTULayer
from rtrl_rl.models.registry import make_core

T, B, I, N = 5, 3, 4, 6
CELLS = {"rtu": ("rtu", {}), "rtu_nonlinear": ("rtu", {"recurrence": "nonlinear"}),
         "rtu_gelu": ("rtu", {"readout": "gelu"}), "lru": ("lru", {})}


def _layer(name: str, seed: int = 0):
    torch.manual_seed(seed)
    kind, opts = CELLS[name]
    core = make_core(kind, I, N, r_min=0.5, r_max=0.99, **opts).double()
    return core, core.layers[0]


def _inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, I, generator=g, dtype=torch.float64)
    c0 = torch.randn(B, 2 * N, generator=g, dtype=torch.float64)
    first = torch.zeros(T, B, dtype=torch.bool)
    first[2, 1] = True
    return x, c0, first


class _Unroll(torch.nn.Module):
    def __init__(self, layer) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x, c0, first):
        return self.layer.unroll(x, c0, first)[:2]


def _call(layer, names, values, x, c0, first):
    """``layer.unroll(x, c0, first)`` -> (h, c_T) with the parameters ``names`` replaced."""
    wrapper = _Unroll(layer)
    return torch.func.functional_call(
        wrapper, {f"layer.{k}": v for k, v in zip(names, values, strict=True)}, (x, c0, first))


def _complex_reference(layer, x, c0, first):
    """The layer as a complex recurrence, ``lambda = exp(-exp(nu) + i exp(theta))``."""
    lam = torch.exp(-layer.nu_log.exp() + 1j * layer.theta_log.exp())
    w1, w2 = (getattr(layer, k) for k in layer.matrix_names)
    if isinstance(layer, LRULayer):
        norm = layer.gamma_log.exp()
    else:
        norm = torch.sqrt(1 - lam.abs() ** 2)
    c = torch.view_as_complex(c0.view(B, N, 2).contiguous())
    outs = []
    for t in range(T):
        c = torch.where(first[t, :, None], torch.zeros_like(c), c)
        pre = lam * c + norm * (x[t] @ w1.T + 1j * (x[t] @ w2.T))
        c = torch.complex(pre.real.relu(), pre.imag.relu()) if layer.nonlinear else pre
        pair = torch.view_as_real(c).reshape(B, 2 * N)  # unit n at 2n, 2n + 1
        if isinstance(layer, LRULayer):
            outs.append(F.gelu(pair @ layer.W_y.T + layer.b_y))
        elif layer.gelu_readout:
            outs.append(F.gelu(pair @ layer.W_y.T + layer.b_y))
        else:
            outs.append(pair if layer.nonlinear else pair.relu())
    return torch.stack(outs), torch.view_as_real(c).reshape(B, 2 * N)


@pytest.mark.parametrize("name", CELLS)
def test_forward_is_the_complex_recurrence(name):
    core, layer = _layer(name)
    x, c0, first = _inputs()
    h, c_t = core(x, c0, first)
    want_h, want_c = _complex_reference(layer, x, c0, first)
    torch.testing.assert_close(h, want_h, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c_t, want_c, rtol=1e-12, atol=1e-12)
    assert h.shape == (T, B, core.output_size) and core.state_size == 2 * N


@pytest.mark.parametrize("name", CELLS)
def test_declared_terms_are_the_autograd_derivatives(name):
    """One step from a random state: ``a`` is d c_1 / d c_0 restricted to each unit's pair,
    the matrix terms times x are d c_1 / d W (zero off the unit's own row), and the vector
    terms are d c_1 / d p. The Jacobians come from autograd of the forward."""
    _, layer = _layer(name)
    x, c0, _ = _inputs(seed=4)
    x1, no_start = x[:1], torch.zeros(1, B, dtype=torch.bool)
    _, _, terms = layer.unroll(x1, c0, no_start, with_terms=True)
    assert isinstance(terms, PairTerms) and terms.keys() == (
        list(layer.matrix_names), list(layer.vector_names))
    params = layer.recurrent_params()
    names = list(params)

    def step(c, *values):
        return _call(layer, names, values, x1, c, no_start)[1]

    jac = torch.autograd.functional.jacobian(step, (c0, *params.values()))
    for b in range(B):
        j_state = jac[0][b, :, b, :].view(N, 2, N, 2)  # [n, k, m, l]
        for n in range(N):
            torch.testing.assert_close(j_state[n, :, n, :], terms.a[0, b, n], rtol=1e-10,
                                       atol=1e-12)
        off = j_state.clone()
        off[torch.arange(N), :, torch.arange(N), :] = 0
        assert off.abs().max() == 0  # units do not mix
        for j, key in enumerate(names):
            d = jac[1 + j][b].view(N, 2, *params[key].shape)
            if key in terms.matrix:
                want = terms.matrix[key][0, b][:, :, None] * x1[0, b][None, None, :]
                diag = d[torch.arange(N), :, torch.arange(N), :]  # [N, 2, I]
                torch.testing.assert_close(diag, want, rtol=1e-10, atol=1e-12)
                d[torch.arange(N), :, torch.arange(N), :] = 0
            else:
                diag = d[torch.arange(N), :, torch.arange(N)]  # [N, 2]
                torch.testing.assert_close(diag, terms.vector[key][0, b], rtol=1e-10,
                                           atol=1e-12)
                d[torch.arange(N), :, torch.arange(N)] = 0
            assert d.abs().max() == 0, key


@pytest.mark.parametrize("name", CELLS)
def test_gradcheck_of_a_chunk(name):
    _, layer = _layer(name, seed=2)
    x, c0, first = _inputs(seed=5)
    params = dict(layer.named_parameters())
    names = list(params)

    def chunk(x, c0, *values):
        return _call(layer, names, values, x, c0, first)

    args = (x.requires_grad_(), c0.requires_grad_(),
            *(p.detach().clone().requires_grad_() for p in params.values()))
    assert torch.autograd.gradcheck(chunk, args, eps=1e-6, atol=1e-5)


def test_make_core_defaults_and_bad_options():
    for kind in ("elstm", "rtu", "lru", "lstm", "none"):
        core = make_core(kind, I, N)
        h, _ = core(torch.zeros(2, 1, I), core.initial_state(1), torch.ones(2, 1, dtype=bool))
        assert h.shape == (2, 1, core.output_size)
    assert make_core("rtu", I, N, layers=2).state_size == 4 * N
    gelu = make_core("rtu", I, N, layers=2, readout="gelu")
    assert gelu.output_size == N and gelu.layers[1].input_size == N
    h, _ = gelu(torch.zeros(2, 1, I), gelu.initial_state(1), torch.ones(2, 1, dtype=bool))
    assert h.shape == (2, 1, N)
    with pytest.raises(ValueError, match="model.rtu.readout"):
        make_core("rtu", I, N, readout="tanh")
    with pytest.raises(ValueError, match="model.lru.forget_bias: unknown option"):
        make_core("lru", I, N, forget_bias=1.0)
    with pytest.raises(ValueError, match="model.none.forget_bias: core 'none' has no options"):
        make_core("none", I, N, forget_bias=1.0)
    r = torch.exp(-RTULayer(I, 200, r_min=0.9, r_max=0.95).nu_log.exp())
    assert 0.9 <= r.min() and r.max() <= 0.95
    with pytest.raises(ValueError, match="model.rtu.recurrence"):
        make_core("rtu", I, N, recurrence="gated")
    with pytest.raises(ValueError, match="model.lru.r_min"):
        make_core("lru", I, N, r_min=0.9, r_max=0.5)
