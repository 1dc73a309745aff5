"""A core's own options: a dataclass per core class (``Core.options``), filled from the config
block named for the core (``model.elstm``, ``model.rtu``, ...) and passed to its constructor
as keyword arguments. Each field carries a docstring; ``rtrl-train --help`` and the docs'
configuration reference read them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CoreOptions:
    """A core without options of its own (the feed-forward core)."""

    def check(self) -> None:
        """Raise ``ConfigError("field: reason")`` for an out-of-range value; the caller adds
        the block's prefix."""
