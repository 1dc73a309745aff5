"""MkDocs hook: the configuration reference page, generated from the config dataclasses.

``guide/config-reference.md`` is not a file in ``docs/``: it is written at build time (and
on every ``mkdocs serve`` rebuild) by ``rtrl_rl.config_help.reference_markdown()``, from the
fields and their docstrings, so it cannot drift from the keys the code accepts.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # this checkout's package, not whichever one is installed
    sys.path.insert(0, str(ROOT))

PAGE = "guide/config-reference.md"


def on_files(files, config):
    """Add the generated reference page before the nav is built."""
    from mkdocs.structure.files import File

    from rtrl_rl.config_help import reference_markdown

    files.append(File.generated(config, PAGE, content=reference_markdown()))
    return files
