"""``unroll(..., advance=False)``: the gradient of an ordinary unroll, the carried state kept.

PPO unrolls each chunk several times (epochs); only one unroll may move the carried
sensitivities. Checked for every module that carries state (rtrl on the eLSTM and a pair
cell, the step-by-step reference) on the whole batch and on a subset of streams.
"""

from __future__ import annotations

import pytest
import torch

from rtrl_rl.grad import make_grad
from rtrl_rl.models.registry import make_core

T, B, I, N = 5, 4, 3, 4
F64 = torch.float64


def _chunk(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    first = torch.zeros(T, B, dtype=torch.bool)
    first[3, 1] = True
    return torch.randn(T, B, I, generator=gen, dtype=F64), first


def _warm(method: str, core_kind: str):
    """A module whose carried sensitivities are non-zero (two chunks in)."""
    torch.manual_seed(0)
    core = make_core(core_kind, I, N).double()
    grad = make_grad(method, core, B)
    for k in range(2):
        x, first = _chunk(k)
        h, _ = grad.unroll(x, core.initial_state(B, dtype=F64), first)
        h.square().sum().backward()
    core.zero_grad()
    return core, grad


def _grads(core, grad, ids, advance: bool) -> list[torch.Tensor]:
    x, first = _chunk(7)
    b = B if ids is None else ids.numel()
    state = 0.3 * torch.ones(b, core.state_size, dtype=F64)
    cols = slice(None) if ids is None else ids
    h, _ = grad.unroll(x[:, cols], state, first[:, cols], ids, advance=advance)
    core.zero_grad()
    (h * torch.linspace(-1, 1, h.shape[-1], dtype=F64)).sum().backward()
    return [p.grad.clone() for p in core.parameters()]


@pytest.mark.parametrize("method,core_kind", [("rtrl", "elstm"), ("rtrl", "lru"),
                                              ("rtrl_reference", "elstm")])
@pytest.mark.parametrize("ids", [None, torch.tensor([2, 0])])
def test_not_advancing_gives_the_same_gradient_and_keeps_the_carried_state(
        method, core_kind, ids):
    core, grad = _warm(method, core_kind)
    before = {k: v.clone() for k, v in grad.state_dict().items()}
    assert any(v.abs().max() > 0 for v in before.values())
    for _ in range(2):  # a second epoch reads what the first did
        kept = _grads(core, grad, ids, advance=False)
        for k, v in grad.state_dict().items():
            assert torch.equal(v, before[k]), k
    moved = _grads(core, grad, ids, advance=True)
    for a, b in zip(kept, moved, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    after = grad.state_dict()
    assert any(not torch.equal(after[k], before[k]) for k in before)


def test_modules_without_carried_state_accept_the_switch():
    core = make_core("elstm", I, N).double()
    for method in ("bptt", "one_step"):
        grad = make_grad(method, core, B)
        x, first = _chunk(0)
        h1, _ = grad.unroll(x, core.initial_state(B, dtype=F64), first, advance=False)
        h2, _ = grad.unroll(x, core.initial_state(B, dtype=F64), first)
        assert torch.equal(h1, h2) and grad.state_dict() == {}
