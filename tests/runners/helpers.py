"""Compose real run configs (the same files `rtrl-train` uses) for tests."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rtrl_rl.config import TrainConfig, validate
from rtrl_rl.train import CONFIG_DIR

TINY = ["logger=none", "runner.num_envs=4", "runner.unroll=5", "checkpoint_interval_s=1000"]


def make_cfg(run_dir: Path, *overrides: str) -> TrainConfig:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[*TINY, *overrides])
    OmegaConf.set_struct(cfg, False)
    cfg.run_dir = str(run_dir)
    return validate(cfg)
