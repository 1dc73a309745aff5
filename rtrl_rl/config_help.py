"""The options of ``rtrl-train``, read from the config dataclasses: ``rtrl-train --help`` and
the docs' configuration reference. Every field's documentation is its attribute docstring
(the string literal under the field), so the text lives in one place, beside the field."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from functools import cache
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@cache
def _class_docs(cls: type) -> dict[str, str]:
    """``field -> docstring`` for the fields ``cls`` itself declares."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):  # made at run time (make_dataclass): no source of its own
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for stmt, nxt in zip(body, body[1:], strict=False):
        if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            docs[stmt.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


def field_docs(cls: type) -> dict[str, str]:
    """``field -> docstring`` of a dataclass, its bases' fields included; a field whose type
    is a dataclass and has no docstring of its own gets the first line of that class's."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        docs.update(_class_docs(klass))
    for f in dataclasses.fields(cls):
        value = _default(f)
        if f.name not in docs and dataclasses.is_dataclass(value):
            docs[f.name] = (type(value).__doc__ or "").strip().splitlines()[0]
    return docs


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return "???"


def _type_name(t: Any) -> str:
    return t.__name__ if isinstance(t, type) else str(t).replace("typing.", "")


def options(cls: type, prefix: str) -> list[tuple[str, str, Any, str]]:
    """``(key, type, default, doc)`` for every leaf option of the dataclass ``cls``, keys
    under ``prefix`` (nested dataclass fields are expanded)."""
    docs, rows = field_docs(cls), []
    for f in dataclasses.fields(cls):
        key, value = f"{prefix}{f.name}", _default(f)
        if dataclasses.is_dataclass(value):
            rows.extend(options(type(value), key + "."))
        else:
            rows.append((key, _type_name(f.type), value, docs.get(f.name, "")))
    return rows


def sections() -> list[tuple[str, str, list[tuple[str, str, Any, str]]]]:
    """``(title, what selects it, options)`` for every dataclass ``rtrl-train`` reads."""
    from rtrl_rl.algos import LEARNERS
    from rtrl_rl.config import CORE_BLOCKS, DistConfig, GradConfig, ModelBase, TrainConfig
    from rtrl_rl.envs.config import FAMILIES
    from rtrl_rl.models.registry import CORES
    from rtrl_rl.run_logger import LoggerConfig
    from rtrl_rl.runners import RUNNERS

    out = []
    groups = {f.name for f in dataclasses.fields(TrainConfig)
              if dataclasses.is_dataclass(_default(f)) or f.name == "env"}
    top = [r for r in options(TrainConfig, "") if r[0].split(".")[0] not in groups]
    out.append(("Run", "always", top))
    for name, cls in FAMILIES.items():
        out.append((f"env: {name}", f"env={name}", options(cls, "env.")))
    out.append(("model", "always", options(ModelBase, "model.")))
    for name in CORE_BLOCKS:
        out.append((f"model.{name}", f"model.core={name}",
                    options(CORES[name].options, f"model.{name}.")))
    out.append(("grad", "always", options(GradConfig, "grad.")))
    for name, learner in LEARNERS.items():
        out.append((f"algo: {name}", f"algo={name}", options(learner.config, "algo.")))
    for name, runner in RUNNERS.items():
        out.append((f"runner: {name}", f"runner={name}", options(runner.config, "runner.")))
    out.append(("logger", "always", options(LoggerConfig, "logger.")))
    out.append(("distributed", "always", options(DistConfig, "distributed.")))
    return out


def presets() -> dict[str, list[str]]:
    """Config group -> its presets (``configs/<group>/*.yaml`` and the plugins' presets in
    Hydra's ConfigStore), for ``group=preset``."""
    from rtrl_rl.plugins import stored_presets

    out = {}
    for group in sorted(p for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name != "hydra"):
        names = sorted({f.stem for f in group.glob("*.yaml")} | set(stored_presets(group.name)))
        if names and group.name not in ("bench", "copy", "algo_tuning"):
            out[group.name] = names
    return out


def _one_line(doc: str) -> str:
    return " ".join(doc.split())


def help_text(width: int = 100) -> str:
    """What ``rtrl-train --help`` prints: the groups, their presets and every option."""
    lines = ["rtrl-train [KEY=VALUE | GROUP=PRESET ...]  (Hydra overrides; -m for a multirun)",
             "", "Config groups and their presets (GROUP=PRESET):"]
    for group, names in presets().items():
        lines.append(f"  {group}: {', '.join(names)}")
    for title, when, rows in sections():
        lines += ["", f"{title} (with {when}):" if when != "always" else f"{title}:"]
        for key, kind, default, doc in rows:
            head = f"  {key}: {kind} = {default!r}"
            lines.append(head)
            if doc:
                lines += textwrap.wrap(_one_line(doc), width, initial_indent="      ",
                                       subsequent_indent="      ")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return _one_line(text).replace("|", "\\|")


def reference_markdown() -> str:
    """The configuration reference page: one table per dataclass, from the same source."""
    parts = ["# Configuration reference", "",
             "Generated from the config dataclasses and their field docstrings (the same "
             "text as `rtrl-train --help`). Set any option on the command line as "
             "`key=value`; pick a preset of a group as `group=preset`.", "",
             "## Groups and presets", "", "| group | presets |", "| --- | --- |"]
    parts += [f"| `{g}` | {', '.join(f'`{n}`' for n in names)} |"
              for g, names in presets().items()]
    for title, when, rows in sections():
        parts += ["", f"## {title}", ""]
        if when != "always":
            parts += [f"Used with `{when}`.", ""]
        parts += ["| option | type | default | meaning |", "| --- | --- | --- | --- |"]
        parts += [f"| `{key}` | {_cell(kind)} | `{default!r}` | {_cell(doc)} |"
                  for key, kind, default, doc in rows]
    return "\n".join(parts) + "\n"
