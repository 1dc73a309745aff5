"""V-trace off-policy targets (Espeholt et al. 2018, IMPALA, eq. 1 and Remark 1).

Pure functions on tensors; no modules, no state. Everything returned is a constant target
(computed under ``torch.no_grad``), so the learner's losses differentiate only through its
own logits and values.

Time indexing. A rollout of ``T`` learner steps ``t = 0..T-1`` gives, per stream ``b``:

- ``values[t]``  = V(x_t) under the learner's current parameters,
- ``rewards[t]`` = r_t, the reward received on the transition x_t -> x_{t+1},
- ``discounts[t]`` = gamma_t, the discount applied to everything after that transition,
- ``bootstrap_value`` = V(x_T), the value of the observation after the last step.

Discount convention (prepared by the caller, i.e. the learner):

    discounts[t] = gamma * (1 - first[t + 1])

where ``first[t + 1] = 1`` marks that observation x_{t+1} starts a new episode (the env
auto-resets inside ``step``, see ``rtrl_rl.envs.base``). A zero discount therefore stops
both the one-step bootstrap and the trace from crossing an episode boundary; r_t, the last
reward of the finished episode, is still counted.

Definition (n-step form with n = T - s, per stream, with c_i = lambda * min(1, rho_i)):

    v_s = V(x_s) + sum_{t=s}^{T-1} (prod_{i=s}^{t-1} gamma_i c_i) * delta_t
    delta_t = rho_bar_t * (r_t + gamma_t * V(x_{t+1}) - V(x_t))
    rho_bar_t = min(clip_rho_threshold, rho_t)

computed here by the equivalent backward recursion

    v_s - V(x_s) = delta_s + gamma_s * c_s * (v_{s+1} - V(x_{s+1})),   v_T = V(x_T).

Policy-gradient advantages (IMPALA sec. 4.2), with v_T = V(x_T):

    A_s = min(clip_pg_rho_threshold, rho_s) * (r_s + gamma_s * v_{s+1} - V(x_s))
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = [
    "VTraceReturns",
    "action_log_probs",
    "from_logits",
    "log_rhos_from_logits",
    "vtrace",
]


class VTraceReturns(NamedTuple):
    """V-trace targets; both ``[T, B]`` and free of autograd history.

    vs: value targets v_s, regressed onto by the baseline loss.
    pg_advantages: advantages weighting the policy-gradient log-probabilities.
    """

    vs: torch.Tensor
    pg_advantages: torch.Tensor


def _clip_max(x: torch.Tensor, threshold: float | None) -> torch.Tensor:
    return x if threshold is None else torch.clamp(x, max=threshold)


def _check_shapes(
    log_rhos: torch.Tensor,
    discounts: torch.Tensor,
    rewards: torch.Tensor,
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
) -> None:
    if values.dim() < 1:
        raise ValueError("vtrace: values must be at least [T], got a scalar")
    for name, x in (("log_rhos", log_rhos), ("discounts", discounts), ("rewards", rewards)):
        if x.shape != values.shape:
            raise ValueError(
                f"vtrace: {name} has shape {tuple(x.shape)}, values {tuple(values.shape)}"
            )
    if bootstrap_value.shape != values.shape[1:]:
        raise ValueError(
            f"vtrace: bootstrap_value has shape {tuple(bootstrap_value.shape)}, "
            f"expected {tuple(values.shape[1:])} (values without the time axis)"
        )


@torch.no_grad()
def vtrace(
    log_rhos: torch.Tensor,
    discounts: torch.Tensor,
    rewards: torch.Tensor,
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
    clip_rho_threshold: float | None = 1.0,
    clip_pg_rho_threshold: float | None = 1.0,
    lambda_: float = 1.0,
) -> VTraceReturns:
    """V-trace value targets and policy-gradient advantages.

    Args:
        log_rhos: ``[T, B]`` log(pi(a_t|x_t) / mu(a_t|x_t)), target over behaviour policy.
        discounts: ``[T, B]`` gamma_t = gamma * (1 - first[t+1]) (see the module docstring).
        rewards: ``[T, B]`` r_t (already clipped, if clipping is wanted).
        values: ``[T, B]`` V(x_t) from the learner.
        bootstrap_value: ``[B]`` V(x_T).
        clip_rho_threshold: rho_bar in delta_t; ``None`` disables clipping.
        clip_pg_rho_threshold: clip of the importance weight in the advantages; ``None``
            disables clipping.
        lambda_: trace-cutting factor in c_t = lambda * min(1, rho_t) (Remark 1); 1 is plain
            V-trace.

    Any trailing batch shape works (``[T, *B]`` with ``bootstrap_value`` ``[*B]``). The
    outputs have the dtype and device of ``values``; inputs are detached.

    Returns:
        ``VTraceReturns(vs [T, B], pg_advantages [T, B])``.
    """
    _check_shapes(log_rhos, discounts, rewards, values, bootstrap_value)
    log_rhos, discounts, rewards, values, bootstrap_value = (
        x.detach().to(values.dtype) for x in (log_rhos, discounts, rewards, values, bootstrap_value)
    )
    rhos = torch.exp(log_rhos)
    clipped_rhos = _clip_max(rhos, clip_rho_threshold)
    cs = lambda_ * torch.clamp(rhos, max=1.0)

    # V(x_{t+1}) for every t, with V(x_T) = bootstrap_value.
    values_tp1 = torch.cat([values[1:], bootstrap_value.unsqueeze(0)], dim=0)
    deltas = clipped_rhos * (rewards + discounts * values_tp1 - values)

    # Backward recursion on vs_minus_v[t] = v_t - V(x_t); zero past the rollout's end.
    vs_minus_v = torch.empty_like(values)
    acc = torch.zeros_like(bootstrap_value)
    for t in reversed(range(values.shape[0])):
        acc = deltas[t] + discounts[t] * cs[t] * acc
        vs_minus_v[t] = acc
    vs = values + vs_minus_v

    vs_tp1 = torch.cat([vs[1:], bootstrap_value.unsqueeze(0)], dim=0)
    pg_rhos = _clip_max(rhos, clip_pg_rho_threshold)
    pg_advantages = pg_rhos * (rewards + discounts * vs_tp1 - values)
    return VTraceReturns(vs=vs, pg_advantages=pg_advantages)


def action_log_probs(logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log pi(a_t | x_t) of the taken actions.

    Args:
        logits: ``[T, B, A]`` unnormalized action scores.
        actions: ``[T, B]`` integer actions.

    Returns:
        ``[T, B]`` log-probabilities (differentiable w.r.t. ``logits``).
    """
    log_probs = F.log_softmax(logits, dim=-1)
    return log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def log_rhos_from_logits(
    behaviour_logits: torch.Tensor, target_logits: torch.Tensor, actions: torch.Tensor
) -> torch.Tensor:
    """``[T, B]`` log importance weights log pi(a|x) - log mu(a|x), detached.

    ``behaviour_logits`` (mu, the actor's) and ``target_logits`` (pi, the learner's) are
    ``[T, B, A]``; ``actions`` is ``[T, B]``.
    """
    if behaviour_logits.shape != target_logits.shape:
        raise ValueError(
            f"log_rhos_from_logits: behaviour_logits {tuple(behaviour_logits.shape)} and "
            f"target_logits {tuple(target_logits.shape)} differ"
        )
    return action_log_probs(target_logits, actions) - action_log_probs(behaviour_logits, actions)


def from_logits(
    behaviour_logits: torch.Tensor,
    target_logits: torch.Tensor,
    actions: torch.Tensor,
    discounts: torch.Tensor,
    rewards: torch.Tensor,
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
    clip_rho_threshold: float | None = 1.0,
    clip_pg_rho_threshold: float | None = 1.0,
    lambda_: float = 1.0,
) -> VTraceReturns:
    """``vtrace`` with the log importance weights computed from policy logits.

    Args:
        behaviour_logits: ``[T, B, A]`` logits of the policy that acted (mu).
        target_logits: ``[T, B, A]`` logits of the policy being learned (pi).
        actions: ``[T, B]`` actions taken.
        discounts, rewards, values, bootstrap_value, clip_*, lambda_: as in ``vtrace``.

    Returns:
        ``VTraceReturns(vs [T, B], pg_advantages [T, B])``, both detached.
    """
    log_rhos = log_rhos_from_logits(behaviour_logits, target_logits, actions)
    return vtrace(
        log_rhos,
        discounts,
        rewards,
        values,
        bootstrap_value,
        clip_rho_threshold=clip_rho_threshold,
        clip_pg_rho_threshold=clip_pg_rho_threshold,
        lambda_=lambda_,
    )
