"""``rtrl-train --help`` and the configuration reference: every option of every config
dataclass, with the docstring written under its field."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field

from rtrl_rl.algos import LEARNERS
from rtrl_rl.config import CORE_BLOCKS
from rtrl_rl.config_help import field_docs, options, reference_markdown, sections
from rtrl_rl.envs.config import FAMILIES
from rtrl_rl.runners import RUNNERS


@dataclass
class _Base:
    a: int = 1
    """The a.

    Two paragraphs."""
    b: str = "x"  # a comment is not a docstring


@dataclass
class _Inner:
    """Inner options.

    More text."""

    c: float = 0.5
    """The c."""


@dataclass
class _Child(_Base):
    inner: _Inner = field(default_factory=_Inner)
    d: list[int] = field(default_factory=lambda: [1, 2])
    """The d."""


def test_field_docs_reads_attribute_docstrings_through_bases_and_nesting():
    assert field_docs(_Child) == {"a": "The a.\n\nTwo paragraphs.", "d": "The d.",
                                  "inner": "Inner options."}
    rows = options(_Child, "x.")
    assert [r[0] for r in rows] == ["x.a", "x.b", "x.inner.c", "x.d"]
    assert rows[2] == ("x.inner.c", "float", 0.5, "The c.")
    assert rows[1][3] == "" and rows[3][2] == [1, 2]


def test_every_option_has_a_docstring():
    missing = [key for _, _, rows in sections() for key, _, _, doc in rows if not doc]
    assert not missing


def test_sections_cover_every_registered_variant():
    titles = [title for title, _, _ in sections()]
    for name in LEARNERS:
        assert f"algo: {name}" in titles
    for name in RUNNERS:
        assert f"runner: {name}" in titles
    for name in FAMILIES:
        assert f"env: {name}" in titles
    for name in CORE_BLOCKS:
        assert f"model.{name}" in titles


def test_help_lists_groups_presets_and_documented_options():
    out = subprocess.run([sys.executable, "-m", "rtrl_rl.train", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "algo: impala, ppo" in text and "runner: async, auto, sync" in text
    assert "  model.lru.r_min: float = 0.9" in text
    assert "Smallest initial eigenvalue modulus" in text
    assert "  algo.epochs: int = 4" in text and "Passes over each rollout." in text


def test_reference_has_a_row_per_option():
    page = reference_markdown()
    for _, _, rows in sections():
        for key, *_ in rows:
            assert f"| `{key}` |" in page
