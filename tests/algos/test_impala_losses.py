"""IMPALA loss terms: hand-computed values, reductions, and gradient directions."""

from __future__ import annotations

import math

import pytest
import torch

from rtrl_rl.algos import impala_losses as losses
from rtrl_rl.algos.impala_losses import LossTerms, baseline_loss
from rtrl_rl.models.policy_dist import Categorical

F64 = torch.float64


# The terms take log-probabilities and entropies; these tests feed them from categorical
# logits, whose values below are computed by hand.
def policy_gradient_loss(logits, actions, advantages, reduction="mean"):
    log_pi_a = Categorical(logits.shape[-1]).log_prob(logits, actions)
    return losses.policy_gradient_loss(log_pi_a, advantages, reduction)


def entropy_loss(logits, reduction="mean"):
    return losses.entropy_loss(Categorical(logits.shape[-1]).entropy(logits), reduction)


def impala_loss(logits, values, actions, vs, adv, **kw):
    dist = Categorical(logits.shape[-1])
    return losses.impala_loss(dist.log_prob(logits, actions), dist.entropy(logits), values,
                              vs, adv, **kw)


def test_terms_on_given_log_probs_and_entropies():
    lp = torch.tensor([[-1.0, -2.0]], dtype=F64)
    adv = torch.tensor([[3.0, 0.5]], dtype=F64)
    assert losses.policy_gradient_loss(lp, adv).item() == pytest.approx((3.0 + 1.0) / 2)
    assert losses.entropy_loss(torch.tensor([1.0, 3.0])).item() == pytest.approx(-2.0)
    assert losses.entropy_loss(torch.tensor([1.0, 3.0]), "sum").item() == pytest.approx(-4.0)


def test_policy_gradient_loss_hand_computed():
    # T = 1, B = 2, A = 2, uniform logits: log pi(a) = log 0.5 for either action.
    # loss = -mean(log 0.5 * 1 + log 0.5 * (-2)) = -(log 0.5 * -1) / 2 = log(0.5) / 2
    logits = torch.zeros(1, 2, 2, dtype=F64)
    actions = torch.tensor([[0, 1]])
    advantages = torch.tensor([[1.0, -2.0]], dtype=F64)
    loss = policy_gradient_loss(logits, actions, advantages)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(math.log(0.5) / 2, abs=1e-12)
    # Sum reduction: T * B = 2 times the mean.
    loss_sum = policy_gradient_loss(logits, actions, advantages, reduction="sum")
    assert loss_sum.item() == pytest.approx(math.log(0.5), abs=1e-12)


def test_policy_gradient_loss_non_uniform():
    # logits (log 3, 0): pi = (0.75, 0.25); action 1, advantage 2:
    # loss = -(log 0.25 * 2) = 4 log 2
    logits = torch.tensor([[[math.log(3.0), 0.0]]], dtype=F64)
    loss = policy_gradient_loss(logits, torch.tensor([[1]]), torch.tensor([[2.0]], dtype=F64))
    assert loss.item() == pytest.approx(4 * math.log(2.0), abs=1e-12)


@pytest.mark.parametrize("advantage, prob_goes", [(1.5, "up"), (-1.5, "down")])
def test_policy_gradient_step_moves_probability_with_advantage_sign(advantage, prob_goes):
    logits = torch.randn(1, 1, 4, dtype=F64, requires_grad=True)
    actions = torch.tensor([[2]])
    adv = torch.tensor([[advantage]], dtype=F64, requires_grad=True)
    policy_gradient_loss(logits, actions, adv).backward()
    assert adv.grad is None  # advantages are detached
    # d loss / d logit_a = -A (1 - pi_a): negative for positive advantage.
    g = logits.grad[0, 0]
    assert (g[2] < 0) if prob_goes == "up" else (g[2] > 0)
    with torch.no_grad():
        p_before = torch.softmax(logits, -1)[0, 0, 2]
        p_after = torch.softmax(logits - 0.1 * logits.grad, -1)[0, 0, 2]
    assert (p_after > p_before) if prob_goes == "up" else (p_after < p_before)


def test_policy_gradient_shape_mismatch():
    with pytest.raises(ValueError, match="advantages"):
        policy_gradient_loss(
            torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2)
        )


def test_baseline_loss_hand_computed_and_gradient():
    # 0.5 * mean((2 - 1)^2, (0 - 2)^2) = 0.5 * 5 / 2 = 1.25; sum reduction 2.5.
    values = torch.tensor([[1.0], [2.0]], dtype=F64, requires_grad=True)
    vs = torch.tensor([[2.0], [0.0]], dtype=F64, requires_grad=True)
    loss = baseline_loss(values, vs)
    assert loss.item() == pytest.approx(1.25, abs=1e-12)
    assert baseline_loss(values, vs, reduction="sum").item() == pytest.approx(2.5, abs=1e-12)
    loss.backward()
    # d/dV 0.5 (vs - V)^2 / N = (V - vs) / N  -> ((1-2)/2, (2-0)/2)
    torch.testing.assert_close(values.grad, torch.tensor([[-0.5], [1.0]], dtype=F64))
    assert vs.grad is None  # targets are detached
    with pytest.raises(ValueError, match="targets"):
        baseline_loss(values, vs[:1])


def test_entropy_loss_hand_computed():
    # Uniform over 4 actions: entropy log 4, loss -log 4.
    assert entropy_loss(torch.zeros(3, 2, 4)).item() == pytest.approx(-math.log(4.0), abs=1e-6)
    # pi = (0.75, 0.25): sum pi log pi = 0.75 log 0.75 + 0.25 log 0.25
    logits = torch.tensor([[[math.log(3.0), 0.0]]], dtype=F64)
    expected = 0.75 * math.log(0.75) + 0.25 * math.log(0.25)
    assert entropy_loss(logits).item() == pytest.approx(expected, abs=1e-12)
    # Near-deterministic policy: entropy about 0, and no NaN from log 0.
    sharp = torch.tensor([[[1000.0, 0.0, 0.0]]])
    assert entropy_loss(sharp).item() == pytest.approx(0.0, abs=1e-6)
    assert not torch.isnan(entropy_loss(sharp))
    # Sum reduction over the T * B = 6 positions.
    assert entropy_loss(torch.zeros(3, 2, 4), reduction="sum").item() == pytest.approx(
        -6 * math.log(4.0), abs=1e-5
    )


def test_entropy_loss_descent_raises_entropy():
    logits = torch.tensor([[[2.0, 0.0, -1.0]]], dtype=F64, requires_grad=True)
    loss = entropy_loss(logits)
    loss.backward()
    with torch.no_grad():
        after = entropy_loss(logits - 0.1 * logits.grad)
    assert after < loss  # more entropy


def test_unknown_reduction():
    with pytest.raises(ValueError, match="reduction"):
        entropy_loss(torch.zeros(1, 1, 2), reduction="max")  # type: ignore[arg-type]


def test_impala_loss_combines_terms():
    T, B, A = 5, 3, 4
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(T, B, A, generator=gen, requires_grad=True)
    values = torch.randn(T, B, generator=gen, requires_grad=True)
    actions = torch.randint(A, (T, B), generator=gen)
    vs, adv = torch.randn(T, B, generator=gen), torch.randn(T, B, generator=gen)

    total, terms = impala_loss(
        logits, values, actions, vs, adv, baseline_cost=0.5, entropy_cost=0.01
    )
    assert isinstance(terms, LossTerms)
    pg = policy_gradient_loss(logits, actions, adv)
    base = baseline_loss(values, vs)
    ent = entropy_loss(logits)
    torch.testing.assert_close(total, pg + 0.5 * base + 0.01 * ent)
    assert terms.total == pytest.approx(total.item())
    assert terms.policy_gradient == pytest.approx(pg.item())
    assert terms.baseline == pytest.approx(base.item())
    assert terms.entropy_loss == pytest.approx(ent.item())
    assert terms.entropy == pytest.approx(-ent.item())
    # detached 0-d tensors: logging reads them later, without a device wait per update
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad
               for v in terms.as_dict().values())

    total.backward()
    assert logits.grad is not None and values.grad is not None

    total_sum, terms_sum = impala_loss(logits, values, actions, vs, adv, reduction="sum")
    assert total_sum.item() == pytest.approx(T * B * total.item(), rel=1e-5)
    assert float(terms_sum.entropy) == pytest.approx(float(terms.entropy), rel=1e-5)  # a mean
