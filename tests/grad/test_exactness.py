"""Gradient modules against independent computations, in float64."""

from __future__ import annotations

import pytest
import torch

from rtrl_rl.errors import ConfigError
from rtrl_rl.grad import make_grad
from rtrl_rl.models.cells import ELSTM
from rtrl_rl.models.registry import make_core
from tests.grad.elstm_reference import (
    chunk_loss,
    elstm_loop,
    param_grads,
    random_problem,
    zero_grads,
)

T_CHUNK, N_CHUNKS, B, I, N = 6, 4, 3, 5, 4


def make_elstm(layers=1, seed=1):
    torch.manual_seed(seed)
    core = ELSTM(I, N, layers=layers, forget_bias=0.5).double()
    with torch.no_grad():  # larger element-wise weights make a_t far from f_t
        for layer in core.layers:
            layer.w_z.uniform_(-1.5, 1.5)
            layer.w_f.uniform_(-1.5, 1.5)
    return core


def run_chunks(core, grad_name, x, first, readout, t_chunk, mask=None):
    """Sum of per-chunk gradients with parameters held fixed; returns (grads, module)."""
    zero_grads(core)
    grad = make_grad(grad_name, core, x.shape[1])
    state = core.initial_state(x.shape[1], device=x.device, dtype=x.dtype)
    for k in range(x.shape[0] // t_chunk):
        sl = slice(k * t_chunk, (k + 1) * t_chunk)
        h, state = grad.unroll(x[sl], state, first[sl])
        chunk_loss(h, readout[sl], None if mask is None else mask[sl]).backward()
    return param_grads(core), grad


def full_bptt(core, x, first, readout, mask=None, detach_every_step=False):
    zero_grads(core)
    layer = core.layers[0]
    h, _ = elstm_loop(layer, x, torch.zeros(x.shape[1], N, dtype=x.dtype), first,
                      detach_every_step)
    chunk_loss(h, readout, mask).backward()
    return param_grads(core)


def max_err(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture
def problem():
    x, first, readout = random_problem(T_CHUNK * N_CHUNKS, B, I, N, seed=3, p_first=0.12)
    first[T_CHUNK, 0] = True  # an episode start exactly on a chunk boundary
    first[T_CHUNK + 2, 1] = True  # and one inside a chunk
    return x, first, readout


def test_rtrl_chunks_equal_full_bptt(problem):
    x, first, readout = problem
    core = make_elstm()
    got, _ = run_chunks(core, "rtrl", x, first, readout, T_CHUNK)
    want = full_bptt(core, x, first, readout)
    assert set(got) == {"layers.0." + k for k in
                        ("W_z", "W_f", "w_z", "w_f", "b_z", "b_f", "W_o", "b_o")}
    assert max_err(got, {f"layers.0.{k.split('.')[-1]}": v for k, v in want.items()}) < 1e-9
    # the untruncated credit is not negligible: truncation changes the answer
    trunc, _ = run_chunks(core, "bptt", x, first, readout, T_CHUNK)
    assert max_err(trunc, want) > 1e-4


def test_rtrl_over_one_long_episode_equals_full_bptt():
    x, first, readout = random_problem(T_CHUNK * N_CHUNKS, B, I, N, seed=5, p_first=0.0)
    core = make_elstm(seed=2)
    got, _ = run_chunks(core, "rtrl", x, first, readout, T_CHUNK)
    assert max_err(got, full_bptt(core, x, first, readout)) < 1e-9


@pytest.mark.parametrize("blocks", ["kernel", "kernel_matmul", "cpu_blocks", "whole_batch"])
def test_chunked_rtrl_equals_step_by_step_reference(problem, blocks, monkeypatch):
    """kernel: the CPU kernel's one pass; kernel_matmul: its form for long chunks (the
    gradient and scaling pass, then one matmul); cpu_blocks: blocks of streams (the CPU
    without numba); whole_batch: the GPU layout (one block of every stream, no Python loop
    over streams), run on the CPU."""
    from rtrl_rl.grad import backends, sensitivity_pass

    if blocks.startswith("kernel"):
        assert sensitivity_pass.usable(torch.zeros(1, 1, 1, 1, dtype=torch.float64))
        assert T_CHUNK <= sensitivity_pass.ONE_PASS_MAX_T
        if blocks == "kernel_matmul":
            monkeypatch.setattr(sensitivity_pass, "ONE_PASS_MAX_T", 0)
    else:
        monkeypatch.setattr(sensitivity_pass, "usable", lambda s_mat: False)
    if blocks == "whole_batch":
        monkeypatch.setattr(backends, "stream_block", lambda s_mat: s_mat.shape[0])
    x, first, readout = problem
    core = make_elstm()
    got, chunked = run_chunks(core, "rtrl", x, first, readout, T_CHUNK)
    want, ref = run_chunks(core, "rtrl_reference", x, first, readout, T_CHUNK)
    assert max_err(got, want) < 1e-10
    for k, v in ref.sensitivities()[0].items():
        assert torch.allclose(chunked.sensitivities()[0][k], v, atol=1e-12, rtol=0), k


def test_stacked_sensitivities_match_reference(problem):
    x, first, readout = problem
    core = make_elstm(layers=2)
    _, chunked = run_chunks(core, "rtrl", x, first, readout, T_CHUNK)
    _, ref = run_chunks(core, "rtrl_reference", x, first, readout, T_CHUNK)
    assert chunked.approximate and "APPROXIMATE" in chunked.description
    for k in range(2):
        for name, v in ref.sensitivities()[k].items():
            assert torch.allclose(chunked.sensitivities()[k][name], v, atol=1e-12), (k, name)


def test_bptt_whole_sequence_is_exact_and_truncation_is_real(problem):
    x, first, readout = problem
    core = make_elstm()
    want = full_bptt(core, x, first, readout)
    whole, _ = run_chunks(core, "bptt", x, first, readout, x.shape[0])
    assert max_err(whole, want) < 1e-12
    short, _ = run_chunks(core, "bptt", x, first, readout, 3)
    assert max_err(short, want) > 1e-4


def test_one_step_equals_immediate_derivative(problem):
    x, first, readout = problem
    core = make_elstm()
    got, _ = run_chunks(core, "one_step", x, first, readout, T_CHUNK)
    want = full_bptt(core, x, first, readout, detach_every_step=True)
    assert max_err(got, want) < 1e-12
    assert max_err(got, full_bptt(core, x, first, readout)) > 1e-4


@pytest.mark.parametrize("grad_name", ["rtrl", "bptt", "one_step", "rtrl_reference"])
def test_gradient_ignores_everything_before_episode_start(grad_name):
    x, first, readout = random_problem(T_CHUNK * 3, 2, I, N, seed=7, p_first=0.0)
    start = T_CHUNK + 2  # stream 0's episode starts inside the second chunk
    first[start, 0] = True
    mask = torch.zeros(x.shape[0], 2, dtype=x.dtype)
    mask[start:, 0] = 1.0
    core = make_elstm(seed=4)
    base, _ = run_chunks(core, grad_name, x, first, readout, T_CHUNK, mask)
    x2 = x.clone()
    x2[:start, 0] += torch.randn_like(x2[:start, 0])  # stream 0's past
    x2[:, 1] += torch.randn_like(x2[:, 1])  # the other stream entirely
    pert, _ = run_chunks(core, grad_name, x2, first, readout, T_CHUNK, mask)
    assert max_err(base, pert) < 1e-12
    assert any(v.abs().max() > 1e-6 for v in base.values())


def test_stream_ids_and_state_dict_resume(problem):
    """Chunks for subsets of streams (as the async runner sends them) and a checkpoint of the
    carried sensitivities in the middle give the same gradients as one uninterrupted run."""
    x, first, readout = problem
    core = make_elstm()
    want, _ = run_chunks(core, "rtrl", x, first, readout, T_CHUNK)
    zero_grads(core)
    grad = make_grad("rtrl", core, B)
    state = core.initial_state(B, dtype=x.dtype)
    groups = [torch.tensor([2, 0]), torch.tensor([1])]
    for k in range(N_CHUNKS):
        sl = slice(k * T_CHUNK, (k + 1) * T_CHUNK)
        if k == 2:  # save, rebuild, restore
            saved = {n: v.clone() for n, v in grad.state_dict().items()}
            grad = make_grad("rtrl", core, B)
            grad.load_state_dict(saved)
        new_state = state.clone()
        for ids in reversed(groups) if k % 2 else groups:
            h, s = grad.unroll(x[sl][:, ids], state[ids], first[sl][:, ids], stream_ids=ids)
            chunk_loss(h, readout[sl][:, ids]).backward()
            new_state[ids] = s.detach()
        state = new_state
    assert max_err(param_grads(core), want) < 1e-10


def test_rtrl_refuses_dense_cells():
    core = make_core("lstm", I, N)
    with pytest.raises(ConfigError, match="elstm") as e:
        make_grad("rtrl", core, B)
    assert "\n" not in str(e.value) and "lstm" in str(e.value)


def test_unknown_grad_name_lists_close_matches():
    with pytest.raises(ConfigError, match="rtrl"):
        make_grad("rtlr", make_elstm(), B)


@pytest.mark.parametrize("grad_name", ["rtrl", "bptt", "one_step"])
def test_feedforward_core_runs_with_every_grad(grad_name):
    core = make_core("none", I, 0).double()
    grad = make_grad(grad_name, core, B)
    x = torch.randn(4, B, I, dtype=torch.float64, requires_grad=True)
    h, state = grad.unroll(x, core.initial_state(B, dtype=x.dtype), torch.zeros(4, B, dtype=bool))
    assert h.shape == (4, B, I) and state.shape == (B, 0)


def test_rtrl_exact_with_blocked_injection_backward():
    """11 streams: the fused backward runs full blocks of streams and a short last one."""
    x, first, readout = random_problem(T_CHUNK * N_CHUNKS, 11, I, N, seed=5, p_first=0.12)
    core = make_elstm()
    chunked, _ = run_chunks(core, "rtrl", x, first, readout, T_CHUNK)
    assert max_err(chunked, full_bptt(core, x, first, readout)) < 1e-9


@pytest.mark.parametrize("no_grad", [False, True])
def test_sensitivities_advance_without_backward(problem, no_grad):
    """The matrix update normally runs inside the backward; with no backward (evaluation,
    or a loss that does not reach the core) it must still run before the state is used."""
    x, first, _ = problem
    core = make_elstm(layers=2)
    mods = {name: make_grad(name, core, B) for name in ("rtrl", "rtrl_reference")}
    for grad in mods.values():
        state = core.initial_state(B, dtype=x.dtype)
        for k in range(N_CHUNKS):
            sl = slice(k * T_CHUNK, (k + 1) * T_CHUNK)
            with torch.set_grad_enabled(not no_grad):
                _, state = grad.unroll(x[sl], state, first[sl])
            state = state.detach()
    got, want = (mods[n].sensitivities() for n in ("rtrl", "rtrl_reference"))
    for k in range(2):
        for name, v in want[k].items():
            assert torch.allclose(got[k][name], v, atol=1e-12, rtol=0), (k, name)


def test_second_backward_through_a_chunk_is_refused(problem):
    """The update overwrites S_0 in place during the first backward, so a second backward
    through the same chunk (retain_graph) must fail loudly rather than use S_T for S_0."""
    x, first, readout = problem
    core = make_elstm()
    grad = make_grad("rtrl", core, B)
    state = core.initial_state(B, dtype=x.dtype)
    for k in range(2):
        sl = slice(k * T_CHUNK, (k + 1) * T_CHUNK)
        h, state = grad.unroll(x[sl], state.detach(), first[sl])
        loss = chunk_loss(h, readout[sl])
        loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="inplace"):
        loss.backward()

