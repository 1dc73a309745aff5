"""IMPALA actor-critic loss terms: policy gradient, baseline, entropy.

Pure functions on tensors. Conventions:

- Every term is a *loss* (to be minimized) and a scalar.
- Reduction: ``"mean"`` (default) averages over the ``T * B`` steps; ``"sum"`` sums over
  them, as torchbeast/monobeast (the code base of the reference agent) does. The choice
  rescales gradients by ``T * B``, which interacts with the optimizer epsilon (RMSProp eps
  0.01) and the global grad-norm clip (40) of the reference hyperparameters, so pick one
  deliberately and keep it fixed across the runs you compare.
- The policy enters as ``log_pi_a`` (log-probabilities of the taken actions) and ``entropy``,
  both ``[T, B]`` from the agent's action distribution (``rtrl_rl.models.policy_dist``), so
  every kind of action space shares these terms.
- Targets (``advantages``, ``vs``) are detached inside; gradients flow only into
  ``log_pi_a``, ``entropy`` and ``values``.
- ``entropy_loss`` is the *negative* entropy, so ``total += entropy_cost * entropy_loss``
  rewards higher entropy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

__all__ = [
    "LossTerms",
    "Reduction",
    "baseline_loss",
    "entropy_loss",
    "impala_loss",
    "policy_gradient_loss",
]

Reduction = Literal["mean", "sum"]


def _reduce(x: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    if reduction == "mean":
        return x.mean()
    if reduction == "sum":
        return x.sum()
    raise ValueError(f"unknown loss reduction '{reduction}'; choices: mean, sum")


def policy_gradient_loss(
    log_pi_a: torch.Tensor,
    advantages: torch.Tensor,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """-reduce(log pi(a_t|x_t) * A_t): descending it raises the log-probability of actions
    with positive advantage.

    Args:
        log_pi_a: ``[T, B]`` learner log-probabilities of the actions taken.
        advantages: ``[T, B]`` e.g. V-trace ``pg_advantages`` (detached here).
        reduction: ``"mean"`` over ``T * B`` or ``"sum"``.

    Returns:
        Scalar loss.
    """
    if log_pi_a.shape != advantages.shape:
        raise ValueError(
            f"policy_gradient_loss: log-probs {tuple(log_pi_a.shape)} vs "
            f"advantages {tuple(advantages.shape)}"
        )
    return -_reduce(log_pi_a * advantages.detach(), reduction)


def baseline_loss(
    values: torch.Tensor, vs: torch.Tensor, reduction: Reduction = "mean"
) -> torch.Tensor:
    """reduce(0.5 * (vs_t - V(x_t))^2), regressing the values onto the (detached) targets.

    Args:
        values: ``[T, B]`` learner value estimates.
        vs: ``[T, B]`` value targets, e.g. V-trace ``vs``.
        reduction: ``"mean"`` over ``T * B`` or ``"sum"``.

    Returns:
        Scalar loss.
    """
    if values.shape != vs.shape:
        raise ValueError(
            f"baseline_loss: values {tuple(values.shape)} vs targets {tuple(vs.shape)}"
        )
    return _reduce(0.5 * (vs.detach() - values) ** 2, reduction)


def entropy_loss(entropy: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """Negative policy entropy, -reduce(H(pi(.|x_t))).

    Args:
        entropy: ``[T, B]`` (any shape) policy entropies.
        reduction: ``"mean"`` over the positions or ``"sum"``.

    Returns:
        Scalar loss; minimizing it maximizes entropy.
    """
    return -_reduce(entropy, reduction)


@dataclass(frozen=True)
class LossTerms:
    """Unweighted loss terms and the weighted total, as detached 0-d tensors for logging
    (reading them as floats waits for the device, so the caller does it only when it logs).

    total = policy_gradient + baseline_cost * baseline + entropy_cost * entropy_loss.
    ``entropy`` is the (positive) mean policy entropy, reported for convenience.
    """

    total: torch.Tensor
    policy_gradient: torch.Tensor
    baseline: torch.Tensor
    entropy_loss: torch.Tensor
    entropy: torch.Tensor

    def as_dict(self, prefix: str = "loss/") -> dict[str, torch.Tensor]:
        return {
            f"{prefix}total": self.total,
            f"{prefix}policy_gradient": self.policy_gradient,
            f"{prefix}baseline": self.baseline,
            f"{prefix}entropy": self.entropy_loss,
            "policy/entropy": self.entropy,
        }


def impala_loss(
    log_pi_a: torch.Tensor,
    entropy: torch.Tensor,
    values: torch.Tensor,
    vs: torch.Tensor,
    pg_advantages: torch.Tensor,
    baseline_cost: float = 0.5,
    entropy_cost: float = 0.01,
    reduction: Reduction = "mean",
) -> tuple[torch.Tensor, LossTerms]:
    """The IMPALA objective from V-trace targets.

    Args:
        log_pi_a: ``[T, B]`` learner log-probabilities of the actions taken.
        entropy: ``[T, B]`` learner policy entropies.
        values: ``[T, B]`` learner values.
        vs, pg_advantages: ``[T, B]`` V-trace targets (``VTraceReturns``).
        baseline_cost, entropy_cost: weights of the baseline and entropy terms.
        reduction: ``"mean"`` over ``T * B`` or ``"sum"`` for every term.

    Returns:
        ``(total, terms)``: the differentiable scalar loss and its parts as floats.
    """
    pg = policy_gradient_loss(log_pi_a, pg_advantages, reduction)
    base = baseline_loss(values, vs, reduction)
    ent = entropy_loss(entropy, reduction)
    total = pg + baseline_cost * base + entropy_cost * ent
    n = entropy.numel() if reduction == "sum" else 1
    terms = LossTerms(
        total=total.detach(),
        policy_gradient=pg.detach(),
        baseline=base.detach(),
        entropy_loss=ent.detach(),
        entropy=-ent.detach() / max(n, 1),
    )
    return total, terms
