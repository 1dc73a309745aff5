"""Policy/value head: shapes, initialization, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from rtrl_rl.models.heads import PolicyValueHead


@pytest.mark.parametrize("lead", [(7,), (5, 3), ()])
def test_shapes(lead):
    head = PolicyValueHead(16, 6)
    logits, value = head(torch.randn(*lead, 16))
    assert logits.shape == (*lead, 6)
    assert value.shape == lead


def test_parameter_count():
    assert sum(p.numel() for p in PolicyValueHead(256, 15).parameters()) == 256 * 15 + 15 + 257


def test_initial_policy_is_near_uniform():
    torch.manual_seed(0)
    head = PolicyValueHead(256, 15)
    assert torch.count_nonzero(head.policy.bias) == 0 and torch.count_nonzero(head.value.bias) == 0
    # Orthogonal rows with gain 0.01: each row has norm 0.01.
    row_norms = head.policy.weight.norm(dim=1)
    torch.testing.assert_close(row_norms, torch.full((15,), 0.01))
    features = torch.relu(torch.randn(64, 256))  # post-ReLU-like features
    logits, _ = head(features)
    probs = torch.softmax(logits, -1)
    assert (probs - 1 / 15).abs().max() < 0.02
    entropy = -(probs * probs.log()).sum(-1)
    assert entropy.min() > 0.99 * math.log(15)


def test_custom_gains():
    head = PolicyValueHead(8, 4, policy_init_gain=1.0, value_init_gain=0.5)
    torch.testing.assert_close(head.policy.weight.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(head.value.weight.norm(), torch.tensor(0.5))


def test_gradients_flow():
    head = PolicyValueHead(10, 3)
    x = torch.randn(4, 2, 10, requires_grad=True)
    logits, value = head(x)
    (logits.sum() + value.sum()).backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_bad_sizes():
    with pytest.raises(ValueError, match="policy_size"):
        PolicyValueHead(8, 0)
