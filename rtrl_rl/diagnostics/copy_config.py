"""Options of the copy-task diagnostic and their ``key=value`` command-line parser.

    python -m rtrl_rl.diagnostics.copy_task grad=rtrl pattern_length=50 chunk=10
    rtrl-copy grad=bptt pattern_length=20 hidden_size=256 --json out.json

Every option is a field of ``CopyConfig``; a mistake (unknown key, unparsable value, value
out of range) raises ``ConfigError`` whose message is one line naming the key. No Hydra: the
diagnostic has a flat option set and starts in well under a second.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, fields
from typing import Any

from rtrl_rl.errors import ConfigError, unknown_name

GRADS = ("rtrl", "bptt", "one_step")
OPTIMIZERS = ("adam", "rmsprop", "sgd")
DEVICES = ("cpu", "cuda")


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

    def __post_init__(self) -> None:
        _choice(self.grad, "grad", GRADS)
        _choice(self.optimizer, "optimizer", OPTIMIZERS)
        _choice(self.device, "device", DEVICES)
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


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


def _choice(value: str, key: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: {unknown_name(key, value, choices)}")


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _convert(key: str, kind: type, text: str) -> Any:
    """Parse ``text`` as the type of field ``key``; one-line ``ConfigError`` if it is not."""
    if kind is bool:
        low = text.lower()
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
        raise ConfigError(f"{key}: expected a boolean (true/false), got '{text}'")
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"{key}: expected {kind.__name__}, got '{text}'") from None


def config_types() -> dict[str, type]:
    """Field name -> its Python type (``str``, ``int``, ``float`` or ``bool``)."""
    named = {"str": str, "int": int, "float": float, "bool": bool}
    return {f.name: (named[f.type] if isinstance(f.type, str) else f.type)
            for f in fields(CopyConfig)}


def parse_overrides(items: list[str], base: dict[str, Any] | None = None) -> CopyConfig:
    """``["key=value", ...]`` (applied over ``base``) -> a validated ``CopyConfig``."""
    types = config_types()
    values: dict[str, Any] = dict(base or {})
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().lstrip("+")
        if not sep or not key:
            raise ConfigError(f"expected key=value, got '{item}'")
        if key not in types:
            close = difflib.get_close_matches(key, list(types), n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(close)}?" if close else "see --help for the keys"
            raise ConfigError(f"unknown key '{key}'; {hint}")
        values[key] = _convert(key, types[key], text.strip())
    return CopyConfig(**values)


def usage(prog: str = "rtrl-copy") -> str:
    """The ``--help`` text: every key with its default."""
    lines = [
        f"usage: {prog} [key=value ...] [--json PATH]",
        "",
        "Supervised copy task with an eLSTM + linear readout, trained online on back-to-back",
        "episodes (state and RTRL sensitivities carried across chunks, reset at episode",
        "starts). Progress goes to stderr; the final result is one JSON line on stdout.",
        "",
        "keys (default):",
    ]
    for f in fields(CopyConfig):
        lines.append(f"  {f.name}={getattr(CopyConfig, f.name)}")
    return "\n".join(lines)
