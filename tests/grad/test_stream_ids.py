"""Chunks that name their streams: a whole batch in order takes the fused in-place path."""

from __future__ import annotations

import torch

from rtrl_rl.grad import make_grad
from rtrl_rl.models.registry import make_core

T, B, I, N = 4, 3, 5, 6


def _chunk(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    first = torch.zeros(T, B, dtype=torch.bool)
    first[2, 1] = True
    return torch.randn(T, B, I, generator=gen, dtype=torch.float64), first


def _run(ids_for_chunk) -> tuple[list, list]:
    torch.manual_seed(0)
    core = make_core("elstm", I, N, 1, forget_bias=1.0).double()
    grad = make_grad("rtrl", core, B)
    grads, deferred = [], []
    for k in range(3):
        x, first = _chunk(k)
        h, _ = grad.unroll(x, core.initial_state(B, dtype=torch.float64), first,
                           ids_for_chunk())
        deferred.append(bool(grad._pending))  # the update waits for the backward
        core.zero_grad()
        h.square().sum().backward()
        grads.append([p.grad.clone() for p in core.parameters()])
    return grads, deferred


def test_all_streams_in_order_take_the_whole_batch_path():
    ref, ref_deferred = _run(lambda: None)
    got, deferred = _run(lambda: torch.arange(B))
    assert ref_deferred == deferred == [True, True, True]
    for a, b in zip(ref, got, strict=True):
        for ga, gb in zip(a, b, strict=True):
            torch.testing.assert_close(ga, gb, rtol=0, atol=1e-12)


def test_a_permuted_batch_takes_the_gathered_path_with_the_same_gradients():
    """Column j holds stream perm[j]: the gathered path, and the same gradients."""
    ref, _ = _run(lambda: None)
    perm = torch.tensor([2, 0, 1])
    inv = torch.argsort(perm)
    torch.manual_seed(0)
    core = make_core("elstm", I, N, 1, forget_bias=1.0).double()
    grad = make_grad("rtrl", core, B)
    for k in range(3):
        x, first = _chunk(k)
        h, _ = grad.unroll(x[:, perm], core.initial_state(B, dtype=torch.float64),
                           first[:, perm], perm)
        assert not grad._pending  # updated at once, on a gathered copy
        core.zero_grad()
        h[:, inv].square().sum().backward()
        for ga, gb in zip(ref[k], [p.grad for p in core.parameters()], strict=True):
            torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)
