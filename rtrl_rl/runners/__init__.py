"""Runners: how rollouts are collected. ``RUNNERS`` maps ``runner.kind`` to a builder
``(cfg, agent, device, env) -> runner``; each imports its module when called, so that
naming the kinds costs no import of the async machinery."""

from __future__ import annotations


def _sync(cfg, agent, device, env):
    from rtrl_rl.runners.sync import SyncRunner

    return SyncRunner(cfg.env, cfg.runner, agent, device, cfg.seed, env=env)


def _async(cfg, agent, device, env):
    from rtrl_rl.runners.async_runner import AsyncRunner

    return AsyncRunner(cfg, agent, device, spec=env.spec, probe_env=env)


#: ``runner.kind`` -> builder. The sync runner steps the envs between updates in the learner
#: process; the async one in worker processes (``async_runner.py``).
RUNNERS = {"sync": _sync, "async": _async}
