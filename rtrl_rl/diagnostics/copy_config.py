"""Options of the copy-task diagnostic: the ``CopyConfig`` dataclass and its validation.

``configs/copy/config.yaml`` holds every field of ``CopyConfig`` with its default; the
``rtrl-copy`` Hydra app (``rtrl_rl.diagnostics.copy_app``) composes that tree with the
command line, and ``validate`` types the result against ``CopyConfig``:

    rtrl-copy grad=rtrl pattern_length=50 chunk=10
    rtrl-copy -m grad=rtrl,bptt seed=0,1 steps=2000

A mistake (unknown key, unparsable value, value out of range) is a ``ConfigError`` whose
message is one line naming the key. ``compose(overrides)`` is the same composition through
Hydra's compose API, for checks before a run starts and for scripts and tests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rtrl_rl.errors import ConfigError, unknown_name
from rtrl_rl.grad import GRADS as grad_registry

#: The gradient modules, from their registry; the step-by-step reference is for tests only.
GRADS = tuple(name for name in grad_registry if name != "rtrl_reference")
OPTIMIZERS = ("adam", "rmsprop", "sgd")
DEVICES = ("cpu", "cuda")
#: Result keys a run can return as its objective (what ``+sweep=optuna`` maximizes).
OBJECTIVES = ("seq_acc", "bit_acc", "seq_acc_at_L", "bit_acc_at_L", "solved_up_to")
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs" / "copy")


def auto_forget_bias(length: int) -> float:
    """``ln(L + 1)``: initial forget gate ``f = (L+1)/(L+2)``, which maximizes a unit's
    write-then-keep factor ``(1 - f) f^(L+1)`` over the copy gap of ``L + 1`` steps.
    Also the resolver ``${auto_forget_bias:${pattern_length}}``."""
    return round(math.log(int(length) + 1), 3)


if not OmegaConf.has_resolver("auto_forget_bias"):
    OmegaConf.register_new_resolver("auto_forget_bias", auto_forget_bias)


@dataclass
class CopyConfig:
    """One copy-task run. Budgets and intervals count env steps per stream."""

    grad: str = "rtrl"  # rtrl | bptt | one_step: the only thing rtrl-vs-bptt runs change
    pattern_length: int = 10  # L; one episode is E = 2L + 1 steps
    min_length: int = 0  # > 0: each pattern's length is uniform in [min_length, L]; 0 = fixed L
    num_symbols: int = 2  # V; 2 = bits
    hidden_size: int = 128  # N, eLSTM cells
    layers: int = 1  # > 1: stacked eLSTM (RTRL is then per-layer, approximate)
    forget_bias: float = 1.0  # initial b_f
    chunk: int = 10  # M: update every M steps (1 = every step)
    batch_size: int = 32  # B: independent streams of back-to-back episodes
    episodes: int = 500  # training budget: episodes per stream (steps = episodes * E) ...
    steps: int = 0  # ... or, if > 0, env steps per stream (overrides episodes)
    optimizer: str = "adam"  # adam | rmsprop | sgd
    lr: float = 3e-2
    lr_decay: bool = False  # linear decay to 0 over the budget
    clip: float = 1.0  # global grad-norm clip; 0 = off
    stagger: bool = True  # streams start at random phases (chunks cut episodes anywhere)
    eval_every: int = 0  # env steps per stream between evaluations; 0 = 20 per run
    eval_episodes: int = 512  # fresh patterns per evaluation
    stop_at: float = 1.0  # stop once a periodic eval's whole-sequence accuracy >= this; 0 = off
    seed: int = 0
    threads: int = 1  # torch.set_num_threads; 0 = leave torch's default
    device: str = "cpu"
    quiet: bool = False  # no progress lines
    objective: str = "seq_acc"  # the final result the run returns (Optuna maximizes it)
    run_dir: str = ""  # where config.yaml, metrics.csv, results.json go ("" = nowhere)
    json: str = ""  # also write the full result to this file ("" = no)

    def __post_init__(self) -> None:
        _choice(self.grad, "grad", GRADS)
        _choice(self.optimizer, "optimizer", OPTIMIZERS)
        _choice(self.device, "device", DEVICES)
        _choice(self.objective, "objective", OBJECTIVES)
        for key in ("pattern_length", "hidden_size", "layers", "chunk", "batch_size",
                    "eval_episodes"):
            _check(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        for key in ("min_length", "episodes", "steps", "eval_every", "threads"):
            _check(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")
        _check(self.min_length <= self.pattern_length, "min_length",
               f"must be <= pattern_length={self.pattern_length}, got {self.min_length}")
        _check(self.num_symbols >= 2, "num_symbols", f"must be >= 2, got {self.num_symbols}")
        _check(self.lr >= 0, "lr", f"must be >= 0, got {self.lr}")
        _check(self.clip >= 0, "clip", f"must be >= 0 (0 = off), got {self.clip}")
        _check(0 <= self.stop_at <= 1, "stop_at", f"must be in [0, 1], got {self.stop_at}")
        _check(self.total_steps >= 1, "episodes", "the budget is empty (episodes=0, steps=0)")
        _check(not self.objective.endswith("_at_L") or 0 < self.min_length < self.pattern_length,
               "objective", f"{self.objective} needs 0 < min_length < pattern_length "
               "(varying lengths)")

    @property
    def shortest(self) -> int:
        """The shortest pattern length drawn (``pattern_length`` when lengths are fixed)."""
        return self.min_length or self.pattern_length

    @property
    def episode_len(self) -> float:
        """Mean steps per episode: 2n + 1 (pattern, delimiter, recall), n averaged over the
        pattern lengths drawn; ``2L + 1`` for fixed lengths."""
        return self.shortest + self.pattern_length + 1

    @property
    def total_steps(self) -> int:
        """Training budget in env steps per stream."""
        return self.steps if self.steps > 0 else round(self.episodes * self.episode_len)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FIELDS = tuple(f.name for f in fields(CopyConfig))


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


def _choice(value: str, key: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: {unknown_name(key, value, choices)}")


def one_line(err: Exception) -> str:
    """A Hydra or OmegaConf error as one line: the key, then the message's own lines."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("Config search path", "provider=",
                                                      "full_key:", "object_type="))]
    msg = " ".join(lines[:6]) or type(err).__name__
    key = getattr(err, "full_key", None)
    return f"{key}: {msg}" if key and key not in msg else msg


def validate(cfg: DictConfig | Mapping[str, Any]) -> CopyConfig:
    """A composed config (its ``hydra`` node ignored) as a checked ``CopyConfig``; one-line
    ``ConfigError`` for an unknown key, a value of the wrong type or out of range."""
    raw = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))
    if "hydra" in raw:  # composed with return_hydra_config: its ${hydra.job...} stay unresolved
        raw = OmegaConf.masked_copy(raw, [k for k in raw if k != "hydra"])
    try:
        container = OmegaConf.to_container(raw, resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError(one_line(e)) from None
    assert isinstance(container, dict)
    for key in container:
        if key not in FIELDS:
            raise unknown_name("key", str(key), FIELDS)
    try:
        typed = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(CopyConfig), container))
    except OmegaConfBaseException as e:
        raise ConfigError(one_line(e)) from None
    assert isinstance(typed, CopyConfig)
    return typed


def config_groups() -> tuple[str, ...]:
    """The config groups of ``configs/copy`` (``hydra``, ``sweep``, ``experiment``)."""
    return tuple(sorted(p.name for p in Path(CONFIG_DIR).iterdir() if p.is_dir()))


def check_override_keys(overrides: Sequence[str]) -> None:
    """Each override parses and sets a ``CopyConfig`` field or a config group; the error for
    a misspelt key names the closest fields (Hydra's own only says it is not in the config)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    for item in overrides:
        if "=" not in item and not item.startswith("~"):
            raise ConfigError(f"expected key=value, got '{item}'")
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as e:
        raise ConfigError(one_line(e)) from None
    groups = config_groups()
    for override in parsed:
        key = override.key_or_group
        if key.split("/")[0].split(".")[0] in groups:
            continue
        if key not in FIELDS:
            raise unknown_name("key", key, FIELDS)


def compose_many(jobs: Sequence[Sequence[str]]) -> list[CopyConfig]:
    """The checked config of each single run with these command-line overrides, composed by
    Hydra's compose API from ``configs/copy`` (``run_dir`` stays "" unless given)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    out = []
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for overrides in jobs:
            check_override_keys(overrides)
            try:
                cfg = hydra_compose("config", overrides=list(overrides))
            except (HydraException, OmegaConfBaseException) as e:
                raise ConfigError(one_line(e)) from None
            if OmegaConf.is_interpolation(cfg, "run_dir"):  # ${hydra:...}: inside a run only
                OmegaConf.set_struct(cfg, False)
                cfg.run_dir = ""
            out.append(validate(cfg))
    return out


def compose(overrides: Sequence[str] = ()) -> CopyConfig:
    """``compose_many`` for one run."""
    return compose_many([overrides])[0]
