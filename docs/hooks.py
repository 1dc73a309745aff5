"""MkDocs hook: the configuration reference page, generated from the config dataclasses.

``guide/config-reference.md`` is not a file in ``docs/``: it is written at build time (and
on every ``mkdocs serve`` rebuild) from the code, so it cannot drift from the keys the code
accepts.

The page's text comes from ``reference_markdown()``. While ``rtrl_rl.config_help`` does not
exist, a fallback below builds it from ``dataclasses.fields`` of the classes in
``rtrl_rl.config`` and ``rtrl_rl.envs.config``; once that module exists, the import picks
it up and the fallback goes.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # this checkout's package, not whichever one is installed
    sys.path.insert(0, str(ROOT))

PAGE = "guide/config-reference.md"


def _field_comments(cls: type) -> dict[str, str]:
    """Trailing ``# comments`` of a dataclass's field lines (and their continuation lines)."""
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    current = None
    for line in src.splitlines():
        m = re.match(r"\s{4}(\w+)\s*:\s*[^=#]+(?:=[^#]*)?(?:#\s*(.*))?$", line)
        if m and not line.strip().startswith(("def ", "@", "#")):
            current = m.group(1)
            if m.group(2):
                out[current] = m.group(2).strip()
            continue
        c = re.match(r"\s{4}#\s+(.*)$", line)
        if c and current in out:  # an indented continuation of the previous field's comment
            out[current] += " " + c.group(1).strip()
        elif not c:
            current = None
    return out


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
    else:
        return ""
    if dataclasses.is_dataclass(value):
        return ""
    return f"`{value!r}`".replace("|", "\\|")


def _table(cls: type, prefix: str) -> str:
    comments = _field_comments(cls)
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        if isinstance(f.type, type) and dataclasses.is_dataclass(f.type):
            continue
        typ = str(f.type).replace("|", "\\|")
        note = comments.get(f.name, "").replace("|", "\\|")
        rows.append(f"| `{prefix}{f.name}` | `{typ}` | {_default(f)} | {note} |")
    return "\n".join(rows)


def _fallback_reference() -> str:
    """The reference from ``dataclasses.fields`` of today's config classes."""
    from rtrl_rl import config
    from rtrl_rl.envs.config import FAMILIES

    parts = [
        "# Configuration reference",
        "",
        "Every key `rtrl-train` accepts, with its type and default, generated from the config",
        "dataclasses when the site is built. Config group files in `configs/` override these",
        "defaults (the default job's values are those of `configs/experiment/delayed_recall.yaml`",
        "and the groups it picks). `rtrl-train --cfg job` prints the composed config of a",
        "command line.",
        "",
    ]
    top = config.TrainConfig
    parts += ["## Top level", "", _table(top, ""), ""]
    for f in dataclasses.fields(top):
        cls = getattr(config, f.type, None) if isinstance(f.type, str) else f.type
        if isinstance(cls, type) and dataclasses.is_dataclass(cls):
            doc = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
            parts += [f"## `{f.name}`", "", doc, "", _table(cls, f"{f.name}."), ""]
    parts += ["## `env`", "",
              "The options depend on the family (`env=atari | procgen | gym | delayed_recall`);",
              "each family's keys are exactly the fields of its dataclass.", ""]
    for name, cls in FAMILIES.items():
        doc = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
        parts += [f"### `env={name}`", "", doc, "", _table(cls, "env."), ""]
    return "\n".join(parts)


# This checkout's own module only (an editable install elsewhere may have one of its own).
if (ROOT / "rtrl_rl" / "config_help.py").is_file():
    from rtrl_rl.config_help import reference_markdown
else:
    reference_markdown = _fallback_reference


def on_files(files, config):
    """Add the generated reference page before the nav is built."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=reference_markdown()))
    return files
