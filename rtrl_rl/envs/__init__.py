"""Environments: one ``VecEnv`` protocol (``base.py``), one adapter per family.

    env = make_env({"family": "atari", "game": "breakout"}, num_envs=32, seed=0)
    ts = env.reset()                    # TimeStep: obs [B, 4, 84, 84] uint8, first = 1
    ts = env.step(actions)              # actions [B, *spec.action.shape]; auto-resets too
    env.spec                            # EnvSpec(obs_shape, obs_dtype, num_envs, action, ...)

Every env ``make_env`` returns is wrapped in ``guard.CheckedEnv``: non-finite rewards and
observations and wrong shapes are stopped there (``env.nonfinite``).

Families and their options (the fields of the dataclasses in ``config.py``):
``atari`` (AtariConfig), ``procgen`` (ProcgenConfig), ``gym`` (GymConfig) and the built-in
memory task ``delayed_recall`` (DelayedRecallConfig), each entered at the bottom of this
module with ``register_env_family`` (``registry.py``), as a plugin's family is from its own
module. The supervised copy task lives in ``copy_task.py`` (not a ``VecEnv``).

Optional extras beyond the protocol, looked up with ``getattr`` by the runners:
``reset_streams`` (gymnasium: restart some streams, for ``env.nonfinite=reset``),
``frames_per_step`` (Atari: the frameskip, so frame counters count emulator frames; 1 when
absent) and ``state_dict`` / ``load_state_dict`` (delayed_recall, procgen: exact resume from a
checkpoint; Atari and gymnasium envs restart their episodes on resume).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rtrl_rl.envs.base import EnvSpec, EpisodeTracker, TimeStep, VecEnv
from rtrl_rl.envs.config import (
    FAMILIES,
    AtariConfig,
    DelayedRecallConfig,
    EnvConfig,
    EnvOptions,
    GymConfig,
    ProcgenConfig,
    family_config,
    parse_env_config,
    validate_env_config,
)
from rtrl_rl.envs.guard import CheckedEnv
from rtrl_rl.envs.registry import build_adapter, register_env_family
from rtrl_rl.envs.seeding import check_split
from rtrl_rl.errors import ConfigError

__all__ = [
    "FAMILIES",
    "AtariConfig",
    "ConfigError",
    "DelayedRecallConfig",
    "EnvConfig",
    "EnvOptions",
    "EnvSpec",
    "EpisodeTracker",
    "GymConfig",
    "ProcgenConfig",
    "TimeStep",
    "VecEnv",
    "family_config",
    "make_env",
    "parse_env_config",
    "register_env_family",
    "validate_env_config",
]


def make_env(
    cfg: Mapping[str, Any] | EnvOptions, num_envs: int, seed: int, split: str = "train"
) -> VecEnv:
    """Build ``num_envs`` streams of the env described by ``cfg``.

    ``cfg``: ``{"family": ..., **options}`` (validated first; defaults fill missing options)
    or an already parsed family dataclass. ``split``: ``"train"`` or ``"eval"``; for ProcGen
    ``"eval"`` selects the held-out evaluation levels, for every family it selects a separate
    seed stream. Backend seeds derive from ``(seed, split)``, so runs repeat exactly.
    """
    if isinstance(cfg, EnvOptions):
        parsed = cfg
        parsed.check()
    else:
        parsed = parse_env_config(cfg)
    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise ConfigError(f"num_envs: must be an int >= 1, got {num_envs!r}")
    check_split(split)
    return CheckedEnv(build_adapter(parsed, num_envs, seed, split), env_label(parsed),
                      parsed.nonfinite)


def env_label(parsed: EnvOptions) -> str:
    """The env's name in messages: ``family:game`` or ``gym:id`` (the family alone for the
    built-in task)."""
    name = getattr(parsed, "id", None) or getattr(parsed, "game", None)
    return f"{parsed.family}:{name}" if name else parsed.family


def _atari(parsed: AtariConfig, num_envs: int, seed: int, split: str) -> VecEnv:
    from rtrl_rl.envs.atari import AtariEnv

    return AtariEnv(parsed, num_envs, seed, split)


def _procgen(parsed: ProcgenConfig, num_envs: int, seed: int, split: str) -> VecEnv:
    from rtrl_rl.envs.procgen import ProcgenEnv

    return ProcgenEnv(parsed, num_envs, seed, split)


def _gym(parsed: GymConfig, num_envs: int, seed: int, split: str) -> VecEnv:
    from rtrl_rl.envs.gym import GymEnv

    return GymEnv(parsed, num_envs, seed, split)


def _delayed_recall(parsed: DelayedRecallConfig, num_envs: int, seed: int,
                    split: str) -> VecEnv:
    from rtrl_rl.envs.delayed_recall import DelayedRecallEnv

    return DelayedRecallEnv(parsed, num_envs, seed, split)


for _options, _build in ((AtariConfig, _atari), (ProcgenConfig, _procgen), (GymConfig, _gym),
                         (DelayedRecallConfig, _delayed_recall)):
    register_env_family(_options, _build, preset=False)  # presets: configs/env/<family>.yaml
del _options, _build
