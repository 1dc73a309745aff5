"""Learners (IMPALA / V-trace, PPO) and their pure loss functions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, is_dataclass
from typing import TypeVar

from torch import nn

from rtrl_rl.algos.impala import ImpalaLearner
from rtrl_rl.algos.learner import LearnerBase, LearnerConfig
from rtrl_rl.algos.ppo import PPOLearner
from rtrl_rl.errors import PluginError
from rtrl_rl.grad.base import TemporalGrad
from rtrl_rl.models.agent import Agent

#: ``algo.name`` -> learner class. A built-in learner is one entry here (its preset is
#: ``configs/algo/<name>.yaml``); a plugin's calls ``register_learner`` from its own module.
LEARNERS: dict[str, type[LearnerBase]] = {"impala": ImpalaLearner, "ppo": PPOLearner}

L = TypeVar("L", bound=type[LearnerBase])


def register_learner(cls: L, preset: bool = True) -> L:
    """Add the learner class ``cls`` under the default of its config's ``name`` field
    (``cls.config``, a ``LearnerConfig`` subclass that sets ``name: str = "<name>"``); also
    usable as a class decorator.

    ``preset``: make ``algo=<name>`` a Hydra preset of the config's defaults, as
    ``configs/algo/<name>.yaml`` is for the built-ins. The config reads the registry when
    ``rtrl_rl.config`` is first imported, so a plugin registers before that
    (``rtrl_rl.plugins``). A taken or malformed name is a one-line ``PluginError``."""
    if not (isinstance(cls, type) and issubclass(cls, LearnerBase)):
        raise PluginError(f"register_learner: {cls!r} is not a LearnerBase subclass")
    config = cls.config
    if not (is_dataclass(config) and issubclass(config, LearnerConfig)) or \
            config is LearnerConfig:
        raise PluginError(f"register_learner: {cls.__qualname__}.config must be a "
                          f"LearnerConfig subclass of its own")
    name = {f.name: f.default for f in fields(config)}["name"]
    if name in LEARNERS:
        raise PluginError(f"learner '{name}' is already registered "
                          f"({LEARNERS[name].__module__}.{LEARNERS[name].__qualname__}); "
                          f"set {config.__qualname__}.name's default to a name of its own")
    LEARNERS[name] = cls
    if preset:
        from rtrl_rl.plugins import store_preset

        store_preset("algo", name, config)
    return cls


def make_learner(agent: Agent, grad: TemporalGrad, cfg, total_updates: int,
                 combine_grads: Callable[[list[nn.Parameter]], None] | None = None
                 ) -> LearnerBase:
    """The learner ``cfg.algo.name`` names (``cfg``: an ``AlgoConfig``)."""
    return LEARNERS[cfg.name](agent, grad, cfg, total_updates, combine_grads=combine_grads)
