"""PPO loss terms against hand-computed numbers and a reference loop."""

from __future__ import annotations

import math

import pytest
import torch

from rtrl_rl.algos.ppo_losses import (
    clipped_surrogate_loss,
    clipped_value_loss,
    gae,
    normalize_advantages,
)

F64 = torch.float64


def _t(*rows):
    return torch.tensor(rows, dtype=F64)


def test_gae_hand_computed():
    # delta_1 = 2 + 0.9 * 2 - 1 = 2.8; delta_0 = 1 + 0.9 * 1 - 0.5 = 1.4
    # A_1 = 2.8; A_0 = 1.4 + 0.9 * 0.5 * 2.8 = 2.66
    adv, ret = gae(_t([1.0], [2.0]), _t([0.9], [0.9]), _t([0.5], [1.0]),
                   torch.tensor([2.0], dtype=F64), lambda_=0.5)
    torch.testing.assert_close(adv, _t([2.66], [2.8]))
    torch.testing.assert_close(ret, _t([3.16], [3.8]))


def test_gae_stops_at_episode_ends():
    # the episode ends after step 0: A_0 = r_0 - V_0, nothing from step 1 flows back
    adv, _ = gae(_t([1.0], [2.0]), _t([0.0], [0.9]), _t([0.5], [1.0]),
                 torch.tensor([2.0], dtype=F64), lambda_=0.95)
    assert adv[0, 0].item() == pytest.approx(0.5)


@pytest.mark.parametrize("lam", [0.0, 0.7, 1.0])
def test_gae_matches_a_reference_loop(lam):
    gen = torch.Generator().manual_seed(0)
    t, b = 7, 3
    r = torch.randn(t, b, generator=gen, dtype=F64)
    d = 0.97 * (torch.rand(t, b, generator=gen) > 0.2).to(F64)
    v = torch.randn(t, b, generator=gen, dtype=F64)
    boot = torch.randn(b, generator=gen, dtype=F64)
    adv, _ = gae(r, d, v, boot, lambda_=lam)
    vals = torch.cat([v, boot[None]])
    for s in range(t):
        for j in range(b):
            want, scale = 0.0, 1.0
            for k in range(s, t):  # sum_k prod(gamma lambda) delta_k
                delta = r[k, j] + d[k, j] * vals[k + 1, j] - vals[k, j]
                want += scale * float(delta)
                scale *= float(d[k, j]) * lam
            assert adv[s, j].item() == pytest.approx(want, abs=1e-12)


def test_clipped_surrogate_hand_computed_and_gradients():
    log_ratio = torch.tensor([math.log(1.5), math.log(1.5), math.log(0.5)], dtype=F64,
                             requires_grad=True)
    adv = torch.tensor([2.0, -2.0, 2.0], dtype=F64)
    # min(3, 2.4) = 2.4; min(-3, -2.4) = -3; min(1, 1.6) = 1
    loss = clipped_surrogate_loss(log_ratio, adv, clip_eps=0.2)
    assert loss.item() == pytest.approx(-(2.4 - 3.0 + 1.0) / 3)
    assert clipped_surrogate_loss(log_ratio, adv, 0.2, "sum").item() == pytest.approx(-0.4)
    loss.backward()
    # clipped above with A > 0: no gradient; the others: -rho A / 3
    torch.testing.assert_close(log_ratio.grad, torch.tensor([0.0, 1.0, -1 / 3], dtype=F64))


def test_clipped_value_loss_hand_computed():
    v = torch.tensor([1.5, 1.5], dtype=F64, requires_grad=True)
    old, ret = torch.tensor([1.0, 1.0], dtype=F64), torch.tensor([2.0, 1.4], dtype=F64)
    # [0]: max((1.5-2)^2, (1.2-2)^2) = 0.64; [1]: max((1.5-1.4)^2, (1.2-1.4)^2) = 0.04
    loss = clipped_value_loss(v, old, ret, clip_eps=0.2)
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.04) / 2)
    loss.backward()
    torch.testing.assert_close(v.grad, torch.tensor([0.0, 0.0], dtype=F64))  # both clipped
    plain = clipped_value_loss(v.detach(), old, ret, clip_eps=None)
    assert plain.item() == pytest.approx(0.5 * (0.25 + 0.01) / 2)


def test_normalize_advantages():
    out = normalize_advantages(torch.tensor([1.0, 2.0, 3.0, 6.0], requires_grad=True))
    assert not out.requires_grad
    assert out.mean().item() == pytest.approx(0.0, abs=1e-7)
    assert out.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-6)


def test_shape_mismatches_are_errors():
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="gae"):
        gae(z, z, torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="advantages"):
        clipped_surrogate_loss(z, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="old_values"):
        clipped_value_loss(z, torch.zeros(3), z)
