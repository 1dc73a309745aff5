"""Env config validation: defaults, one-line errors naming the key, the shipped YAML files."""

from __future__ import annotations

import ast
import contextlib
import dataclasses
from pathlib import Path

import pytest
import yaml

from rtrl_rl.envs import (
    FAMILIES,
    AtariConfig,
    ConfigError,
    DelayedRecallConfig,
    ProcgenConfig,
    family_config,
    make_env,
    parse_env_config,
    validate_env_config,
)
from rtrl_rl.envs.config import PROCGEN_GAMES, PROCGEN_MODE_GAMES
from rtrl_rl.envs.seeding import derive_seed

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "env"


@pytest.mark.parametrize(
    "cfg, needles",
    [
        ({"family": "atri"}, ["env.family", "'atri'", "atari"]),
        ({}, ["env.family", "missing"]),
        ({"family": "atari", "game": "pongg"}, ["env.game", "'pongg'", "pong"]),
        ({"family": "atari", "game": "MsPacman"}, ["env.game", "ms_pacman"]),
        ({"family": "atari", "stiky_actions": 0.2}, ["'stiky_actions'", "sticky_actions"]),
        ({"family": "atari", "sticky_actions": 1.5}, ["env.sticky_actions", "[0, 1]", "1.5"]),
        ({"family": "atari", "sticky_actions": -0.1}, ["env.sticky_actions"]),
        ({"family": "atari", "sticky_actions": "high"}, ["env.sticky_actions", "float", "str"]),
        ({"family": "atari", "frameskip": 2.5}, ["env.frameskip", "int"]),
        ({"family": "atari", "full_action_space": 1}, ["env.full_action_space", "bool"]),
        ({"family": "atari", "num_envs": 8}, ["env.num_envs", "runner"]),
        ({"family": "procgen", "game": "coinrum"}, ["env.game", "coinrun"]),
        ({"family": "procgen", "distribution_mode": "medium"}, ["env.distribution_mode"]),
        ({"family": "procgen", "distribution_mode": "memory"},
         ["env.distribution_mode", "coinrun", "maze"]),
        ({"family": "procgen", "game": "bigfish", "distribution_mode": "exploration"},
         ["env.distribution_mode", "bigfish"]),
        ({"family": "procgen", "num_levels": -1}, ["env.num_levels"]),
        ({"family": "procgen", "eval_start_level": -5}, ["env.eval_start_level"]),
        ({"family": "gym", "id": "CartPole-v3"}, ["env.id", "CartPole-v1"]),
        ({"family": "gym", "vectorization": "threads"}, ["env.vectorization", "sync"]),
        ({"family": "gym", "id": "nosuchmodule_xyz:Foo-v0"}, ["env.id", "nosuchmodule_xyz"]),
        ({"family": "delayed_recall", "num_cues": 1}, ["env.num_cues", ">= 2"]),
        ({"family": "delayed_recall", "delay": 5, "delay_max": 4}, ["env.delay_max"]),
        ({"family": "delayed_recall", "delay": None}, ["env.delay", "int"]),
    ],
)
def test_errors_are_one_line_and_name_the_key(cfg, needles):
    with pytest.raises(ConfigError) as info:
        validate_env_config(cfg)
    msg = str(info.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_defaults_and_family_config():
    assert set(FAMILIES) == {"atari", "procgen", "gym", "delayed_recall"}
    atari = parse_env_config({"family": "atari"})
    assert isinstance(atari, AtariConfig)
    assert (atari.game, atari.frameskip, atari.frame_stack, atari.frame_size) == ("pong", 4, 4, 84)
    assert (atari.noop_max, atari.sticky_actions, atari.full_action_space) == (30, 0.0, False)
    assert family_config("procgen") is ProcgenConfig
    assert family_config("delayed_recall")() == DelayedRecallConfig(num_cues=4, delay=30)
    with pytest.raises(ConfigError, match="env.family"):
        family_config("dmlab")


def test_accepts_int_for_float_and_mapping_like_configs():
    from omegaconf import OmegaConf

    parsed = parse_env_config({"family": "atari", "sticky_actions": 1})
    assert parsed.sticky_actions == 1
    omega = OmegaConf.create({"family": "gym", "id": "CartPole-v1", "make_kwargs": {}})
    assert parse_env_config(omega).id == "CartPole-v1"


def test_procgen_eval_levels_are_disjoint_by_default():
    cfg = ProcgenConfig(num_levels=500, start_level=0)
    start, count = cfg.eval_levels()
    assert start == 500 and start + count == 2**31 - 1
    custom = ProcgenConfig(eval_start_level=10_000, eval_num_levels=100)
    assert custom.eval_levels() == (10_000, 100)


def test_procgen_tables_match_the_library():
    """Our game list and the driver's copies of the library's tables equal those in the
    installed ``procgen/env.py`` (read, not imported: importing it needs gym3)."""
    from rtrl_rl.envs import procgen_lib

    root = procgen_lib.package_dir()
    if root is None:
        pytest.skip("procgen is not installed")
    tables = {}
    for node in ast.parse((root / "env.py").read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            with contextlib.suppress(ValueError):
                tables[node.targets[0].id] = ast.literal_eval(node.value)
    assert tuple(tables["ENV_NAMES"]) == PROCGEN_GAMES
    assert set(tables["EXPLORATION_LEVEL_SEEDS"]) == set(PROCGEN_MODE_GAMES["exploration"])
    assert tables["EXPLORATION_LEVEL_SEEDS"] == procgen_lib.EXPLORATION_LEVEL_SEEDS
    modes = {k: v for k, v in tables["DISTRIBUTION_MODE_DICT"].items() if k != "exploration"}
    assert modes == procgen_lib.DISTRIBUTION_MODES


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_yaml_configs_are_valid_and_list_every_field(path):
    raw = yaml.safe_load(path.read_text())
    parsed = parse_env_config(raw)
    fields = {f.name for f in dataclasses.fields(type(parsed))}
    assert set(raw) == fields | {"family"}
    assert dataclasses.asdict(parsed) == dataclasses.asdict(type(parsed)())  # values = defaults
    assert "num_envs" not in raw


def test_make_env_checks_its_arguments():
    with pytest.raises(ConfigError, match="split"):
        make_env({"family": "delayed_recall"}, 2, 0, split="test")
    with pytest.raises(ConfigError, match="num_envs"):
        make_env({"family": "delayed_recall"}, 0, 0)
    with pytest.raises(ConfigError, match="env.delay"):
        make_env(DelayedRecallConfig(delay=-1), 2, 0)


def test_derived_seeds_separate_runs_and_splits():
    seeds = {derive_seed(s, split, k) for s in range(20) for split in ("train", "eval")
             for k in range(3)}
    assert len(seeds) == 120
    assert derive_seed(3, "eval", 1) == derive_seed(3, "eval", 1)
