"""``rtrl-bench``: run a named benchmark suite resumably, then write its report.

    rtrl-bench suite=popgym                              # the whole grid, then the report
    rtrl-bench suite=popgym tasks=[RepeatFirstEasy] methods=[elstm_rtrl_t10] seeds=1
    rtrl-bench suite=memory jobs=2 frames=1000000 out=bench/memory_1m
    rtrl-bench suite=popgym report_only=true             # the report of the finished runs

Re-running the same command skips finished runs, resumes interrupted ones from their
checkpoints and starts the missing ones. Every run's config is composed and checked before
any run starts: a mistake is one line and exit status 2. Exit status 1 when a run failed
(its ``train.log`` says why), 128 + the signal after SIGINT or SIGTERM.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from rtrl_rl.bench.suite import SuiteConfig, claim_dir, expand, load_suite, train_overrides
from rtrl_rl.errors import ConfigError
from rtrl_rl.run_dir import RunDirLock

PROG = "rtrl-bench"
CONFIG_DIR = str(Path(__file__).resolve().parent.parent.parent / "configs" / "bench")


def _fail(msg: str) -> None:
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    raise SystemExit(2)


@contextmanager
def _outside_hydra_app() -> Iterator[None]:
    """Compose other configs inside this Hydra app: its global state is set aside."""
    from hydra.core.global_hydra import GlobalHydra

    instance = GlobalHydra.instance()
    saved = instance.hydra
    instance.clear()
    try:
        yield
    finally:
        instance.clear()
        if saved is not None:
            instance.initialize(saved)


def _train_configs(suite: SuiteConfig) -> dict[tuple[str, str], object]:
    """Each task and method's validated ``TrainConfig`` (one-line error naming the pair)."""
    with _outside_hydra_app():
        return _compose_all(suite)


def _compose_all(suite: SuiteConfig) -> dict[tuple[str, str], object]:
    from rtrl_rl.config import validate
    from rtrl_rl.train import compose_config

    typed = {}
    for task in suite.tasks:
        for method in suite.methods_of(task):
            try:
                cfg = compose_config(train_overrides(suite, task, method), "precheck")
                typed[task, method] = validate(cfg)
            except ConfigError as e:
                raise ConfigError(f"task {task}, method {method}: {e}") from None
            except Exception as e:  # noqa: BLE001  (Hydra's errors for a bad override)
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ConfigError(f"task {task}, method {method}: {first}") from None
    return typed


def _param_counts(typed: dict) -> dict[tuple[str, str], tuple[int, int]]:
    """(core, whole agent) parameter counts of each task and method."""
    from rtrl_rl.envs import make_env
    from rtrl_rl.models.agent import Agent

    out = {}
    specs = {}
    for (task, method), cfg in typed.items():
        if task not in specs:
            env = make_env(cfg.env, 1, 0)
            specs[task] = env.spec
            env.close()
        agent = Agent(specs[task], cfg.model, cfg.algo.reward_clip)
        out[task, method] = (sum(p.numel() for p in agent.core.parameters()),
                             sum(p.numel() for p in agent.parameters()))
    return out


def run_suite(cfg: DictConfig, command: str) -> int:
    """Check, run the grid, write the report; returns the exit status."""
    suite = load_suite(cfg)
    typed = _train_configs(suite)
    runs = expand(suite)
    claim_dir(suite)
    if suite.report_only:  # reads finished runs only: fine beside a running grid
        return _run_claimed(suite, typed, runs, command)
    with RunDirLock(suite.out):  # one grid per suite directory
        return _run_claimed(suite, typed, runs, command)


def _run_claimed(suite: SuiteConfig, typed: dict, runs: list, command: str) -> int:
    from rtrl_rl.bench.launcher import Grid
    from rtrl_rl.bench.random_policy import cached_random_score
    from rtrl_rl.bench.report import write_report

    random = {}
    for task in suite.tasks:
        env_cfg = dict(typed[task, suite.methods[0]].env)
        path = Path(suite.out) / "random" / f"{task}.json"
        random[task] = cached_random_score(path, env_cfg, suite.random_episodes)["mean"]
    params = _param_counts(typed)
    code = 0
    if not suite.report_only:
        result = Grid(runs, suite.jobs, suite.threads()).run()
        if result.failed:
            print(f"{PROG}: {len(result.failed)} run(s) failed: {', '.join(result.failed)}; "
                  "re-run the same command to retry them", file=sys.stderr)
            code = 1
        if result.signal is not None:
            code = 128 + result.signal
    out = write_report(suite, runs, random, params, command)
    print(f"{PROG}: report in {out / 'report.md'}", file=sys.stderr)
    return code


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    command = " ".join([PROG, *map(shlex.quote, sys.argv[1:])])
    try:
        code = run_suite(cfg, command)
    except ConfigError as e:
        _fail(str(e))
    if code:
        raise SystemExit(code)


def precheck(overrides: list[str]) -> None:
    """Compose and check the suite config before Hydra starts; exit 2 with one line."""
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose("config", overrides=overrides)
        OmegaConf.set_struct(cfg, False)
        load_suite(cfg)
    except ConfigError as e:
        _fail(str(e))
    except Exception as e:  # noqa: BLE001  (Hydra: unknown suite, malformed override)
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        lines = [ln for ln in lines if not ln.startswith(("Config search path", "provider="))]
        _fail(" ".join(lines[:8]) if lines else type(e).__name__)


def main() -> None:
    args = sys.argv[1:]
    if any(a in ("-m", "--multirun") for a in args):
        _fail("a suite is its own grid: run it without -m/--multirun")
    if not any(a.startswith("-") for a in args):
        precheck([a for a in args if not a.startswith("hydra.")])
    hydra_main()


if __name__ == "__main__":
    main()
