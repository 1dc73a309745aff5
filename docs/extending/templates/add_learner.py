"""A new learner as a plugin: ``algo=a2c``, synchronous advantage actor-critic.

One optimizer step per rollout on the policy gradient with GAE(lambda) advantages, the
value regression onto the lambda-returns and the entropy bonus. Unlike IMPALA it does not
correct for a policy lag, so it suits the sync runner, where the policy that acted is the
one that learns. The loss math comes from the pure functions of the built-in learners.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rtrl_rl.algos import register_learner
from rtrl_rl.algos.impala_losses import impala_loss
from rtrl_rl.algos.learner import LearnerBase, LearnerConfig
from rtrl_rl.algos.ppo_losses import gae
from rtrl_rl.errors import check
from rtrl_rl.rollout import Rollout


@dataclass
class A2CConfig(LearnerConfig):
    """Advantage actor-critic with GAE(lambda)."""

    name: str = "a2c"
    """The learner (``rtrl_rl.algos.LEARNERS``); selects the rest of this group's fields."""
    gae_lambda: float = 0.95
    """GAE's lambda: 0 gives one-step TD advantages, 1 Monte Carlo returns to the bootstrap."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0.0 <= self.gae_lambda <= 1.0, "algo.gae_lambda", "must be in [0, 1]")


@register_learner
class A2CLearner(LearnerBase):
    """Re-unroll the core over the rollout, GAE, one optimizer step."""

    config = A2CConfig
    cfg: A2CConfig

    def update(self, rollout: Rollout) -> dict[str, torch.Tensor | float]:
        cfg, agent = self.cfg, self.agent
        x = agent.core_input(rollout.obs, rollout.reward, rollout.prev_action, rollout.first)
        h, state_t = self.grad.unroll(x[:-1], rollout.core_state, rollout.first[:-1],
                                      rollout.stream_ids)
        with torch.no_grad():  # the bootstrap entry: a value, never a gradient
            h_boot, _ = agent.core(x[-1:].detach(), state_t.detach(), rollout.first[-1:])
            _, bootstrap_value = agent.heads(h_boot[0])
        params, values = agent.heads(h)
        rewards = agent.clip_reward(rollout.reward[1:].to(values.dtype))
        discounts = cfg.discount * (~rollout.first[1:]).to(values.dtype)
        advantages, returns = gae(rewards, discounts, values.detach(), bootstrap_value,
                                  cfg.gae_lambda)
        log_pi_a = agent.dist.log_prob(params, rollout.action[:-1])
        loss, terms = impala_loss(log_pi_a, agent.dist.entropy(params), values, returns,
                                  advantages, cfg.baseline_cost, cfg.entropy_cost,
                                  cfg.loss_reduction)
        grad_norm, stepped = self.step(loss)
        metrics = terms.as_dict()
        self.finish(stepped, metrics)
        metrics.update({"skipped_updates": self.skips.total, "stream_resets": self.stream_resets,
                        "grad_norm": grad_norm.detach(), "lr": self.scheduler.get_last_lr()[0],
                        "value_mean": values.detach().mean(), "policy_lag": self.lag(rollout)})
        return metrics
