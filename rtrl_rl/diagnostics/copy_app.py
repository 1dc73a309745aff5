"""``rtrl-copy`` (also ``python -m rtrl_rl.diagnostics.copy_task``): the copy task's Hydra app.

    rtrl-copy grad=rtrl pattern_length=20 chunk=10          # one run -> runs/copy/<date>/<time>
    rtrl-copy -m grad=rtrl,bptt seed=0,1 steps=2000         # 4 jobs -> multirun/copy/...
    rtrl-compare multirun/copy/<date>/<time>                # results.md over the jobs
    rtrl-copy -m +sweep=optuna grad=bptt                    # tune; the run returns `objective`
    rtrl-copy -m +sweep=slurm grad=rtrl,bptt seed=0,1,2     # the jobs as a SLURM array

The tree is ``configs/copy`` (every key a ``CopyConfig`` field). Each run dir gets
``config.yaml`` (the resolved config) and ``git_rev.txt`` as rtrl-train's ``RunLogger`` writes
them, ``metrics.csv`` (one row per periodic evaluation; ``env_frames`` = steps per stream x
``batch_size``, then ``step``, ``seq_acc``, ``bit_acc``, ...) and ``results.json`` (the final
result, the history included). The last stdout line is the result as JSON (without the
history); ``--json FILE`` is ``json=FILE``.

A config mistake (unknown key or flag, bad value, value out of range) is one line
``rtrl-copy: error: ...`` and exit status 2 before Hydra starts; for a multirun every job's
config is checked before the first one runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from rtrl_rl.diagnostics.copy_config import (
    CONFIG_DIR,
    CopyConfig,
    compose_many,
    one_line,
    validate,
)
from rtrl_rl.errors import ConfigError

PROG = "rtrl-copy"
#: Hydra's flags that take a value, and those that only print something (no check first).
VALUE_FLAGS = ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name",
               "-cn", "--config-dir", "-cd", "--experimental-rerun", "--shell-completion",
               "-sc")
INFO_FLAGS = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--version",
              "--shell-completion", "-sc", "--experimental-rerun")
FLAGS = VALUE_FLAGS + INFO_FLAGS + ("--multirun", "-m", "--resolve", "--run", "-r")
#: metrics.csv columns: a periodic evaluation's numbers (env_frames comes first).
METRIC_KEYS = ("step", "episodes", "seq_acc", "bit_acc", "majority_bit_acc", "seq_acc_at_L",
               "bit_acc_at_L", "loss", "train_bit_acc", "elapsed_s")


def _fail(msg: str) -> None:
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def split_args(args: list[str]) -> tuple[list[str], list[str]]:
    """(Hydra flags with their values, overrides); ``--json FILE`` becomes ``json=FILE``.
    ``ConfigError`` for a flag that neither Hydra nor rtrl-copy knows."""
    flags: list[str] = []
    overrides: list[str] = []
    items = iter(args)
    for arg in items:
        if arg == "--json" or arg.startswith("--json="):
            path = arg.partition("=")[2] or next(items, "")
            if not path:
                raise ConfigError("--json needs a path")
            overrides.append(f"json={path}")
        elif arg.startswith("-"):
            name = arg.split("=", 1)[0]
            if name not in FLAGS:
                raise ConfigError(f"unknown flag '{arg}'; options are key=value (see --help)")
            flags.append(arg)
            if name in VALUE_FLAGS and "=" not in arg:
                flags.append(next(items, ""))
        else:
            overrides.append(arg)
    return flags, overrides


def job_overrides(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The overrides of each job ``rtrl-copy OVERRIDES`` runs (``rtrl_rl.sweep.jobs``)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from rtrl_rl.sweep import jobs

    try:
        return jobs(CONFIG_DIR, overrides, multirun)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(one_line(e)) from None


def precheck(args: list[str]) -> list[str]:
    """Check the config of every job ``args`` would run; return the arguments for Hydra
    (``--json`` rewritten). Raises a one-line ``ConfigError``."""
    flags, overrides = split_args(args)
    if not any(f.split("=", 1)[0] in INFO_FLAGS for f in flags):
        multirun = any(f in ("-m", "--multirun") for f in flags)
        compose_many(job_overrides(overrides, multirun))
    return flags + overrides


def run(cfg: CopyConfig) -> dict[str, Any]:
    """Train one config and report it: progress lines on stderr (unless ``quiet``), with a
    ``run_dir`` the files of the module doc, with ``json`` the full result there too, and
    the result without its history as the last stdout line. Returns the full result."""
    from rtrl_rl.diagnostics.copy_task import print_progress, train
    from rtrl_rl.run_logger import LoggerConfig, RunLogger

    logger = None
    if cfg.run_dir:
        quiet_logs = LoggerConfig(progress="none", tensorboard=False, csv=True, plot=False)
        logger = RunLogger(cfg.run_dir, quiet_logs, cfg.to_dict(),
                           total_frames=cfg.total_steps * cfg.batch_size)

    def on_eval(row: dict[str, Any]) -> None:
        if logger is not None:
            logger.log(row["step"] * cfg.batch_size,
                       {k: row[k] for k in METRIC_KEYS if k in row})

    try:
        result = train(cfg, progress=None if cfg.quiet else print_progress, on_eval=on_eval)
    finally:
        if logger is not None:
            logger.close()
    text = json.dumps(result, indent=2) + "\n"
    if cfg.run_dir:
        (Path(cfg.run_dir) / "results.json").write_text(text)
    if cfg.json:
        Path(cfg.json).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.json).write_text(text)
    summary = {k: v for k, v in result.items() if k not in ("history", "config")}
    print(json.dumps(summary), flush=True)
    return result


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> float:
    """One job: validate, train, write the run dir; returns the final ``objective``."""
    try:
        typed = validate(cfg)
    except ConfigError as e:
        _fail(str(e))
        raise
    return float(run(typed)[typed.objective])


def main(argv: list[str] | None = None) -> None:
    """Console-script entry (``rtrl-copy``): check the command line, then run Hydra."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        args = precheck(args)
    except ConfigError as e:
        _fail(str(e))
    saved = sys.argv
    sys.argv = [saved[0] if saved else PROG, *args]
    try:
        hydra_main()
    finally:
        sys.argv = saved



if __name__ == "__main__":
    main()
