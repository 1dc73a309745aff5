"""The docs never drift from the code.

- The site builds with ``mkdocs build --strict`` (a warning, such as a broken link, fails).
- Every ``rtrl-train``, ``rtrl-copy``, ``rtrl-eval`` and ``rtrl-compare`` command in a fenced
  code block of README.md or docs/ parses and validates, without running anything:
  ``rtrl-train`` (also ``make train ARGS=...``, ``python -m rtrl_rl.train`` and torchrun) is
  composed by Hydra and checked by ``rtrl_rl.config.validate``, every job of a multirun;
  ``rtrl-copy`` by its own precheck against ``configs/copy``; ``rtrl-eval`` and
  ``rtrl-compare`` by their argument parsers.
- A command that sets environment variables (``RTRL_RL_PLUGINS=... rtrl-train ...``, or
  ``export`` lines before it in its block) is checked the same way in a subprocess with
  those variables, so that the plugins it names are loaded.
- A console block that shows ``$ command`` and then ``tool: error: message`` is run the same
  way, and must fail with exactly that message. Any other quoted error message must be
  listed in ``QUOTED_IN_TESTS`` with the test that produces it.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
TOOLS = ("rtrl-train", "rtrl-copy", "rtrl-eval", "rtrl-compare")
FENCE = re.compile(r"^([ \t]*)(```+|~~~+)[ \t]*([\w+-]*)[^\n]*\n(.*?)^\1\2[ \t]*$", re.M | re.S)
SHELL_LANGS = ("", "bash", "sh", "shell", "console", "zsh")
#: A multirun with more jobs than this is checked value by value, not job by job.
MAX_JOBS = 8
ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")

#: Error messages the docs quote that need a run to produce: (the page, the text the page
#: quotes, the test file that produces it, the part of the message that test asserts).
QUOTED_IN_TESTS = [
    ("docs/guide/checkpoints.md", "is in use by another run (PID 1234)",
     "tests/runners/test_run_guards.py", "in use by another run \\\\(PID"),
    ("docs/guide/checkpoints.md", "model.hidden_size: 16 -> 32",
     "tests/runners/test_run_guards.py", "model.hidden_size: 16 -> 32"),
    ("docs/guide/checkpoints.md", "resume: applying the changed algo.lr: 0.001 -> 0.0005",
     "tests/runners/test_run_guards.py", "applying the changed algo.lr: 0.001 -> 0.0005"),
    ("docs/guide/checkpoints.md", "stream 1, step 300:\n    reward is nan (env.nonfinite=error; "
     "zero or reset to go on)", "tests/runners/test_nonfinite_train.py",
     "stream 1, step 300: reward is nan "),
    ("docs/guide/checkpoints.md", "`rtrl-train: error: 10 updates in a row skipped for "
     "non-finite values", "tests/runners/test_nonfinite_train.py",
     "rtrl-train: error: 10 updates in a row skipped"),
]


@dataclass
class Command:
    page: str
    line: int
    tool: str
    args: list[str]
    error: str | None = None  # the message a console block says it prints
    env: dict[str, str] = field(default_factory=dict)  # variables the block sets for it

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {self.tool} {shlex.join(self.args)}"


def _blocks(text: str):
    """(first line number, language, body) of each fenced code block."""
    for m in FENCE.finditer(text):
        yield text.count("\n", 0, m.start(4)) + 1, m.group(3).lower(), m.group(4)


def _logical_lines(body: str):
    """(offset, line) with backslash continuations joined."""
    buf, start = "", 0
    for i, raw in enumerate(body.splitlines()):
        if not buf:
            start = i
        if raw.rstrip().endswith("\\"):
            buf += raw.rstrip()[:-1] + " "
            continue
        yield start, buf + raw
        buf = ""
    if buf:
        yield start, buf


def _assignments(words: list[str]) -> tuple[dict[str, str], list[str]]:
    """The leading ``FOO=bar`` words as a dict, and the words after them."""
    env = {}
    while words and ASSIGN.match(words[0]):
        key, _, value = words[0].partition("=")
        env[key], words = value, words[1:]
    return env, words


def _as_tool(words: list[str]) -> tuple[str, list[str]] | None:
    """The tool and its arguments if ``words`` runs one of ours, else None."""
    words = _assignments(words)[1]
    if not words:
        return None
    head = Path(words[0]).name
    if head in TOOLS:
        return head, words[1:]
    if head == "make" and len(words) > 1 and words[1] == "train":
        args = [w.split("=", 1)[1] for w in words[2:] if w.startswith("ARGS=")]
        return "rtrl-train", shlex.split(args[0]) if args else []
    modules = {"rtrl_rl.train": "rtrl-train", "rtrl_rl.diagnostics.copy_task": "rtrl-copy",
               "rtrl_rl.evaluate": "rtrl-eval", "rtrl_rl.compare": "rtrl-compare"}
    if (head.startswith("python") or head == "torchrun") and "-m" in words:
        i = words.index("-m")
        if i + 1 < len(words) and words[i + 1] in modules:
            return modules[words[i + 1]], words[i + 2:]
    return None


def extract_commands(path: Path) -> list[Command]:
    text = path.read_text()
    page = str(path.relative_to(ROOT))
    out: list[Command] = []
    for first, lang, body in _blocks(text):
        if lang not in SHELL_LANGS:
            continue
        lines = list(_logical_lines(body))
        console = lang == "console" or any(ln.lstrip().startswith("$ ") for _, ln in lines)
        exported: dict[str, str] = {}
        for k, (offset, line) in enumerate(lines):
            if line.lstrip().startswith("export "):
                exported.update(_assignments(shlex.split(line, comments=True)[1:])[0])
                continue
            if not any(t in line for t in (*TOOLS, "make train", "rtrl_rl.")):
                continue
            prompt = line.lstrip().startswith("$ ")
            if console and not prompt:  # a console block's output
                continue
            line = line.lstrip()[2:] if prompt else line
            try:
                words = shlex.split(line, comments=True)
            except ValueError as e:
                where = f"{page}:{first + offset}"
                raise AssertionError(f"{where}: cannot split {line!r}: {e}") from None
            for part in _split_sequence(words):
                found = _as_tool(part)
                if not found:
                    continue
                error = None
                if prompt and k + 1 < len(lines) and f"{found[0]}: error: " in lines[k + 1][1]:
                    error = lines[k + 1][1].strip()
                env = {**exported, **_assignments(part)[0]}
                out.append(Command(page, first + offset, found[0], found[1], error, env))
    return out


def _split_sequence(words: list[str]) -> list[list[str]]:
    parts, cur = [], []
    for w in words:
        if w in ("&&", ";", "||", "|"):
            parts.append(cur)
            cur = []
        else:
            cur.append(w)
    return [*parts, cur]


ALL = [c for p in PAGES for c in extract_commands(p)]


# ------------------------------------------------------------------ checks per tool


def _train_jobs(args: list[str]) -> list[list[str]]:
    """The overrides of every job ``rtrl-train ARGS`` runs (a multirun's discrete sweeps
    and its basic sweeper's params expanded; continuous ranges left to the sweeper)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    from rtrl_rl.sweep import discrete_overrides
    from rtrl_rl.train import CONFIG_DIR

    multirun = any(a in ("-m", "--multirun") for a in args)
    flags = [a for a in args if a.startswith("-")]
    unknown = [f for f in flags if f not in ("-m", "--multirun")]
    assert not unknown, f"flags the check does not know: {unknown}"
    overrides = [a for a in args if not a.startswith("-")]
    if not multirun:
        return [overrides]
    discrete = discrete_overrides(CONFIG_DIR, overrides)
    jobs = BasicSweeper.split_arguments(discrete, None)[0]
    if len(jobs) <= MAX_JOBS:
        return jobs
    # A large grid: every value of every sweep once, the other sweeps at their first value.
    lists: dict[str, list[str]] = {}
    for o in discrete:
        key = o.get_key_element()
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [
            o.get_value_element_as_str()]
        lists[key] = [f"{key}={v}" for v in values]
    base = [v[0] for v in lists.values()]
    jobs = [base]
    for i, choices in enumerate(lists.values()):
        jobs += [[*base[:i], alt, *base[i + 1:]] for alt in choices[1:]]
    return jobs


def check_train(args: list[str]) -> None:
    from hydra import compose, initialize_config_dir

    from rtrl_rl.config import validate
    from rtrl_rl.train import CONFIG_DIR

    for job in _train_jobs(args):
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose("config", overrides=list(job), return_hydra_config=True)
        cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        OmegaConf.set_struct(cfg, False)
        if OmegaConf.is_interpolation(cfg, "run_dir"):
            cfg.run_dir = "docs-check"
        validate(cfg)


def check_copy(args: list[str]) -> None:
    from rtrl_rl.diagnostics.copy_app import precheck

    precheck(list(args))


class _Parsed(Exception):
    pass


def check_eval(args: list[str], monkeypatch) -> None:
    import rtrl_rl.evaluate as ev

    def stop(path):
        raise _Parsed(path)

    monkeypatch.setattr(ev, "find_checkpoint", stop)
    with pytest.raises(_Parsed):
        ev.main(list(args))


def check_compare(args: list[str]) -> None:
    from rtrl_rl.compare import _parser

    ns = _parser().parse_args(list(args))
    assert 0 < ns.last_frac <= 1 and ns.reps >= 1


def check_train_with_env(args: list[str], env: dict[str, str]) -> None:
    """``check_train``'s single-run check in a process with ``env`` set (relative
    ``PYTHONPATH`` entries are relative to the repository root, as the docs run them)."""
    assert not any(a.startswith("-") for a in args), "a command with variables: one run only"
    path = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", ""), os.environ.get("PYTHONPATH", "")])
    code = "import sys; from rtrl_rl.train import precheck; precheck(sys.argv[1:])"
    proc = subprocess.run([sys.executable, "-c", code, *args, "run_dir=docs-check"], cwd=ROOT,
                          env={**os.environ, **env, "PYTHONPATH": path}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def run_check(cmd: Command, monkeypatch) -> None:
    if cmd.tool == "rtrl-train" and cmd.env:
        check_train_with_env(cmd.args, cmd.env)
    elif cmd.tool == "rtrl-train":
        check_train(cmd.args)
    elif cmd.tool == "rtrl-copy":
        check_copy(cmd.args)
    elif cmd.tool == "rtrl-eval":
        check_eval(cmd.args, monkeypatch)
    else:
        check_compare(cmd.args)


# ------------------------------------------------------------------ tests


def test_commands_were_found():
    tools = {c.tool for c in ALL}
    assert tools == set(TOOLS), tools
    assert len(ALL) > 50
    assert any(c.error for c in ALL)


@pytest.mark.parametrize("cmd", [c for c in ALL if not c.error], ids=str)
def test_documented_command_validates(cmd, monkeypatch):
    run_check(cmd, monkeypatch)


@pytest.mark.parametrize("cmd", [c for c in ALL if c.error], ids=str)
def test_documented_error_is_what_the_code_prints(cmd, capsys):
    """``$ rtrl-train ...`` then ``rtrl-train: error: ...``: the same line, exit status 2."""
    if cmd.tool == "rtrl-train":
        from rtrl_rl.train import precheck

        with pytest.raises(SystemExit) as e:
            precheck(cmd.args)
        assert e.value.code == 2
        printed = capsys.readouterr().err.strip()
    else:
        from rtrl_rl.errors import ConfigError

        with pytest.raises(ConfigError) as e:
            check_copy(cmd.args)
        printed = f"{cmd.tool}: error: {e.value}"
    assert printed == cmd.error


def test_every_quoted_error_is_checked():
    """A ``tool: error: message`` quoted anywhere is either a console block's output (run
    above) or listed in QUOTED_IN_TESTS; ``tool: error: ...`` alone shows the form only."""
    shown = {(c.page, c.error) for c in ALL if c.error}
    listed = list(QUOTED_IN_TESTS)
    for path in PAGES:
        page = str(path.relative_to(ROOT))
        text = path.read_text()
        for m in re.finditer(r"(rtrl-[a-z]+): error: ([^`\n]*)", text):
            msg = m.group(2).strip()
            if msg in ("...", ""):
                continue
            line = m.group(0).strip()
            if (page, line) in shown:
                continue
            assert any(p == page and q.startswith("`rtrl") and line.startswith(q.strip("`"))
                       or p == page and q in text for p, q, _, _ in listed), (
                f"{page}: quoted error not checked: {line!r}")
    for page, quoted, test_file, produced in QUOTED_IN_TESTS:
        assert quoted in (ROOT / page).read_text(), (page, quoted)
        assert produced in (ROOT / test_file).read_text(), (test_file, produced)


def test_mkdocs_build_strict(tmp_path):
    """The whole site, as ``mkdocs build --strict``: warnings (broken links, missing pages,
    a nav entry without a page) are errors."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site"),
         "--config-file", str(ROOT / "mkdocs.yml")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "site" / "guide" / "config-reference" / "index.html").is_file()
    assert "WARNING" not in proc.stderr, proc.stderr[-4000:]
