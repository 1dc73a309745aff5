"""The learners' shared part: the optimizer, the LR schedule and one optimizer step (skipped
when not finite). IMPALA's update is in ``impala.py``, PPO's in ``ppo.py``.

Nothing here knows which gradient method is in use: the temporal-gradient module decides
what ``loss.backward()`` sends to the recurrent parameters.
"""

from __future__ import annotations

import copy
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import nn

from rtrl_rl.algos.guard import SkipCounter, first_nonfinite, poison_if_nonfinite
from rtrl_rl.checkpoint import load_optimizer_state
from rtrl_rl.grad.base import TemporalGrad
from rtrl_rl.models.agent import Agent
from rtrl_rl.rollout import Rollout

log = logging.getLogger(__name__)


def make_optimizer(params, cfg) -> torch.optim.Optimizer:
    """``cfg``: an ``AlgoConfig``. RMSProp as in IMPALA (alpha 0.99, eps 0.01) or Adam."""
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.rms_alpha, eps=cfg.rms_eps)
    return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps)


def read_metrics(metrics: dict[str, torch.Tensor | float]) -> dict[str, float]:
    """Floats from an update's metrics (waits for the device once)."""
    return {k: float(v) for k, v in metrics.items()}


class LearnerBase(ABC):
    """Owns the optimizer and LR schedule (one schedule step per rollout); subclasses
    implement ``update(rollout)``, which returns scalar metrics."""

    def __init__(self, agent: Agent, grad: TemporalGrad, cfg, total_updates: int,
                 combine_grads: Callable[[list[nn.Parameter]], None] | None = None) -> None:
        """``combine_grads``: called on the parameters after ``backward`` and before the
        norm clip, to merge gradients computed elsewhere (other ranks) into ``.grad``."""
        self.agent, self.grad, self.cfg = agent, grad, cfg
        self.params = list(agent.parameters())
        self.combine_grads = combine_grads
        self.optimizer = make_optimizer(self.params, cfg)
        total = max(1, total_updates)
        self._decay = (lambda k: max(0.0, 1.0 - k / total)) if cfg.lr_decay == "linear" else (
            lambda k: 1.0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._decay)
        self.updates = 0
        self.skips = SkipCounter(cfg.max_skipped_updates)
        self.stream_resets = 0

    def step(self, loss: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """One optimizer step on ``loss``, unless the loss or the gradient is not finite
        (``guard.py``); returns the gradient norm before clipping and whether it stepped."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.combine_grads is not None:
            poison_if_nonfinite(loss, self.params)  # so that every rank skips with this one
            self.combine_grads(self.params)
        grad_norm = nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        if not math.isfinite(float(grad_norm) + float(loss.detach())):  # the one device wait
            return grad_norm, False
        nn.utils.clip_grads_with_norm_(self.params, self.cfg.max_grad_norm, grad_norm)
        self.optimizer.step()
        return grad_norm, True

    def finish(self, stepped: bool, terms: dict[str, torch.Tensor]) -> None:
        """End an update: advance the LR schedule and the count when it stepped; else
        count the skip, name its cause, and restart any stream whose carried gradient
        state is not finite (a cause the next update would meet again)."""
        if stepped:
            self.scheduler.step()
            self.updates += 1
            self.skips.ok()
            return
        what = first_nonfinite(terms, self.agent.named_parameters())
        reset = self.reset_nonfinite_streams()
        extra = f"; the carried gradient state of {reset} stream(s) reset" if reset else ""
        self.skips.skip(what, self.updates + 1, extra)

    def reset_nonfinite_streams(self) -> int:
        """Restart (as at an episode start) the streams whose carried gradient state (RTRL's
        sensitivities) is not finite; returns how many, also counted in ``stream_resets``."""
        bad = self.grad.nonfinite_streams()
        if bad.numel():
            self.grad.reset_streams(bad)
            self.stream_resets += int(bad.numel())
            log.warning("grad=%s: the carried state of stream(s) %s was not finite: reset",
                        self.grad.name, bad.tolist())
        return int(bad.numel())

    def snapshot(self) -> tuple[list[torch.Tensor], dict]:
        """The weights and optimizer state, to return to if a later step is skipped."""
        return ([p.detach().clone() for p in self.params],
                copy.deepcopy(self.optimizer.state_dict()))

    @torch.no_grad()
    def restore(self, snap: tuple[list[torch.Tensor], dict]) -> None:
        for p, saved in zip(self.params, snap[0], strict=True):
            p.copy_(saved)
        self.optimizer.load_state_dict(snap[1])

    @abstractmethod
    def update(self, rollout: Rollout) -> dict[str, torch.Tensor | float]:
        """Learn from one rollout (already on the learner's device). Metrics are detached
        0-d tensors, so the update never waits for the device; ``read_metrics`` turns
        them into floats when they are logged."""

    def lag(self, rollout: Rollout) -> torch.Tensor:
        """Updates between the policy that acted and this one (after ``self.updates``
        counted this update)."""
        return (self.updates - 1 - rollout.policy_version.float()).mean()

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "updates": self.updates,
                "skipped_updates": self.skips.total}

    def load_state_dict(self, state: dict) -> None:
        """Restore the optimizer's moments and the update count. Hyperparameters (lr,
        alpha, betas, eps) come from this learner's config, not from the checkpoint, so a
        resumed run uses the values its config says."""
        fresh = [{k: v for k, v in g.items() if k != "params"}
                 for g in self.optimizer.param_groups]
        load_optimizer_state(self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.updates = int(state["updates"])
        self.skips.total = int(state.get("skipped_updates", 0))
        self.scheduler.base_lrs = [g["initial_lr"] for g in fresh]
        lrs = [base * self._decay(self.scheduler.last_epoch) for base in self.scheduler.base_lrs]
        for group, hyper, lr in zip(self.optimizer.param_groups, fresh, lrs, strict=True):
            group.update(hyper)
            group["lr"] = lr
        self.scheduler._last_lr = lrs
