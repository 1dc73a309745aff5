"""Learners (IMPALA / V-trace, PPO) and their pure loss functions."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from rtrl_rl.algos.impala import ImpalaLearner
from rtrl_rl.algos.learner import LearnerBase
from rtrl_rl.algos.ppo import PPOLearner
from rtrl_rl.grad.base import TemporalGrad
from rtrl_rl.models.agent import Agent

#: ``algo.name`` -> learner class; adding a learner is its module and one entry here.
LEARNERS: dict[str, type[LearnerBase]] = {"impala": ImpalaLearner, "ppo": PPOLearner}


def make_learner(agent: Agent, grad: TemporalGrad, cfg, total_updates: int,
                 combine_grads: Callable[[list[nn.Parameter]], None] | None = None
                 ) -> LearnerBase:
    """The learner ``cfg.algo.name`` names (``cfg``: an ``AlgoConfig``)."""
    return LEARNERS[cfg.name](agent, grad, cfg, total_updates, combine_grads=combine_grads)
