"""Runners: how rollouts are collected. ``RUNNERS`` maps ``runner.kind`` to its builder
``(cfg, agent, device, env) -> runner`` and its config dataclass; each builder imports its
module when called, so that naming the kinds costs no import of the async machinery."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rtrl_rl.runners.runner_config import AsyncRunnerConfig, RunnerConfig
from rtrl_rl.runners.sizing import AutoRunnerConfig


@dataclass(frozen=True)
class RunnerKind:
    """A runner: how to build it and the dataclass of its options (the ``runner`` group)."""

    build: Callable[..., Any]
    config: type[RunnerConfig]

    def __call__(self, cfg, agent, device, env) -> Any:
        return self.build(cfg, agent, device, env)


def _sync(cfg, agent, device, env):
    from rtrl_rl.runners.sync import SyncRunner

    return SyncRunner(cfg.env, cfg.runner, agent, device, cfg.seed, env=env)


def _async(cfg, agent, device, env):
    from rtrl_rl.runners.async_runner import AsyncRunner

    return AsyncRunner(cfg, agent, device, spec=env.spec, probe_env=env)


def _auto(cfg, agent, device, env):
    raise AssertionError("runner=auto is resolved to sync or async when the config is read")


#: ``runner.kind`` -> runner. The sync runner steps the envs between updates in the learner
#: process; the async one in worker processes (``async_runner.py``); ``auto`` becomes one of
#: them, sized for the machine (``sizing.py``), when the config is read.
RUNNERS: dict[str, RunnerKind] = {"sync": RunnerKind(_sync, RunnerConfig),
                                  "async": RunnerKind(_async, AsyncRunnerConfig),
                                  "auto": RunnerKind(_auto, AutoRunnerConfig)}
