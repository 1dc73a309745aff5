"""Recurrent PPO: ``algo.epochs`` passes over each rollout, in minibatches of whole streams.

One update consumes one rollout of ``T`` steps from ``B`` streams:

1. The acting pass (no gradient), with the parameters the update starts from: values for
   GAE(lambda) and for value clipping, and the bootstrap value.
2. ``epochs`` x ``minibatches`` optimizer steps. Each minibatch is whole chunks of a random
   subset of ``B / minibatches`` streams, re-unrolled from the rollout's ``core_state`` with
   ``advance=False``: every epoch reads the same carried state (RTRL's sensitivities from
   before this chunk) and leaves it as it was.
   A step whose loss or gradient is not finite ends the update and returns the weights and
   optimizer state to where it started (``LearnerBase.finish`` counts one skipped update).
3. The carried state advances once, over the whole chunk, from the parameters of step 1.

Which parameters advance the sensitivities: those of step 1, the parameters the update
starts from. In the sync runner these are the parameters that acted, so the advanced
sensitivities are the derivatives of the very core states the actor carries into the next
rollout; with a policy lag they are the parameters IMPALA's single step would advance from
too. Advancing from the last epoch's parameters would mix parameters that never produced
the carried states.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rtrl_rl.algos.learner import LearnerBase, LearnerConfig
from rtrl_rl.algos.ppo_losses import gae, normalize_advantages, ppo_loss
from rtrl_rl.errors import check
from rtrl_rl.rollout import Rollout


@dataclass
class PPOConfig(LearnerConfig):
    """Recurrent PPO (clipped surrogate, GAE), minibatches of whole streams."""

    name: str = "ppo"
    """The learner (``rtrl_rl.algos.LEARNERS``); selects the rest of this group's fields."""
    epochs: int = 4
    """Passes over each rollout."""
    minibatches: int = 4
    """Each pass splits the batch's streams into this many minibatches (it must divide them)."""
    clip_eps: float = 0.2
    """Surrogate clipping range epsilon."""
    value_clip_eps: float = 0.2
    """Value clipping range (0: no value clipping)."""
    gae_lambda: float = 0.95
    """GAE's lambda."""
    normalize_advantages: bool = True
    """Normalize the advantages per minibatch."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.epochs >= 1, "algo.epochs", "must be >= 1")
        check(self.minibatches >= 1, "algo.minibatches", "must be >= 1")
        check(self.clip_eps > 0, "algo.clip_eps", "must be > 0")
        check(self.value_clip_eps >= 0, "algo.value_clip_eps", "must be >= 0 (0: off)")
        check(0.0 <= self.gae_lambda <= 1.0, "algo.gae_lambda", "must be in [0, 1]")

    def check_batch(self, streams: int) -> None:
        check(streams % self.minibatches == 0, "algo.minibatches",
              f"({self.minibatches}) must divide the {streams} streams of a learner batch")


class PPOLearner(LearnerBase):
    """``update(rollout)``: steps 1-3 above; metrics are averages over the minibatches."""

    config = PPOConfig
    cfg: PPOConfig

    def update(self, rollout: Rollout) -> dict[str, torch.Tensor | float]:
        cfg, agent, grad = self.cfg, self.agent, self.grad
        first, actions = rollout.first, rollout.action[:-1]
        with torch.no_grad():
            x_act = agent.core_input(rollout.obs, rollout.reward, rollout.prev_action, first)
            h, state_t = grad.unroll(x_act[:-1], rollout.core_state, first[:-1],
                                     rollout.stream_ids, advance=False)
            h_boot, _ = agent.core(x_act[-1:], state_t, first[-1:])
            _, old_values = agent.heads(h)
            _, bootstrap_value = agent.heads(h_boot[0])
            rewards = agent.clip_reward(rollout.reward[1:].to(old_values.dtype))
            discounts = cfg.discount * (~first[1:]).to(old_values.dtype)
            advantages, returns = gae(rewards, discounts, old_values, bootstrap_value,
                                      cfg.gae_lambda)
            old_log_pi = agent.dist.log_prob(rollout.dist_params[:-1], actions)
            acting = [p.detach().clone() for p in agent.core.parameters()]

        sums: dict[str, torch.Tensor] = {}
        steps = 0
        value_clip = cfg.value_clip_eps or None
        snap = self.snapshot()  # a skipped step returns the whole update to here
        stepped, failed = True, {}
        for _ in range(cfg.epochs):
            if not stepped:
                break
            order = torch.randperm(rollout.batch)
            for idx in order.chunk(cfg.minibatches):
                mb = rollout.select(idx)
                x = agent.core_input(mb.obs, mb.reward, mb.prev_action, mb.first)
                h, _ = grad.unroll(x[:-1], mb.core_state, mb.first[:-1], mb.stream_ids,
                                   advance=False)
                params, values = agent.heads(h)
                log_ratio = agent.dist.log_prob(params, mb.action[:-1]) - old_log_pi[:, idx]
                adv = advantages[:, idx]
                if cfg.normalize_advantages:
                    adv = normalize_advantages(adv)
                loss, terms = ppo_loss(log_ratio, agent.dist.entropy(params), values,
                                       old_values[:, idx], adv, returns[:, idx],
                                       cfg.clip_eps, value_clip, cfg.baseline_cost,
                                       cfg.entropy_cost, cfg.loss_reduction)
                grad_norm, stepped = self.step(loss)
                if not stepped:
                    failed = terms.as_dict()
                    break
                with torch.no_grad():
                    ratio = log_ratio.exp()
                    for k, v in {**terms.as_dict(), "grad_norm": grad_norm,
                                 "approx_kl": ((ratio - 1) - log_ratio).mean(),
                                 "clip_frac": ((ratio - 1).abs() > cfg.clip_eps).float().mean(),
                                 }.items():
                        sums[k] = sums[k] + v.detach() if k in sums else v.detach()
                steps += 1

        if not stepped and steps:
            self.restore(snap)
        self._advance(x_act[:-1], rollout, acting)
        self.finish(stepped, failed)
        metrics: dict[str, torch.Tensor | float] = (
            {k: v / steps for k, v in sums.items()} if stepped else failed)
        metrics.update({"skipped_updates": self.skips.total,
                        "stream_resets": self.stream_resets,
                        "lr": self.scheduler.get_last_lr()[0],
                        "value_mean": old_values.mean(), "policy_lag": self.lag(rollout)})
        return metrics

    @torch.no_grad()
    def _advance(self, x: torch.Tensor, rollout: Rollout, acting: list[torch.Tensor]) -> None:
        """Advance the carried state over the chunk once, with the core's parameters set
        to ``acting`` for the duration (``x``: the core inputs of the acting pass)."""
        params = list(self.agent.core.parameters())
        now = [p.detach().clone() for p in params]
        for p, a in zip(params, acting, strict=True):
            p.copy_(a)
        try:
            self.grad.unroll(x, rollout.core_state, rollout.first[:-1], rollout.stream_ids)
        finally:
            for p, n in zip(params, now, strict=True):
                p.copy_(n)
