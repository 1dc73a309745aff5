"""Seed streams shared by the adapters.

Backends such as ALE and gymnasium seed stream ``b`` with ``seed + b``, so two runs with
seeds 0 and 1 would share ``B - 1`` streams. Every adapter therefore derives its backend
seed from ``(seed, split, reset index)`` through ``numpy.random.SeedSequence``: runs with
different seeds, the train and eval splits, and successive resets all get unrelated streams,
and the same arguments always give the same seed.
"""

from __future__ import annotations

import numpy as np

from rtrl_rl.errors import ConfigError, unknown_name

SPLITS = ("train", "eval")

# Room below 2**31 so that ``seed + b`` still fits an int32 for any realistic B.
_SEED_RANGE = 2**31 - 2**20


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"split: {unknown_name('split', str(split), SPLITS)}")


def derive_seed(seed: int, split: str = "train", index: int = 0) -> int:
    """A deterministic backend seed in ``[0, 2**31 - 2**20)`` for ``(seed, split, index)``."""
    check_split(split)
    entropy = [int(seed) & 0xFFFFFFFF, SPLITS.index(split), int(index)]
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint32)[0]
    return int(state) % _SEED_RANGE


class SeedStream:
    """Hands out the backend seed for each ``reset``.

    Reset ``k`` gets ``derive_seed(seed, split, k)``, so repeated resets do not replay the
    same episodes. ``next(s)`` with an explicit ``s`` re-bases the stream on ``s`` first: an
    env reset with ``seed=s`` behaves exactly like a fresh env built with ``seed=s``.
    """

    def __init__(self, seed: int, split: str) -> None:
        check_split(split)
        self.seed = int(seed)
        self.split = split
        self.resets = 0

    def next(self, override: int | None = None) -> int:
        if override is not None:
            self.seed, self.resets = int(override), 0
        value = derive_seed(self.seed, self.split, self.resets)
        self.resets += 1
        return value
