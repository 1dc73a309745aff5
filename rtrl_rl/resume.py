"""Resume: find the newest loadable checkpoint and check the config against it.

A run's config has three kinds of keys on resume:

- keys that define shapes or carried state (``MUST_MATCH``) must equal the checkpoint's, or
  the run stops before anything starts with one line listing every difference;
- ``IGNORED`` keys say how to start, not what runs;
- every other key may change (budget, logging, checkpoint interval, learning rate, loss
  weights, ...): the new value is applied and logged, so ``config.yaml`` says what runs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rtrl_rl.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
from rtrl_rl.errors import ConfigError

log = logging.getLogger(__name__)

#: Dotted keys (or ``prefix.`` for a whole group) that a resumed run must keep.
MUST_MATCH = ("env.", "model.", "grad.name", "runner.num_envs", "runner.unroll",
              "algo.optimizer", "algo.name", "seed")
#: Execution options inside those groups, free to change on resume.
MAY_CHANGE = ("model.amp", "model.compile_stem", "env.nonfinite")
IGNORED = ("resume",)
#: Keys added after checkpoints were first written, with the value that behaves as before:
#: a checkpoint whose config lacks one resumes as if it had that value.
ADDED = {"model.rtu.recurrence": "linear", "model.rtu.readout": "relu",
         **{f"model.{core}.{k}": v for core in ("rtu", "lru")
            for k, v in (("r_min", 0.9), ("r_max", 0.999), ("max_phase", 6.283185307179586))},
         "env.distractors": False, "env.dense_reward": False, "env.wrappers": [],
         "distributed.nproc_per_node": 0, "algo.name": "impala",
         "algo.epochs": 4, "algo.minibatches": 4, "algo.clip_eps": 0.2,
         "algo.value_clip_eps": 0.2, "algo.gae_lambda": 0.95,
         "algo.normalize_advantages": True,
         "distributed.rdzv_port": 29500, "model.first_input": False,
         "env.nonfinite": "error", "algo.max_skipped_updates": 10}
_TRUE = ("true", "1", "yes")


def _same(a: Any, b: Any) -> bool:
    """Config values equal, NaN equal to NaN (a NaN in the config must not block resume)."""
    return a == b or (isinstance(a, float) and isinstance(b, float) and a != a and b != b)


def resume_target(value: str, run_dir: str) -> Path | None:
    """``resume``: false | true (this run_dir) | a run dir or a checkpoint file."""
    value = str(value)
    if value.lower() in ("false", "0", "no", ""):
        return None
    return Path(run_dir) if value.lower() in _TRUE else Path(value)


def load_resume_checkpoint(value: str, run_dir: str,
                           required: Iterable[str]) -> tuple[Path, dict] | None:
    """The newest checkpoint that loads, with its state; None when resuming this run_dir
    before its first checkpoint. An unreadable newest checkpoint is skipped with a warning;
    ``ConfigError`` (one line) when nothing can be resumed from."""
    target = resume_target(value, run_dir)
    if target is None:
        return None
    required = tuple(required)
    if target.is_file():
        try:
            return target, load_checkpoint(target, required=required)
        except CheckpointError as e:
            raise ConfigError(f"resume: {e}") from None
    candidates = list_checkpoints(target / "checkpoints") if target.is_dir() else []
    if not candidates:
        if str(value).lower() in _TRUE:
            log.info("resume=true but %s has no checkpoint yet: starting fresh", target)
            return None
        raise ConfigError(f"resume: no checkpoint found under '{target}'")
    problems = []
    for path in reversed(candidates):
        try:
            state = load_checkpoint(path, required=required)
        except CheckpointError as e:
            problems.append(str(e))
            log.warning("skipping unreadable checkpoint: %s", e)
            continue
        if problems:
            log.warning("resuming from %s, the newest checkpoint that loads", path.name)
        return path, state
    raise ConfigError(f"resume: none of the {len(candidates)} checkpoints under "
                      f"'{target}' loads; newest: {problems[0]}")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _must_match(key: str) -> bool:
    if key in MAY_CHANGE:
        return False
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in MUST_MATCH)


def check_resume_config(saved: Mapping[str, Any], current: Mapping[str, Any],
                        source: Path) -> list[str]:
    """Compare the checkpoint's config with this run's. Returns ``key: old -> new`` for each
    changed key that will be applied; ``ConfigError`` listing every key that may not change.
    A config saved by an older version is read in today's layout (``upgrade_saved``); the
    option blocks of cores other than the run's are not compared."""
    from rtrl_rl.config import CORE_BLOCKS, upgrade_saved

    old, new = flatten(upgrade_saved(saved)), flatten(current)
    old = {**{k: v for k, v in ADDED.items() if k in new}, **old}
    idle = tuple(f"model.{b}." for b in CORE_BLOCKS if b != new.get("model.core"))
    old, new = ({k: v for k, v in d.items() if not k.startswith(idle)} for d in (old, new))
    changed = sorted(k for k in old.keys() | new.keys()
                     if k not in IGNORED and not _same(old.get(k, "<unset>"),
                                                       new.get(k, "<unset>")))

    def pair(k: str) -> str:
        return f"{k}: {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}"

    # model.stem=auto picks a stem from the env's observations: resuming a run that named
    # one is fine when auto picks the same, and loading the weights fails when it does not
    fatal = [pair(k) for k in changed
             if _must_match(k) and not (k == "model.stem" and new.get(k) == "auto")]
    if fatal:
        raise ConfigError(f"resume: the config differs from checkpoint {source.name} in keys "
                          f"that define shapes or carried state: {'; '.join(fatal)}")
    return [pair(k) for k in changed]
