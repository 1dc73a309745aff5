"""Action distributions against torch.distributions and hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D
from torch.nn import functional as F

from rtrl_rl.envs.base import ActionSpec
from rtrl_rl.models.policy_dist import (
    Categorical,
    DiagGaussian,
    FactoredCategorical,
    make_policy_dist,
)

F64 = torch.float64
LOG_2PI = math.log(2 * math.pi)


def test_make_policy_dist_follows_the_action_space():
    assert isinstance(make_policy_dist(ActionSpec.discrete(4)), Categorical)
    fc = make_policy_dist(ActionSpec("multi_discrete", (3, 2)))
    assert isinstance(fc, FactoredCategorical)
    assert (fc.head_size, fc.param_size, fc.feature_size, fc.action_shape) == (5, 5, 5, (2,))
    g = make_policy_dist(ActionSpec("box", low=(-1.0, -2.0), high=(1.0, 2.0)))
    assert isinstance(g, DiagGaussian)
    assert (g.head_size, g.param_size, g.feature_size, g.action_shape) == (2, 4, 2, (2,))
    assert g.action_dtype == torch.float32


def test_categorical_against_torch():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 5, generator=gen, dtype=F64)
    actions = torch.randint(5, (3, 4), generator=gen)
    ref = D.Categorical(logits=logits)
    dist = Categorical(5)
    torch.testing.assert_close(dist.log_prob(logits, actions), ref.log_prob(actions))
    torch.testing.assert_close(dist.entropy(logits), ref.entropy())
    assert dist.sample(logits).shape == (3, 4)
    torch.testing.assert_close(dist.mode(logits), logits.argmax(-1))


def test_categorical_sample_frequencies_match_softmax():
    """Hand-picked probabilities (one far below 1/N), 40k draws per row: each frequency
    within 4 standard errors; the same generator state gives the same draws."""
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.7, 0.2, 0.0999, 0.0001]], dtype=F64)
    params = probs.log()[:, None].expand(2, 40000, 4)
    dist = Categorical(4)
    s = dist.sample(params, torch.Generator().manual_seed(0))
    assert s.shape == (2, 40000) and s.dtype == torch.long
    freq = F.one_hot(s, 4).double().mean(1)
    tol = 4 * (probs * (1 - probs) / 40000).sqrt() + 1e-4
    assert bool(((freq - probs).abs() <= tol).all()), (freq, probs)
    again = dist.sample(params, torch.Generator().manual_seed(0))
    assert torch.equal(s, again)


def test_factored_categorical_hand_computed_and_against_torch():
    dist = FactoredCategorical((2, 3))
    # uniform logits: log p = log 1/2 + log 1/3, entropy log 2 + log 3
    zeros = torch.zeros(1, 5, dtype=F64)
    assert dist.log_prob(zeros, torch.tensor([[1, 2]])).item() == pytest.approx(-math.log(6))
    assert dist.entropy(zeros).item() == pytest.approx(math.log(6))
    # component 0 logits (log 3, 0): p = (3/4, 1/4); component 1 uniform; action (0, 1)
    params = torch.tensor([[math.log(3.0), 0.0, 0.0, 0.0, 0.0]], dtype=F64)
    want = math.log(0.75) + math.log(1 / 3)
    assert dist.log_prob(params, torch.tensor([[0, 1]])).item() == pytest.approx(want)
    gen = torch.Generator().manual_seed(1)
    params = torch.randn(4, 3, 5, generator=gen, dtype=F64)
    actions = torch.stack([torch.randint(2, (4, 3), generator=gen),
                           torch.randint(3, (4, 3), generator=gen)], -1)
    parts = [D.Categorical(logits=params[..., :2]), D.Categorical(logits=params[..., 2:])]
    torch.testing.assert_close(dist.log_prob(params, actions),
                               parts[0].log_prob(actions[..., 0])
                               + parts[1].log_prob(actions[..., 1]))
    torch.testing.assert_close(dist.entropy(params), parts[0].entropy() + parts[1].entropy())
    sample = dist.sample(params, torch.Generator().manual_seed(2))
    assert sample.shape == (4, 3, 2) and sample.dtype == torch.long
    assert int(sample[..., 0].max()) <= 1 and int(sample[..., 1].max()) <= 2
    feats = dist.action_features(torch.tensor([[1, 2]]))
    torch.testing.assert_close(feats, torch.tensor([[0.0, 1.0, 0.0, 0.0, 1.0]]))


def test_factored_sample_frequencies_match_the_probabilities():
    dist = FactoredCategorical((2, 3))
    params = torch.tensor([math.log(3.0), 0.0, 0.0, math.log(2.0), 0.0]).expand(20000, 5)
    s = dist.sample(params, torch.Generator().manual_seed(0))
    assert float((s[:, 0] == 0).float().mean()) == pytest.approx(0.75, abs=0.02)
    assert float((s[:, 1] == 1).float().mean()) == pytest.approx(0.5, abs=0.02)


def test_diag_gaussian_hand_computed_and_against_torch():
    dist = DiagGaussian((-1.0, -1.0), (1.0, 1.0)).double()
    head = torch.zeros(1, 2, dtype=F64)
    params = dist(head)  # log_std starts at 0
    torch.testing.assert_close(params, torch.zeros(1, 4, dtype=F64))
    # N(0, 1) per dim at a = (1, 0): -0.5 * 1 - 0.5 log 2pi - 0.5 log 2pi
    got = dist.log_prob(params, torch.tensor([[1.0, 0.0]], dtype=F64)).item()
    assert got == pytest.approx(-0.5 - LOG_2PI)
    assert dist.entropy(params).item() == pytest.approx(1.0 + LOG_2PI)
    gen = torch.Generator().manual_seed(3)
    mean = torch.randn(5, 3, 2, generator=gen, dtype=F64)
    with torch.no_grad():
        dist.log_std.copy_(torch.tensor([-0.5, 0.3]))
    params = dist(mean)
    torch.testing.assert_close(params[..., :2], torch.tanh(mean))  # bounds +-1
    actions = torch.randn(5, 3, 2, generator=gen, dtype=F64) * 2
    ref = D.Independent(D.Normal(torch.tanh(mean), dist.log_std.exp().expand_as(mean)), 1)
    torch.testing.assert_close(dist.log_prob(params, actions), ref.log_prob(actions))
    torch.testing.assert_close(dist.entropy(params), ref.entropy())
    torch.testing.assert_close(dist.mode(params), torch.tanh(mean))


def test_diag_gaussian_samples_are_unclipped_and_features_clipped():
    dist = DiagGaussian((-1.0,), (1.0,), init_log_std=math.log(2.0))
    with torch.no_grad():
        s = dist.sample(dist(torch.full((50000, 1), 0.5)), torch.Generator().manual_seed(0))
    assert float(s.mean()) == pytest.approx(math.tanh(0.5), abs=0.05)
    assert float(s.std()) == pytest.approx(2.0, abs=0.05)
    assert float(s.abs().max()) > 1.0  # the env clips; the rollout keeps the sample
    feats = dist.action_features(torch.tensor([[-3.0], [0.25], [7.0]]))
    torch.testing.assert_close(feats, torch.tensor([[-1.0], [0.25], [1.0]]))


def test_mean_stays_inside_finite_bounds():
    dist = DiagGaussian((-2.0, 0.0, -math.inf), (2.0, 1.0, math.inf)).double()
    head = torch.tensor([[0.0, 0.0, 7.0], [50.0, -50.0, -9.0], [0.5, 0.5, 0.0]], dtype=F64)
    mean = dist(head)[:, :3]
    want = torch.tensor([[0.0, 0.5, 7.0], [2.0, 0.0, -9.0],
                         [2 * math.tanh(0.5), 0.5 + 0.5 * math.tanh(0.5), 0.0]], dtype=F64)
    torch.testing.assert_close(mean, want)


def test_log_std_is_learned_and_state_independent():
    dist = DiagGaussian((-1.0,) * 3, (1.0,) * 3)
    params = dist(torch.randn(4, 3))
    torch.testing.assert_close(params[..., 3:], torch.zeros(4, 3))
    dist.entropy(params).sum().backward()
    torch.testing.assert_close(dist.log_std.grad, torch.full((3,), 4.0))  # dH/dlog_std = 1


@pytest.mark.parametrize("kind", ["multi_discrete", "box"])
def test_importance_weights_are_those_of_the_joint_action(kind):
    """log pi(a) - log mu(a) of the joint action, which is what V-trace reads."""
    gen = torch.Generator().manual_seed(4)
    if kind == "multi_discrete":
        dist = FactoredCategorical((3, 2))
        mu, pi = torch.randn(2, 6, 5, generator=gen, dtype=F64)
        a = dist.sample(mu, gen)

        def joint(p):
            return (D.Categorical(logits=p[..., :3]).log_prob(a[..., 0])
                    + D.Categorical(logits=p[..., 3:]).log_prob(a[..., 1]))
    else:
        dist = DiagGaussian((-1.0, -1.0), (1.0, 1.0))
        mu, pi = torch.randn(2, 6, 4, generator=gen, dtype=F64)
        a = dist.sample(mu, gen)

        def joint(p):
            return D.Independent(D.Normal(p[..., :2], p[..., 2:].exp()), 1).log_prob(a)
    torch.testing.assert_close(dist.log_prob(pi, a) - dist.log_prob(mu, a), joint(pi) - joint(mu))
