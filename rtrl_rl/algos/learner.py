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
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from rtrl_rl.algos.guard import SkipCounter, first_nonfinite, poison_if_nonfinite
from rtrl_rl.checkpoint import load_optimizer_state
from rtrl_rl.errors import check, choice
from rtrl_rl.grad.base import TemporalGrad
from rtrl_rl.models.agent import Agent
from rtrl_rl.rollout import Rollout

log = logging.getLogger(__name__)


@dataclass
class LearnerConfig:
    """Options every learner has: the optimizer, its schedule, the loss weights, the data."""

    name: str = "impala"
    """The learner (``rtrl_rl.algos.LEARNERS``); selects the rest of this group's fields."""
    optimizer: str = "rmsprop"
    """``rmsprop`` (IMPALA's) or ``adam``."""
    lr: float = 6e-4
    """Initial learning rate."""
    lr_decay: str = "linear"
    """``linear``: to 0 at ``runner.total_frames``; ``none``: constant."""
    rms_alpha: float = 0.99
    """RMSProp's smoothing constant."""
    rms_eps: float = 0.01
    """RMSProp's epsilon (IMPALA's 0.01 assumes losses summed over ``[T, B]``)."""
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """Adam's betas."""
    adam_eps: float = 1e-8
    """Adam's epsilon."""
    max_grad_norm: float = 40.0
    """Clip the global gradient norm to this."""
    entropy_cost: float = 0.01
    """Weight of the entropy bonus."""
    baseline_cost: float = 0.5
    """Weight of the value loss."""
    discount: float = 0.99
    """Discount gamma."""
    reward_clip: float = 1.0
    """Clip rewards to ``[-c, c]`` (0: off); the agent's previous-reward input is clipped too."""
    loss_reduction: str = "sum"
    """``sum`` over ``[T, B]`` (torchbeast's and the reference agent's) or ``mean``."""
    max_skipped_updates: int = 10
    """An update whose loss or gradient is not finite is skipped; this many in a row stop
    the run (exit 1) with the weights of the last good update."""

    def __post_init__(self) -> None:
        from rtrl_rl.algos import LEARNERS

        choice(self.name, "algo.name", tuple(LEARNERS))
        check(LEARNERS[self.name].config is type(self), "algo.name",
              f"'{self.name}' takes {LEARNERS[self.name].config.__name__}, "
              f"not {type(self).__name__}")
        check(self.max_skipped_updates >= 1, "algo.max_skipped_updates", "must be >= 1")
        choice(self.loss_reduction, "algo.loss_reduction", ("sum", "mean"))
        choice(self.optimizer, "algo.optimizer", ("rmsprop", "adam"))
        choice(self.lr_decay, "algo.lr_decay", ("linear", "none"))
        check(self.lr > 0, "algo.lr", f"must be > 0, got {self.lr}")
        check(0.0 <= self.discount <= 1.0, "algo.discount",
              f"must be in [0, 1], got {self.discount}")
        check(self.max_grad_norm > 0, "algo.max_grad_norm", "must be > 0")
        check(self.reward_clip >= 0, "algo.reward_clip", "must be >= 0")
        check(self.entropy_cost >= 0, "algo.entropy_cost", "must be >= 0")
        check(self.baseline_cost >= 0, "algo.baseline_cost", "must be >= 0")

    def check_batch(self, streams: int) -> None:
        """Raise a one-line ``ConfigError`` if a learner batch of ``streams`` streams does
        not suit this learner."""


def make_optimizer(params, cfg: LearnerConfig) -> torch.optim.Optimizer:
    """``cfg``: the learner's config. RMSProp as in IMPALA (alpha 0.99, eps 0.01) or Adam."""
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.rms_alpha, eps=cfg.rms_eps)
    return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps)


def read_metrics(metrics: dict[str, torch.Tensor | float]) -> dict[str, float]:
    """Floats from an update's metrics (waits for the device once)."""
    return {k: float(v) for k, v in metrics.items()}


class LearnerBase(ABC):
    """Owns the optimizer and LR schedule (one schedule step per rollout); subclasses
    implement ``update(rollout)``, which returns scalar metrics."""

    #: The learner's config dataclass (the ``algo`` group when ``algo.name`` names it).
    config: ClassVar[type[LearnerConfig]] = LearnerConfig
    #: Whether the update corrects for data from an older policy (``runner=auto`` may then
    #: give the env workers more streams than one batch).
    corrects_lag: ClassVar[bool] = False

    def __init__(self, agent: Agent, grad: TemporalGrad, cfg: LearnerConfig, total_updates: int,
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
