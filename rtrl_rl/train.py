"""``rtrl-train`` (also ``python -m rtrl_rl.train``): the Hydra entry point.

    rtrl-train                                   # the default job: delayed recall, eLSTM, RTRL
    rtrl-train grad=bptt                         # the same with truncated BPTT
    rtrl-train experiment=atari_r2ac env.game=breakout
    rtrl-train -m grad=rtrl,bptt seed=0,1,2      # a local sweep, one run dir per job

A config mistake (unknown key, bad value, unknown game) is reported as one line before any
environment starts; for single runs this is checked before Hydra sets anything up. Exit
codes: 2 for a config mistake or bad env data (``env.nonfinite=error``), 1 for a run whose
updates diverged (``algo.max_skipped_updates``) or whose final checkpoint failed, 128 + N
for signal N.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from rtrl_rl.checkpoint import CheckpointError
from rtrl_rl.errors import ConfigError, EnvDataError, PluginError, TrainingDiverged

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")
log = logging.getLogger("rtrl_rl")


def _fail(msg: str) -> None:
    print(f"rtrl-train: error: {msg}", file=sys.stderr)
    raise SystemExit(2)


try:  # loads the plugins and registers the ${scan_*} resolvers, before Hydra composes
    import rtrl_rl.config  # noqa: F401
except PluginError as e:  # one line, not a traceback from inside an import
    _fail(str(e))


def compose_config(overrides: list[str], run_dir: str) -> DictConfig:
    """The config ``rtrl-train OVERRIDES`` would get, composed outside a Hydra run, with
    ``run_dir`` in place of ``${hydra:runtime.output_dir}`` (not available there)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=False)
    OmegaConf.set_struct(cfg, False)
    cfg.run_dir = run_dir
    return cfg


def _choices(overrides: list[str]) -> dict[str, str]:
    """The learner and runner the command line picks (``algo=ppo`` -> ``{"algo": "ppo"}``)."""
    return {k: v for k, _, v in (o.partition("=") for o in overrides)
            if k in ("algo", "runner") and v}


def precheck(overrides: list[str]) -> None:
    """Compose and validate the config a single run would get; exit 2 with one line if bad."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from rtrl_rl.config import misplaced, validate

    try:
        validate(compose_config(overrides, "precheck"))
    except ConfigError as e:
        _fail(str(e))
    except (HydraException, OmegaConfBaseException) as e:
        key = re.search(r"Could not override '([^']+)'", str(e))
        why = key and misplaced(key.group(1), _choices(overrides))
        if why:
            _fail(why)
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        lines = [ln for ln in lines[:12] if not ln.startswith(("Config search path", "provider="))]
        _fail(" ".join(lines[:12]) if lines else type(e).__name__)


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> float:
    from rtrl_rl.config import validate
    from rtrl_rl.runners.distributed import Ranks
    from rtrl_rl.runners.loop import train
    from rtrl_rl.sweep import apply_sweep_wandb_group

    apply_sweep_wandb_group(cfg)  # a multirun's W&B runs share a group named after its dir
    try:
        typed = validate(cfg)
        if typed.distributed.nproc_per_node and not Ranks.from_env().active:
            return _as_torchrun(typed)
        return train(typed)
    except ConfigError as e:
        _fail(str(e))
    except EnvDataError as e:  # bad data from the env: stopped where it entered
        _fail(str(e))
    except (CheckpointError, TrainingDiverged) as e:  # the final save failed, or diverged
        print(f"rtrl-train: error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    raise AssertionError("unreachable")


def _as_torchrun(cfg) -> float:
    """This job as ``distributed.nproc_per_node`` torchrun ranks (per Slurm node)."""
    from hydra.core.hydra_config import HydraConfig

    from rtrl_rl.runners.launch import relaunch

    d = cfg.distributed
    log.info("starting %d rank(s) per node with torchrun", d.nproc_per_node)
    code, ret = relaunch(d.nproc_per_node, d.rdzv_port, cfg.run_dir,
                         list(HydraConfig.get().overrides.task), os.environ)
    if code:
        print(f"rtrl-train: error: torchrun exited with code {code}", file=sys.stderr)
        raise SystemExit(code if 0 < code < 128 else 1)
    return ret


def _as_rank(args: list[str]) -> None:
    """Under torchrun: one run dir (rank 0's, broadcast in ``train``) and one log.
    Ranks other than 0 log warnings only, to the console."""
    from rtrl_rl.runners.distributed import Ranks

    ranks = Ranks.from_env()
    if not ranks.active:
        return
    if any(a in ("-m", "--multirun") for a in args):
        _fail("-m/--multirun cannot run under torchrun: start one torchrun per job, or use "
              "+sweep=slurm_multinode for multi-node jobs")
    if ranks.rank > 0:
        logging.getLogger("rtrl_rl").setLevel(logging.WARNING)
        # Hydra writes nothing for these ranks: no output dir of its own, no log file
        sys.argv += ["hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=stdout"]


def main() -> None:
    args = sys.argv[1:]
    if args in (["--help"], ["-h"]):  # the options with their docs; Hydra's own: --hydra-help
        from rtrl_rl.config_help import help_text

        print(help_text())
        return
    _as_rank(args)
    multirun = any(a in ("-m", "--multirun") for a in args)
    if not multirun and not any(a.startswith("-") for a in args):
        precheck([a for a in args if not a.startswith("hydra.")])
    try:
        hydra_main()
    except ConfigError as e:
        _fail(str(e))


if __name__ == "__main__":
    main()
