"""Exact RTRL for every RTRL-capable cell, in float64, against computations that share no
code with the engine: one BPTT pass over the whole sequence (the gradient), and a
step-by-step RTRL whose per-step Jacobians come from autograd of the cell's forward (the
carried sensitivities)."""

from __future__ import annotations

import pytest
import torch

from rtrl_rl.grad import make_grad
from rtrl_rl.models.registry import make_core
from tests.grad.elstm_reference import chunk_loss, param_grads, random_problem, zero_grads

T_CHUNK, N_CHUNKS, B, I, N = 5, 4, 4, 3, 3
CELLS = {"elstm": ("elstm", {}), "rtu": ("rtu", {}),
         "rtu_nonlinear": ("rtu", {"recurrence": "nonlinear"}),
         "rtu_gelu": ("rtu", {"readout": "gelu"}), "lru": ("lru", {})}
GROUPS = [torch.tensor([2, 0]), torch.tensor([3, 1])]  # interleaved streams


def _core(name, layers=1, seed=0):
    torch.manual_seed(seed)
    kind, opts = CELLS[name]
    own = {"forget_bias": 0.5} if kind == "elstm" else {"r_min": 0.6, "r_max": 0.99}
    core = make_core(kind, I, N, layers, **opts, **own).double()
    if kind == "elstm":
        with torch.no_grad():  # large element-wise weights: a_t far from f_t
            for layer in core.layers:
                layer.w_z.uniform_(-1.5, 1.5)
                layer.w_f.uniform_(-1.5, 1.5)
    return core


def _problem(core, seed=3):
    x, first, _ = random_problem(T_CHUNK * N_CHUNKS, B, I, N, seed=seed, p_first=0.1)
    first[T_CHUNK, 0] = True  # an episode start on a chunk boundary
    first[T_CHUNK + 2, 1] = True  # one inside a chunk
    first[2 * T_CHUNK + 1, 3] = True
    # Stream 2 carries its episode through three chunks: the decay of the carried
    # sensitivities by P_0 (zero for a chunk with an episode start) is then exercised.
    first[1:, 2] = False
    first[3 * T_CHUNK + 2, 2] = True
    g = torch.Generator().manual_seed(seed + 1)
    readout = torch.randn(*x.shape[:2], core.output_size, generator=g, dtype=x.dtype)
    return x, first, readout


def _rel_err(got: dict, want: dict) -> float:
    return max(((got[k] - want[k]).abs().max() / want[k].abs().max()).item() for k in want)


def _full_bptt(core, x, first, readout):
    zero_grads(core)
    h, _ = core(x, core.initial_state(B, dtype=x.dtype), first)
    chunk_loss(h, readout).backward()
    return param_grads(core)


def _chunked(core, grad_name, x, first, readout, groups=None):
    """Per-chunk losses, parameters fixed; ``groups``: feed the streams as these groups
    (their order alternating), through ``stream_ids``."""
    zero_grads(core)
    grad = make_grad(grad_name, core, B)
    state = core.initial_state(B, device=x.device, dtype=x.dtype)
    for k in range(N_CHUNKS):
        sl = slice(k * T_CHUNK, (k + 1) * T_CHUNK)
        if groups is None:
            h, state = grad.unroll(x[sl], state, first[sl])
            chunk_loss(h, readout[sl]).backward()
            continue
        new_state = state.clone()
        for ids in (reversed(groups) if k % 2 else groups):
            h, s = grad.unroll(x[sl][:, ids], state[ids], first[sl][:, ids], stream_ids=ids)
            chunk_loss(h, readout[sl][:, ids]).backward()
            new_state[ids] = s.detach()
        state = new_state
    return param_grads(core), grad


@pytest.mark.parametrize("groups", [None, GROUPS], ids=["whole_batch", "stream_ids"])
@pytest.mark.parametrize("name", CELLS)
def test_chunked_rtrl_equals_one_bptt_pass(name, groups):
    core = _core(name)
    x, first, readout = _problem(core)
    want = _full_bptt(core, x, first, readout)
    got, grad = _chunked(core, "rtrl", x, first, readout, groups)
    assert not grad.approximate
    assert _rel_err(got, want) < 1e-12
    truncated, _ = _chunked(core, "bptt", x, first, readout)
    assert _rel_err(truncated, want) > 1e-3  # the credit from before a chunk matters


@pytest.mark.parametrize("name", CELLS)
def test_whole_batch_blocks_equal_cpu_blocks(name, monkeypatch):
    """The GPU layout (every stream in one block), run on the CPU."""
    from rtrl_rl.grad import backends, sensitivity_pass

    monkeypatch.setattr(sensitivity_pass, "usable", lambda s_mat: False)

    core = _core(name, seed=1)
    x, first, readout = _problem(core, seed=6)
    want = _full_bptt(core, x, first, readout)
    monkeypatch.setattr(backends, "stream_block", lambda s_mat: s_mat.shape[0])
    got, _ = _chunked(core, "rtrl", x, first, readout)
    assert _rel_err(got, want) < 1e-12


class _Step(torch.nn.Module):
    def __init__(self, layer) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x, c, first):
        return self.layer.unroll(x, c, first)[1]


def _dense_reference(layer, x, c, first):
    """Step-by-step RTRL for one layer: ``S_t = J_t S_{t-1} + d c_t / d theta`` with the
    Jacobians from autograd, one step at a time. Returns name -> ``[B, D, *param]``."""
    params = layer.recurrent_params()
    names = list(params)
    step = _Step(layer)
    d = c.shape[1]
    s = {k: x.new_zeros(B, d, *p.shape) for k, p in params.items()}
    for t in range(x.shape[0]):
        def f(c_prev, *values, t=t):
            return torch.func.functional_call(
                step, {f"layer.{k}": v for k, v in zip(names, values, strict=True)},
                (x[t:t + 1], c_prev, first[t:t + 1]))

        jac = torch.autograd.functional.jacobian(f, (c, *params.values()))
        j_c = torch.stack([jac[0][b, :, b, :] for b in range(B)])  # [B, D, D]
        s = {k: torch.einsum("bde,be...->bd...", j_c, s[k])
             + torch.stack([jac[1 + j][b] for b in range(B)])
             for j, k in enumerate(names)}
        c = f(c, *params.values()).detach()
    return s


@pytest.mark.parametrize("name", CELLS)
def test_carried_sensitivities_equal_the_step_by_step_reference(name):
    core = _core(name, seed=2)
    x, first, readout = _problem(core, seed=8)
    _, grad = _chunked(core, "rtrl", x, first, readout, GROUPS)
    layer = core.layers[0]
    want = _dense_reference(layer, x, core.initial_state(B, dtype=x.dtype), first)
    got = grad.sensitivities()[0]
    k = layer.block
    ar = torch.arange(N)
    for name_p, dense in want.items():
        dense = dense.view(B, N, k, *dense.shape[2:])  # [B, N, K, ...]
        if dense.dim() == 5:  # a matrix [N, I]: unit n's own row only
            diag = dense[:, ar, :, ar, :].permute(1, 0, 3, 2)  # [B, N, I, K]
            dense[:, ar, :, ar, :] = 0
        else:
            diag = dense[:, ar, :, ar].permute(1, 0, 2)  # [B, N, K]
            dense[:, ar, :, ar] = 0
        assert dense.abs().max() == 0, name_p  # no unit's state depends on another's row
        diag = diag.squeeze(-1) if k == 1 else diag
        torch.testing.assert_close(got[name_p], diag, rtol=1e-12, atol=1e-13)
        assert diag.abs().max() > 1e-3


@pytest.mark.parametrize("name", ["rtu", "lru"])
def test_stacked_pair_layers_are_labelled_approximate(name):
    core = _core(name, layers=2)
    grad = make_grad("rtrl", core, B)
    assert grad.approximate and "APPROXIMATE" in grad.description
    x, first, readout = _problem(core)
    got, _ = _chunked(core, "rtrl", x, first, readout)
    assert all(torch.isfinite(v).all() for v in got.values())


def test_rtrl_gradient_matches_finite_differences_of_the_whole_sequence():
    """An RTU's chunked RTRL gradient for nu_log is the derivative of the untruncated loss."""
    core = _core("rtu", seed=3)
    x, first, readout = _problem(core, seed=9)
    got, _ = _chunked(core, "rtrl", x, first, readout)
    nu = core.layers[0].nu_log
    eps = 1e-6
    numeric = torch.zeros_like(nu)
    with torch.no_grad():
        for n in range(N):
            losses = []
            for sign in (1, -1):
                nu[n] += sign * eps
                h, _ = core(x, core.initial_state(B, dtype=x.dtype), first)
                losses.append(chunk_loss(h, readout))
                nu[n] -= sign * eps
            numeric[n] = (losses[0] - losses[1]) / (2 * eps)
    torch.testing.assert_close(got["layers.0.nu_log"], numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ["rtu", "lru"])
def test_carried_sensitivities_resume_from_a_state_dict(name):
    """A checkpoint of the pair sensitivities mid-run, restored into a new module, gives
    the gradients of one uninterrupted run (streams fed in groups, as the async runner
    does)."""
    core = _core(name, seed=4)
    x, first, readout = _problem(core, seed=10)
    want = _full_bptt(core, x, first, readout)
    zero_grads(core)
    grad = make_grad("rtrl", core, B)
    state = core.initial_state(B, device=x.device, dtype=x.dtype)
    for k in range(N_CHUNKS):
        sl = slice(k * T_CHUNK, (k + 1) * T_CHUNK)
        if k == 2:
            saved = {n: v.clone() for n, v in grad.state_dict().items()}
            assert saved["layer0.s_mat"].shape == (B, I, 2, N, 2)
            grad = make_grad("rtrl", core, B)
            grad.load_state_dict(saved)
        new_state = state.clone()
        for ids in GROUPS:
            h, s = grad.unroll(x[sl][:, ids], state[ids], first[sl][:, ids], stream_ids=ids)
            chunk_loss(h, readout[sl][:, ids]).backward()
            new_state[ids] = s.detach()
        state = new_state
    assert _rel_err(param_grads(core), want) < 1e-12
