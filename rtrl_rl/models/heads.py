"""Actor-critic output heads on top of the recurrent core's features."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["PolicyValueHead"]


class PolicyValueHead(nn.Module):
    """A linear policy output and a linear state value from shared features.

    ``features [..., in_dim] -> (policy [..., policy_size], value [...])``, e.g.
    ``[T, B, in_dim]`` -> ``([T, B, policy_size], [T, B])``. The policy output is what the
    action distribution reads (``policy_dist``): logits, or a Gaussian's mean.

    The policy layer is initialized orthogonally with gain ``policy_init_gain`` (0.01) and
    zero bias, so the initial policy is close to uniform whatever the features are; the
    value layer is orthogonal with gain ``value_init_gain`` (1.0) and zero bias.
    """

    def __init__(
        self,
        in_dim: int,
        policy_size: int,
        policy_init_gain: float = 0.01,
        value_init_gain: float = 1.0,
    ) -> None:
        super().__init__()
        if in_dim < 1 or policy_size < 1:
            raise ValueError(
                f"PolicyValueHead: in_dim and policy_size must be >= 1, "
                f"got {in_dim} and {policy_size}"
            )
        self.in_dim = int(in_dim)
        self.policy_size = int(policy_size)
        self.policy = nn.Linear(self.in_dim, self.policy_size)
        self.value = nn.Linear(self.in_dim, 1)
        nn.init.orthogonal_(self.policy.weight, gain=policy_init_gain)
        nn.init.zeros_(self.policy.bias)
        nn.init.orthogonal_(self.value.weight, gain=value_init_gain)
        nn.init.zeros_(self.value.bias)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``features [..., in_dim]`` -> ``(policy [..., policy_size], value [...])``."""
        return self.policy(features), self.value(features).squeeze(-1)
