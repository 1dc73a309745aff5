"""Env options: one dataclass per family, checked before any environment is built.

An env config is a flat mapping ``{"family": ..., **options}``; the option keys are exactly
the fields of the family's dataclass (``configs/env/*.yaml`` list them with their defaults).
``parse_env_config`` fills defaults, rejects unknown keys and ill-typed values, and runs the
family's range and name checks; every failure is a one-line ``ConfigError`` that starts with
the offending key, e.g. ``env.sticky_actions: must be in [0, 1], got 1.5``. ``num_envs`` is not
an env option: the runner passes it to ``make_env``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

from rtrl_rl.envs.guard import NONFINITE_MODES
from rtrl_rl.envs.registry import FAMILIES, family_config
from rtrl_rl.errors import ConfigError, unknown_name

PROCGEN_GAMES = (
    "bigfish", "bossfight", "caveflyer", "chaser", "climber", "coinrun", "dodgeball", "fruitbot",
    "heist", "jumper", "leaper", "maze", "miner", "ninja", "plunder", "starpilot",
)
# Which games accept the non-standard modes (the procgen library asserts in C++ and aborts the
# process otherwise, so we check first). Verified against the shipped binary.
PROCGEN_MODE_GAMES = {
    "extreme": ("chaser", "dodgeball", "leaper", "starpilot"),
    "memory": ("caveflyer", "dodgeball", "heist", "jumper", "maze", "miner"),
    "exploration": (
        "caveflyer", "climber", "coinrun", "heist", "jumper", "leaper", "maze", "ninja",
    ),
}
PROCGEN_MODES = ("easy", "hard", "extreme", "memory", "exploration")
INT32_MAX = 2**31 - 1


def _fail(key: str, msg: str) -> ConfigError:
    return ConfigError(f"env.{key}: {msg}")


def _require(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise _fail(key, msg)


@dataclass
class EnvOptions:
    """The options every family shares."""

    nonfinite: str = "error"
    """A non-finite reward or float observation: ``error`` (save, then exit 2), ``zero``
    (zero the bad entries) or ``reset`` (end that stream's episode)."""

    def __post_init__(self) -> None:
        if self.nonfinite not in NONFINITE_MODES:
            raise _fail("nonfinite", str(unknown_name("nonfinite mode", str(self.nonfinite),
                                                      NONFINITE_MODES)))

    def check(self) -> None:
        """Raise a one-line ``ConfigError("env.<key>: ...")`` for a bad value; the checks
        that import a backend or look names up go here (``parse_env_config`` calls it),
        nothing is built."""


@dataclass
class AtariConfig(EnvOptions):
    """ALE through its native vectorized backend. Defaults are the reference settings."""

    family: ClassVar[str] = "atari"
    game: str = "pong"
    """ROM id in snake_case, e.g. ``ms_pacman``."""
    frameskip: int = 4
    """Action repeat; frames are max-pooled over the last two."""
    frame_stack: int = 4
    """Frames stacked into one observation."""
    frame_size: int = 84
    """Side of the square grayscale frames."""
    noop_max: int = 30
    """No-op starts: ``d`` frames after each reset, ``d`` uniform in ``[0, noop_max - 1]``
    (frames, not agent steps). A ``fire_reset`` press comes first and is one of them (it
    happens even when ``d = 0``)."""
    sticky_actions: float = 0.0
    """``repeat_action_probability`` (Machado et al. use 0.25)."""
    full_action_space: bool = False
    """All 18 actions (false: the game's minimal action set)."""
    episodic_life: bool = False
    """A life loss starts a new learner episode (see ``envs/atari.py``)."""
    fire_reset: bool = True
    """Press FIRE after a reset in games that need it."""
    max_episode_frames: int = 108_000
    """Truncate episodes after this many emulator frames of play (30 minutes at 60 Hz; the
    reset's FIRE and no-op frames do not count)."""
    num_threads: int = 0
    """Backend worker threads (0: one per CPU core)."""

    def check(self) -> None:
        from ale_py import roms

        if self.game not in roms.get_all_rom_ids():
            raise _fail("game", str(unknown_name("Atari game", self.game, roms.get_all_rom_ids())))
        _require(self.frameskip >= 1, "frameskip", f"must be >= 1, got {self.frameskip}")
        _require(self.frame_stack >= 1, "frame_stack", f"must be >= 1, got {self.frame_stack}")
        _require(self.frame_size >= 8, "frame_size", f"must be >= 8, got {self.frame_size}")
        _require(self.noop_max >= 0, "noop_max", f"must be >= 0, got {self.noop_max}")
        _require(0.0 <= self.sticky_actions <= 1.0, "sticky_actions",
                 f"must be in [0, 1], got {self.sticky_actions}")
        _require(self.max_episode_frames >= 1, "max_episode_frames",
                 f"must be >= 1, got {self.max_episode_frames}")
        _require(self.num_threads >= 0, "num_threads", f"must be >= 0, got {self.num_threads}")


@dataclass
class ProcgenConfig(EnvOptions):
    """ProcGen (the compiled games, driven by ``procgen_lib``). Train levels are
    ``[start_level, start_level + num_levels)`` (``num_levels = 0``: all levels). The eval
    split uses ``num_eval_levels`` levels from ``eval_start_level`` (default: the first level
    after the training range); 0 means every level from there upward, i.e. levels never seen
    in training."""

    family: ClassVar[str] = "procgen"
    game: str = "coinrun"
    """The ProcGen game."""
    distribution_mode: str = "hard"
    """``easy``, ``hard``, ``extreme``, ``memory`` or ``exploration`` (not every game has
    every mode)."""
    num_levels: int = 500
    """Training levels (0: all levels)."""
    start_level: int = 0
    """First training level."""
    eval_start_level: int | None = None
    """First level of the eval split (default: the first after the training range)."""
    eval_num_levels: int = 0
    """Levels in the eval split (0: every level from ``eval_start_level`` upward)."""
    num_threads: int = 0
    """Backend stepping threads (0: step in the calling thread)."""
    use_backgrounds: bool = True
    """ProcGen's background images."""
    center_agent: bool = True
    """Center the view on the agent."""
    paint_vel_info: bool = False
    """Paint velocity information into the frame."""

    def check(self) -> None:
        if self.game not in PROCGEN_GAMES:
            raise _fail("game", str(unknown_name("ProcGen game", self.game, PROCGEN_GAMES)))
        mode = self.distribution_mode
        if mode not in PROCGEN_MODES:
            raise _fail("distribution_mode",
                        str(unknown_name("distribution_mode", mode, PROCGEN_MODES)))
        if mode in PROCGEN_MODE_GAMES and self.game not in PROCGEN_MODE_GAMES[mode]:
            raise _fail("distribution_mode", f"'{mode}' is not supported by {self.game}; "
                        f"games with it: {', '.join(PROCGEN_MODE_GAMES[mode])}")
        _require(self.num_levels >= 0, "num_levels", f"must be >= 0, got {self.num_levels}")
        _require(self.start_level >= 0, "start_level", f"must be >= 0, got {self.start_level}")
        _require(self.start_level + self.num_levels <= INT32_MAX, "num_levels",
                 "start_level + num_levels must fit in int32")
        if self.eval_start_level is not None:
            _require(self.eval_start_level >= 0, "eval_start_level",
                     f"must be >= 0, got {self.eval_start_level}")
        _require(self.eval_num_levels >= 0, "eval_num_levels",
                 f"must be >= 0, got {self.eval_num_levels}")
        _require(self.eval_levels()[0] + self.eval_num_levels <= INT32_MAX, "eval_num_levels",
                 "eval_start_level + eval_num_levels must fit in int32")
        _require(self.num_threads >= 0, "num_threads", f"must be >= 0, got {self.num_threads}")

    def eval_levels(self) -> tuple[int, int]:
        """``(start_level, num_levels)`` of the eval split, in the backend's terms."""
        start = self.eval_start_level
        if start is None:
            start = self.start_level + self.num_levels
        count = self.eval_num_levels if self.eval_num_levels > 0 else INT32_MAX - start
        return start, max(count, 1)


@dataclass
class GymConfig(EnvOptions):
    """Any registered gymnasium id (``module:EnvId`` imports ``module`` first, for ids that
    register on import). Spaces: see ``gym_spaces.py``; wrappers: ``wrappers.py``."""

    family: ClassVar[str] = "gym"
    id: str = "CartPole-v1"
    """A registered gymnasium id; ``module:EnvId`` imports ``module`` first."""
    vectorization: str = "sync"
    """``sync`` (one process) or ``async`` (one worker process per stream)."""
    max_episode_steps: int | None = None
    """Override the registered time limit."""
    make_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for ``gymnasium.make``."""
    wrappers: list[Any] = field(default_factory=list)
    """Hydra specs (``_target_``: a wrapper class) applied in order."""

    def check(self) -> None:
        import gymnasium

        from rtrl_rl.envs.wrappers import check_wrappers

        _require(self.vectorization in ("sync", "async"), "vectorization",
                 str(unknown_name("vectorization", self.vectorization, ("sync", "async"))))
        env_id = self.id
        if ":" in env_id:  # "module:Env-v0" registers its envs on import
            module, env_id = env_id.split(":", 1)
            try:
                __import__(module)
            except ImportError as e:
                raise _fail("id", f"cannot import module '{module}': {e}") from None
        if env_id not in gymnasium.registry:
            raise _fail("id", str(unknown_name("gymnasium id", env_id, gymnasium.registry))
                        + _import_hint(env_id))
        check_wrappers(self.wrappers)
        if self.max_episode_steps is not None:
            _require(self.max_episode_steps >= 1, "max_episode_steps",
                     f"must be >= 1, got {self.max_episode_steps}")
        if self.wrappers:  # one wrapped env now, so a wrapper that fails is named before a run
            from rtrl_rl.envs.wrappers import apply_wrappers

            raw = gymnasium.make(env_id, **self.make_kwargs)
            try:
                apply_wrappers(raw, self.wrappers).close()
            finally:
                raw.close()


#: Id prefixes of well-known suites that register their envs on import.
_SUITES = {"ALE/": "ale_py", "MiniGrid-": "minigrid", "BabyAI-": "minigrid", "popgym-": "popgym",
           "MiniHack-": "minihack"}


def _import_hint(env_id: str) -> str:
    """The tail of an unknown id's error: how to make an id that registers on import work."""
    module = next((m for prefix, m in _SUITES.items() if env_id.startswith(prefix)), None)
    if module is not None:
        return f" ('{env_id}' looks like {module}'s; try env.id={module}:{env_id})"
    return (f" (if a package registers it on import, name the module: "
            f"env.id=module:{env_id})")


@dataclass
class DelayedRecallConfig(EnvOptions):
    """Cue, ``delay`` blank steps (or uniform in ``[delay, delay_max]``), query; name the cue.
    ``distractors``: random cue-like observations instead of blanks; ``dense_reward``: score
    every action, ``1 / (D + 2)`` each; ``cue_flag``: an input column marking the cue."""

    family: ClassVar[str] = "delayed_recall"
    num_cues: int = 4
    """Cues K to choose from (the actions)."""
    delay: int = 30
    """Blank steps D between the cue and the query."""
    delay_max: int | None = None
    """If set, each episode's delay is uniform in ``[delay, delay_max]``."""
    distractors: bool = False
    """Random cue-like observations instead of blanks during the delay."""
    dense_reward: bool = False
    """Score every action, ``1 / (D + 2)`` each, instead of only the answer."""
    cue_flag: bool = False
    """An input column marking the cue step."""

    def check(self) -> None:
        _require(self.num_cues >= 2, "num_cues", f"must be >= 2, got {self.num_cues}")
        _require(self.delay >= 0, "delay", f"must be >= 0, got {self.delay}")
        if self.delay_max is not None:
            _require(self.delay_max >= self.delay, "delay_max",
                     f"must be >= delay ({self.delay}), got {self.delay_max}")


#: The built-in families' options (a plugin's family is any ``EnvOptions`` subclass).
EnvConfig = AtariConfig | ProcgenConfig | GymConfig | DelayedRecallConfig


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is not None:  # dict[str, Any]
        return isinstance(value, origin)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def _type_name(annotation: Any) -> str:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if annotation is type(None):
        return "null"
    return getattr(typing.get_origin(annotation) or annotation, "__name__", str(annotation))


def _plain(value: Any) -> Any:
    """OmegaConf containers and other mappings -> plain dicts (lists stay lists)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return [_plain(v) for v in value]
    return value


def parse_env_config(cfg: Mapping[str, Any]) -> EnvOptions:
    """Fill defaults and check ``cfg``; return the family's dataclass instance.

    Raises a one-line ``ConfigError`` naming the bad key or value.
    """
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"env: expected a mapping of options, got {type(cfg).__name__}")
    options = _plain(cfg)
    if "family" not in options:
        raise _fail("family", f"missing; choices: {', '.join(sorted(FAMILIES))}")
    family = options.pop("family")
    schema = family_config(str(family))
    hints = typing.get_type_hints(schema)
    names = [f.name for f in dataclasses.fields(schema)]
    for key, value in options.items():
        if key == "num_envs":
            raise _fail(key, "is not an env option; the runner passes num_envs to make_env")
        if key not in names:
            raise ConfigError(f"env: {unknown_name(f'{family} option', key, names)}")
        if not _type_ok(value, hints[key]):
            raise _fail(key, f"expected {_type_name(hints[key])}, got "
                        f"{type(value).__name__} {value!r}")
    parsed = schema(**options)
    parsed.check()
    return parsed


def validate_env_config(cfg: Mapping[str, Any]) -> None:
    """Check an env config without building anything; raises a one-line ``ConfigError``."""
    parse_env_config(cfg)
