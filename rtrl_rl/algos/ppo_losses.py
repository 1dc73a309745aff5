"""PPO's loss terms: GAE(lambda), the clipped surrogate and the clipped value loss.

Pure functions on tensors, in the conventions of ``losses.py``: every term is a scalar loss
to be minimized, ``reduction`` is ``"mean"`` or ``"sum"`` over the ``[T, B]`` steps, and
targets (advantages, returns, old values) are detached inside. Time runs along dim 0.
"""

from __future__ import annotations

import torch

from rtrl_rl.algos.impala_losses import LossTerms, Reduction, _reduce, entropy_loss

__all__ = ["clipped_surrogate_loss", "clipped_value_loss", "gae", "normalize_advantages",
           "ppo_loss"]


@torch.no_grad()
def gae(rewards: torch.Tensor, discounts: torch.Tensor, values: torch.Tensor,
        bootstrap_value: torch.Tensor, lambda_: float = 0.95) -> tuple[torch.Tensor,
                                                                        torch.Tensor]:
    """Generalised advantage estimation (Schulman et al., 2016).

    Args:
        rewards: ``[T, B]`` r_t, the reward of the transition t -> t+1.
        discounts: ``[T, B]`` gamma_t, gamma times 0 where the episode ended at t+1.
        values: ``[T, B]`` V(x_t).
        bootstrap_value: ``[B]`` V(x_T).
        lambda_: the GAE lambda.

    Returns:
        ``(advantages, returns)``, both ``[T, B]``: A_t = sum_k (gamma lambda)^k delta_{t+k}
        with delta_t = r_t + gamma_t V(x_{t+1}) - V(x_t), and returns = A_t + V(x_t).
    """
    if not (rewards.shape == discounts.shape == values.shape):
        raise ValueError(f"gae: rewards {tuple(rewards.shape)}, discounts "
                         f"{tuple(discounts.shape)} and values {tuple(values.shape)} differ")
    next_values = torch.cat([values[1:], bootstrap_value.unsqueeze(0)], 0)
    deltas = rewards + discounts * next_values - values
    adv = torch.zeros_like(values)
    acc = torch.zeros_like(bootstrap_value)
    for t in range(values.shape[0] - 1, -1, -1):
        acc = deltas[t] + discounts[t] * lambda_ * acc
        adv[t] = acc
    return adv, adv + values


def normalize_advantages(adv: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(adv - mean) / (std + eps)`` over all of ``adv`` (a minibatch), detached."""
    adv = adv.detach()
    return (adv - adv.mean()) / (adv.std(unbiased=False) + eps)


def clipped_surrogate_loss(log_ratio: torch.Tensor, advantages: torch.Tensor,
                           clip_eps: float = 0.2, reduction: Reduction = "mean"
                           ) -> torch.Tensor:
    """-reduce(min(rho A, clip(rho, 1 - eps, 1 + eps) A)), rho = exp(log_ratio).

    Args:
        log_ratio: ``[T, B]`` log pi(a|x) - log pi_old(a|x), differentiable in pi.
        advantages: ``[T, B]`` (detached here).
        clip_eps: the clipping range.
    """
    if log_ratio.shape != advantages.shape:
        raise ValueError(f"clipped_surrogate_loss: log_ratio {tuple(log_ratio.shape)} vs "
                         f"advantages {tuple(advantages.shape)}")
    adv = advantages.detach()
    rho = log_ratio.exp()
    surrogate = torch.minimum(rho * adv, rho.clamp(1 - clip_eps, 1 + clip_eps) * adv)
    return -_reduce(surrogate, reduction)


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       clip_eps: float | None = 0.2, reduction: Reduction = "mean"
                       ) -> torch.Tensor:
    """reduce(0.5 * max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2)), as in
    PPO2 and CleanRL; with ``clip_eps=None``, the plain reduce(0.5 * (V - R)^2).

    Args:
        values: ``[T, B]`` V(x_t) now (differentiable).
        old_values: ``[T, B]`` V(x_t) when the rollout was collected (detached here).
        returns: ``[T, B]`` value targets (detached here).
    """
    if not (values.shape == old_values.shape == returns.shape):
        raise ValueError(f"clipped_value_loss: values {tuple(values.shape)}, old_values "
                         f"{tuple(old_values.shape)} and returns {tuple(returns.shape)} differ")
    target = returns.detach()
    loss = (values - target) ** 2
    if clip_eps is not None:
        old = old_values.detach()
        clipped = old + (values - old).clamp(-clip_eps, clip_eps)
        loss = torch.maximum(loss, (clipped - target) ** 2)
    return _reduce(0.5 * loss, reduction)


def ppo_loss(log_ratio: torch.Tensor, entropy: torch.Tensor, values: torch.Tensor,
             old_values: torch.Tensor, advantages: torch.Tensor, returns: torch.Tensor,
             clip_eps: float = 0.2, value_clip_eps: float | None = 0.2,
             baseline_cost: float = 0.5, entropy_cost: float = 0.01,
             reduction: Reduction = "mean") -> tuple[torch.Tensor, LossTerms]:
    """The PPO objective on one minibatch: clipped surrogate + baseline_cost * (clipped)
    value loss + entropy_cost * negative entropy. All inputs ``[T, B]``; ``advantages`` as
    they enter the surrogate (normalized by the caller if wanted).

    Returns ``(total, terms)`` as ``impala_loss`` does.
    """
    pg = clipped_surrogate_loss(log_ratio, advantages, clip_eps, reduction)
    base = clipped_value_loss(values, old_values, returns, value_clip_eps, reduction)
    ent = entropy_loss(entropy, reduction)
    total = pg + baseline_cost * base + entropy_cost * ent
    n = entropy.numel() if reduction == "sum" else 1
    return total, LossTerms(total=total.detach(), policy_gradient=pg.detach(),
                            baseline=base.detach(), entropy_loss=ent.detach(),
                            entropy=-ent.detach() / max(n, 1))
