"""Atomic, weights_only-safe checkpoints and RNG state capture.

Checkpoints are ``ckpt_{step:012d}.pt`` files in one directory; the newest by name is the
latest, so there is no separate pointer file to go stale. Every state is written to a
temporary file, fsynced, read back with ``weights_only=True`` and only then renamed into
place: a crash or a bad state never replaces a good checkpoint with a broken one, and a
state holding a NaN or an inf is never written.
"""

from __future__ import annotations

import io
import logging
import os
import random
import re
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^ckpt_(\d+)\.pt$")
_TMP_PREFIX = ".ckpt_"
_TMP_SUFFIX = ".tmp"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written, read, or applied; the message is one line."""


def _one_line(exc: BaseException, limit: int = 200) -> str:
    """A short one-line summary of an exception (torch's messages are long, multi-line)."""
    text = " ".join(str(exc).split())
    m = re.search(r"Unsupported (global|operand).*?(?= was not|\. |$)", text)
    if m:
        text = m.group(0)
    elif ". " in text:
        text = text.split(". ")[0]
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def nonfinite_entry(state: Any, prefix: str = "") -> str | None:
    """The key path (``agent.core.w``, ``learner.optimizer.state.3.exp_avg``) of the first
    floating-point tensor in ``state`` that holds a NaN or an inf; None if there is none."""
    if isinstance(state, torch.Tensor):
        if (state.is_floating_point() or state.is_complex()) and not bool(
                torch.isfinite(state).all()):
            return prefix or "state"
        return None
    if isinstance(state, Mapping):
        items: Iterable = state.items()
    elif isinstance(state, (list, tuple)):
        items = enumerate(state)
    else:
        return None
    for key, value in items:
        found = nonfinite_entry(value, f"{prefix}.{key}" if prefix else str(key))
        if found is not None:
            return found
    return None


def checkpoint_path(ckpt_dir: str | os.PathLike, step: int) -> Path:
    """The file name a checkpoint for ``step`` gets inside ``ckpt_dir``."""
    return Path(ckpt_dir) / f"ckpt_{int(step):012d}.pt"


def list_checkpoints(ckpt_dir: str | os.PathLike) -> list[Path]:
    """All checkpoint files in ``ckpt_dir``, oldest step first (empty if the dir is missing)."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = []
    for p in ckpt_dir.iterdir():
        m = _NAME_RE.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(ckpt_dir: str | os.PathLike) -> Path | None:
    """The checkpoint with the highest step in ``ckpt_dir``, or None if there is none."""
    found = list_checkpoints(ckpt_dir)
    return found[-1] if found else None


def _fsync_dir(path: Path) -> None:
    """Persist a rename on POSIX file systems; a no-op where directories can't be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(
    ckpt_dir: str | os.PathLike,
    state: Mapping[str, Any],
    step: int,
    keep: int = 3,
    verify: bool = True,
) -> Path:
    """Atomically write ``state`` as ``ckpt_dir/ckpt_{step:012d}.pt`` and keep the newest ``keep``.

    ``state`` must hold only what ``torch.load(weights_only=True)`` accepts: tensors,
    numbers, strings, None, and lists/tuples/dicts of them (``capture_rng`` gives RNG state
    in that form). With ``verify`` the temporary file is loaded back before the rename, so
    a state that could not be resumed from fails here rather than at resume time.
    A state with a non-finite tensor (``nonfinite_entry``) is refused, so the checkpoints
    kept are always ones a run can go on from.
    Raises ``CheckpointError``; on any failure the previous checkpoints are untouched and
    no temporary file is left behind.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    bad = nonfinite_entry(state)
    if bad is not None:
        raise CheckpointError(f"not writing the checkpoint for step {step}: {bad} holds a "
                              "non-finite value; the previous checkpoints are kept")
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(ckpt_dir, step)
    # Not tempfile.mkstemp: its 0600 mode would stick to the checkpoint after the rename.
    unique = f"{int(step):012d}.{os.getpid()}.{secrets.token_hex(4)}"
    tmp = ckpt_dir / f"{_TMP_PREFIX}{unique}{_TMP_SUFFIX}"
    try:
        # Serialised in memory first: torch's own writer turns an OS error (a full disk)
        # into "file write failed", while a plain write keeps the errno and its text.
        data = io.BytesIO()
        torch.save(dict(state), data)
        with open(tmp, "xb") as f:
            f.write(data.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        if verify:
            try:
                torch.load(tmp, map_location="cpu", weights_only=True)
            except Exception as e:
                raise CheckpointError(
                    f"state for step {step} cannot be loaded with weights_only=True "
                    f"({_one_line(e)}); store tensors, numbers, strings, lists and dicts only"
                ) from e
        os.replace(tmp, final)
    except BaseException as e:  # KeyboardInterrupt too: never leave a temp file behind
        tmp.unlink(missing_ok=True)
        if isinstance(e, CheckpointError) or not isinstance(e, Exception):
            raise
        raise CheckpointError(f"could not write checkpoint {final}: {_one_line(e)}") from e
    _fsync_dir(ckpt_dir)
    _prune(ckpt_dir, final, keep)
    return final


def _prune(ckpt_dir: Path, final: Path, keep: int) -> None:
    """Keep the newest ``keep`` checkpoints up to ``final``; delete the rest and stray temps.

    Checkpoints with a higher step than the one just written belong to an abandoned attempt
    (the run was resumed from an older checkpoint), so they go too and ``final`` stays the
    latest. Assumes one writer per directory (one training process per run dir).
    """
    found = list_checkpoints(ckpt_dir)
    newer = found[found.index(final) + 1 :] if final in found else []
    older = found[: found.index(final) + 1] if final in found else found
    for old in newer + older[:-keep]:
        old.unlink(missing_ok=True)
    for stray in ckpt_dir.glob(f"{_TMP_PREFIX}*{_TMP_SUFFIX}"):
        stray.unlink(missing_ok=True)


def load_checkpoint(
    path: str | os.PathLike,
    map_location: str | torch.device | None = "cpu",
    required: Iterable[str] = (),
) -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)``.

    Raises ``CheckpointError`` (one line naming the file) if the file is missing, corrupt,
    truncated, not a checkpoint dict, or lacks any of the ``required`` top-level keys.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"cannot read checkpoint {path}: corrupt, truncated or not a torch checkpoint "
            f"({_one_line(e)})"
        ) from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a checkpoint: holds {type(state).__name__}, not dict")
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks required keys: {', '.join(missing)}")
    return state


# --------------------------------------------------------------------------- RNG state


def capture_rng() -> dict[str, Any]:
    """Snapshot the python ``random``, numpy global and torch (CPU and CUDA) RNG states.

    The result holds only tensors, ints, floats, strings, None and lists, so it survives
    ``weights_only=True`` loading. numpy ``Generator`` objects are not global; store their
    ``bit_generator.state`` yourself if you use them.
    """
    version, mt, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {
            "version": int(version),
            "state": torch.tensor(mt, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Restore RNG states captured by ``capture_rng`` (possibly after a save/load round trip).

    CUDA states are restored for as many devices as both the snapshot and this machine
    have; a mismatch in device count is logged, not fatal. Raises ``CheckpointError`` if
    the snapshot is malformed.
    """
    try:
        py = state["python"]
        mt = tuple(int(v) for v in py["state"].tolist())
        gauss = py["gauss_next"]
        random.setstate((int(py["version"]), mt, None if gauss is None else float(gauss)))

        npy = state["numpy"]
        keys = np.asarray(npy["keys"].cpu().numpy(), dtype=np.uint32)
        pos, has_gauss, cached = int(npy["pos"]), int(npy["has_gauss"]), npy["cached_gaussian"]
        np.random.set_state((npy["name"], keys, pos, has_gauss, float(cached)))

        torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
        cuda_states = list(state.get("cuda", []))
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        raise CheckpointError(f"malformed RNG state in checkpoint: {_one_line(e)}") from e

    if cuda_states or torch.cuda.is_available():
        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if have != len(cuda_states):
            log.warning(
                "checkpoint has CUDA RNG state for %d device(s), this machine has %d; "
                "restoring the first %d",
                len(cuda_states), have, min(have, len(cuda_states)),
            )
        for i in range(min(have, len(cuda_states))):
            torch.cuda.set_rng_state(cuda_states[i].cpu().to(torch.uint8), device=i)


# --------------------------------------------------------------------------- module state


def _preview(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def load_module_state(
    module: torch.nn.Module, state: Mapping[str, Any], what: str = "model"
) -> None:
    """Load ``state`` into ``module`` strictly, or raise a one-line ``CheckpointError``.

    The error lists the first few missing keys, unexpected keys and shape mismatches, so a
    checkpoint from a different architecture or config is easy to diagnose.
    """
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{what} state in checkpoint is {type(state).__name__}, not a dict")
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_preview(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch (checkpoint vs module): {_preview(shapes)}")
    if problems:
        summary = "; ".join(problems)
        raise CheckpointError(f"{what} state in checkpoint does not fit the module: {summary}")
    try:
        module.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, TypeError) as e:
        raise CheckpointError(f"cannot load {what} state: {_one_line(e)}") from e


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, state: Mapping[str, Any], what: str = "optimizer"
) -> None:
    """``optimizer.load_state_dict`` with its errors turned into a one-line ``CheckpointError``."""
    try:
        optimizer.load_state_dict(dict(state))
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise CheckpointError(f"cannot load {what} state: {_one_line(e)}") from e
