"""IMPALA (Espeholt et al., 2018): re-unroll the agent over a rollout, V-trace, one optimizer
step.

Nothing here knows which gradient method is in use: the temporal-gradient module decides
what ``loss.backward()`` sends to the recurrent parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rtrl_rl.algos.impala_losses import impala_loss
from rtrl_rl.algos.learner import LearnerBase, LearnerConfig
from rtrl_rl.algos.vtrace import vtrace
from rtrl_rl.errors import check
from rtrl_rl.rollout import Rollout


@dataclass
class ImpalaConfig(LearnerConfig):
    """IMPALA / V-trace; the defaults are the reference (R2AC) settings."""

    clip_rho: float = 1.0
    """V-trace's truncation of the importance weights in the value targets (rho-bar)."""
    clip_pg_rho: float = 1.0
    """Truncation of the importance weights in the policy-gradient advantages."""
    vtrace_lambda: float = 1.0
    """V-trace's lambda: mixes one-step and multi-step targets (1: the paper's V-trace)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0.0 < self.vtrace_lambda <= 1.0, "algo.vtrace_lambda", "must be in (0, 1]")


class ImpalaLearner(LearnerBase):
    """IMPALA: re-unroll the agent over the rollout, V-trace, one optimizer step."""

    config = ImpalaConfig
    corrects_lag = True  # V-trace
    cfg: ImpalaConfig

    def update(self, rollout: Rollout) -> dict[str, torch.Tensor | float]:
        """One step on the rollout (see ``LearnerBase.update``)."""
        cfg, agent = self.cfg, self.agent
        x = agent.core_input(rollout.obs, rollout.reward, rollout.prev_action, rollout.first)
        h, state_t = self.grad.unroll(x[:-1], rollout.core_state, rollout.first[:-1],
                                      rollout.stream_ids)
        with torch.no_grad():  # the bootstrap entry: a value, never a gradient
            h_boot, _ = agent.core(x[-1:].detach(), state_t.detach(), rollout.first[-1:])
            _, bootstrap_value = agent.heads(h_boot[0])
        params, values = agent.heads(h)
        actions = rollout.action[:-1]
        log_pi_a = agent.dist.log_prob(params, actions)
        rewards = agent.clip_reward(rollout.reward[1:].to(values.dtype))
        discounts = cfg.discount * (~rollout.first[1:]).to(values.dtype)
        with torch.no_grad():  # log pi(a|x) - log mu(a|x), mu the policy that acted
            log_rhos = log_pi_a - agent.dist.log_prob(rollout.dist_params[:-1], actions)
        returns = vtrace(log_rhos, discounts, rewards, values.detach(), bootstrap_value,
                         cfg.clip_rho, cfg.clip_pg_rho, cfg.vtrace_lambda)
        loss, terms = impala_loss(log_pi_a, agent.dist.entropy(params), values, returns.vs,
                                  returns.pg_advantages, cfg.baseline_cost, cfg.entropy_cost,
                                  cfg.loss_reduction)
        grad_norm, stepped = self.step(loss)
        metrics = terms.as_dict()
        self.finish(stepped, metrics)
        metrics.update({
            "skipped_updates": self.skips.total,
            "stream_resets": self.stream_resets,
            "grad_norm": grad_norm.detach(),
            "lr": self.scheduler.get_last_lr()[0],
            "rho_mean": log_rhos.exp().mean(),
            "value_mean": values.detach().mean(),
            "policy_lag": self.lag(rollout),
        })
        return metrics
