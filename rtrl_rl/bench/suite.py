"""A benchmark suite: tasks x methods x seeds, each run an ``rtrl-train`` job.

A suite config (``configs/bench/suite/*.yaml``) holds a catalogue of tasks and of methods,
each a list of ``rtrl-train`` overrides, and selects from them with ``tasks`` and
``methods``; every knob can be overridden on the command line
(``rtrl-bench suite=popgym tasks=[RepeatFirstEasy] seeds=1 frames=200000 jobs=2``).
``load_suite`` checks it and turns every mistake into a one-line ``ConfigError`` before any
run starts; ``expand`` lists the runs in the order they are launched (task, method, seed).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rtrl_rl.config import one_line
from rtrl_rl.errors import ConfigError, unknown_name
from rtrl_rl.run_logger import write_atomic

MANIFEST = "suite.json"
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass
class TaskSpec:
    """One task of a suite: how to make it, its budget and the published scores."""

    train: list[str] = field(default_factory=list)
    """``rtrl-train`` overrides that select the env (``env=gym``, ``env.id=...``)."""
    frames: int = 2_000_000
    """Frame budget of each run on this task (the suite's ``frames`` replaces it if > 0)."""
    episode_length: int = 1
    """The longest episode, in agent steps: the long-truncation methods unroll twice this."""
    max_return: Optional[float] = None  # noqa: UP045  (OmegaConf reads typing.Optional)
    """The highest return an episode can have (null: unknown), for the normalised scores."""
    published_gru: Optional[float] = None  # noqa: UP045  (OmegaConf reads typing.Optional)
    """The published score of a GRU on this task (null: none known), for the report."""
    published_best: Optional[float] = None  # noqa: UP045
    """The best published score on this task (null: none known)."""
    published_best_model: str = ""
    """The model that scored ``published_best``."""
    published: dict[str, float] = field(default_factory=dict)
    """Published scores by the model or method that scored them (``{TBPTT: 305, RTRL:
    275}``), for suites whose source reports several; shown beside ``published_gru/best``."""
    published_source: str = ""
    """Where the published scores come from (paper, table)."""
    extra_methods: list[str] = field(default_factory=list)
    """Names from ``method_specs`` run on this task only, after the suite's (an ablation)."""

    @property
    def long_unroll(self) -> int:
        return 2 * self.episode_length


@dataclass
class MethodSpec:
    """One method: ``rtrl-train`` overrides that pick the core, gradient and unroll.

    ``{long_unroll}`` in an override is replaced by the task's ``2 * episode_length``."""

    train: list[str] = field(default_factory=list)
    """``rtrl-train`` overrides, e.g. ``[model.core=elstm, grad=rtrl, runner.unroll=10]``."""
    label: str = ""
    """A short description for the report (default: the method's name)."""


@dataclass
class SuiteConfig:
    """``rtrl-bench``'s config: which runs make up the suite, and how to run them."""

    name: str = ""
    """The suite's name; a suite directory holds the runs of one suite only."""
    out: str = ""
    """The suite directory: runs, random-policy scores and the report go here."""
    tasks: list[str] = field(default_factory=list)
    """Names from ``task_specs`` to run, in this order."""
    methods: list[str] = field(default_factory=list)
    """Names from ``method_specs`` to run on every task, in this order."""
    seeds: int = 3
    """Seeds 0 .. seeds-1 of every task and method."""
    frames: int = 0
    """Frame budget of every run; 0 keeps each task's own ``frames``."""
    jobs: int = 1
    """Runs at once; each gets ``threads_per_job`` torch threads."""
    threads_per_job: int = 0
    """Torch threads of each run; 0 splits this machine's cores evenly over ``jobs``."""
    checkpoint_interval_s: float = 60.0
    """How often a run saves its checkpoint: what a crash costs that run at most."""
    random_episodes: int = 1000
    """Episodes of a uniform random policy per task, for the report's normalised scores."""
    reps: int = 2000
    """Bootstrap resamples for the report's 95% intervals."""
    report_only: bool = False
    """Write the report from the finished runs without starting any run."""
    train: list[str] = field(default_factory=list)
    """``rtrl-train`` overrides shared by every run (learner, optimiser, sizes, device)."""
    task_specs: dict[str, TaskSpec] = field(default_factory=dict)
    """The catalogue of tasks that ``tasks`` picks from."""
    method_specs: dict[str, MethodSpec] = field(default_factory=dict)
    """The catalogue of methods that ``methods`` picks from."""

    def methods_of(self, task: str) -> list[str]:
        """The suite's methods, then the task's extra ones."""
        extra = self.task_specs[task].extra_methods
        return [*self.methods, *(m for m in extra if m not in self.methods)]

    def budget(self, task: str) -> int:
        return self.frames if self.frames > 0 else self.task_specs[task].frames

    def check(self) -> None:
        def need(cond: bool, key: str, msg: str) -> None:
            if not cond:
                raise ConfigError(f"{key}: {msg}")

        need(bool(_NAME.fullmatch(self.name)), "name", f"must be a plain name, got '{self.name}'")
        need(bool(self.out), "out", "the suite directory must be set")
        need(self.seeds >= 1, "seeds", f"must be >= 1, got {self.seeds}")
        need(self.frames >= 0, "frames", f"must be a positive number of frames (0: each task's "
             f"own), got {self.frames}")
        need(self.jobs >= 1, "jobs", f"must be >= 1, got {self.jobs}")
        need(self.threads_per_job >= 0, "threads_per_job", "must be >= 0 (0: cores / jobs)")
        need(self.checkpoint_interval_s > 0, "checkpoint_interval_s", "must be > 0")
        need(self.random_episodes >= 1, "random_episodes", "must be >= 1")
        need(self.reps >= 1, "reps", "must be >= 1")
        need(bool(self.tasks), "tasks", "no tasks selected")
        need(bool(self.methods), "methods", "no methods selected")
        for key, chosen, catalogue in (("tasks", self.tasks, self.task_specs),
                                       ("methods", self.methods, self.method_specs)):
            for name in chosen:
                if name not in catalogue:
                    raise ConfigError(f"{key}: {unknown_name(key[:-1], name, catalogue)}")
            dup = sorted({n for n in chosen if chosen.count(n) > 1})
            need(not dup, key, f"listed twice: {', '.join(dup)}")
        for name in self.tasks:
            spec = self.task_specs[name]
            for method in spec.extra_methods:
                if method not in self.method_specs:
                    raise ConfigError(f"task_specs.{name}.extra_methods: "
                                      f"{unknown_name('method', method, self.method_specs)}")
            need(spec.frames >= 1, f"task_specs.{name}.frames",
                 f"must be a positive number of frames, got {spec.frames}")
            need(spec.episode_length >= 1, f"task_specs.{name}.episode_length", "must be >= 1")
        for name in [*self.tasks, *self.method_specs]:
            need(bool(_NAME.fullmatch(name)), "tasks/methods",
                 f"'{name}' is not a plain name (it names a directory)")

    def threads(self) -> int:
        if self.threads_per_job:
            return self.threads_per_job
        return max(1, len(os.sched_getaffinity(0)) // self.jobs)


@dataclass(frozen=True)
class RunSpec:
    """One run of the grid and the ``rtrl-train`` overrides that make it."""

    task: str
    method: str
    seed: int
    frames: int
    run_dir: Path
    overrides: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.task}/{self.method}/seed{self.seed}"


def load_suite(cfg: DictConfig | dict[str, Any]) -> SuiteConfig:
    """The typed, checked suite of a composed ``rtrl-bench`` config (one-line errors)."""
    raw = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    container = OmegaConf.to_container(raw, resolve=True)
    assert isinstance(container, dict)
    container.pop("hydra", None)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(SuiteConfig), container)
        suite = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise ConfigError(one_line(e)) from None
    assert isinstance(suite, SuiteConfig)
    suite.check()
    return suite


def method_overrides(suite: SuiteConfig, task: str, method: str) -> list[str]:
    """The method's overrides for ``task``, with ``{long_unroll}`` filled in."""
    long_unroll = suite.task_specs[task].long_unroll
    return [o.replace("{long_unroll}", str(long_unroll))
            for o in suite.method_specs[method].train]


def train_overrides(suite: SuiteConfig, task: str, method: str) -> list[str]:
    """Everything but the per-run keys: shared, then the task's, then the method's."""
    return [*suite.train, *suite.task_specs[task].train, *method_overrides(suite, task, method)]


def expand(suite: SuiteConfig) -> list[RunSpec]:
    """Every run of the suite, task-major, then method, then seed."""
    out = Path(suite.out)
    runs = []
    for task in suite.tasks:
        for method in suite.methods_of(task):
            for seed in range(suite.seeds):
                run_dir = (out / "runs" / task / method / f"seed{seed}").resolve()
                frames = suite.budget(task)
                per_run = [f"seed={seed}", f"runner.total_frames={frames}",
                           f"checkpoint_interval_s={suite.checkpoint_interval_s}",
                           f"torch_threads={suite.threads()}", f"run_dir={run_dir}",
                           "resume=true", f"hydra.run.dir={run_dir}",
                           "hydra.output_subdir=null"]
                runs.append(RunSpec(task, method, seed, frames, run_dir,
                                    (*train_overrides(suite, task, method), *per_run)))
    return runs


def claim_dir(suite: SuiteConfig) -> None:
    """Create the suite directory, or check that it holds this suite's runs (one line)."""
    out = Path(suite.out)
    manifest = out / MANIFEST
    if manifest.is_file():
        try:
            name = json.loads(manifest.read_text()).get("suite")
        except (OSError, ValueError, AttributeError):
            raise ConfigError(f"out: {manifest} is unreadable; is {out} a suite directory?"
                              ) from None
        if name != suite.name:
            raise ConfigError(f"out: {out} holds the runs of suite '{name}', not "
                              f"'{suite.name}'; pick another out=DIR")
        return
    if out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"out: {out} exists and is not a suite directory (no {MANIFEST}); "
                          "pick another out=DIR")
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(manifest, json.dumps({"suite": suite.name}) + "\n")
