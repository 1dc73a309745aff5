"""Sweeps: a tiny real Hydra multirun compared with rtrl-compare, the W&B group of a sweep,
and the optuna / slurm presets in configs/sweep (composed only; nothing is submitted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from hydra.utils import get_class
from omegaconf import OmegaConf, open_dict

from rtrl_rl.compare import main as compare_main
from rtrl_rl.config import validate
from rtrl_rl.sweep import apply_sweep_wandb_group, sweep_group_name
from rtrl_rl.train import CONFIG_DIR

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = ["logger=none", "max_updates=3", "runner.total_frames=100000", "env.delay=3",
        "torch_threads=1", "runner.num_envs=8"]


def rtrl_train(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "rtrl_rl.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def composed(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


# ------------------------------------------------------------------ multirun + compare


def test_multirun_one_run_dir_per_job_then_compare(tmp_path, capsys):
    sweep = tmp_path / "sw"
    rtrl_train(tmp_path, "-m", "grad=rtrl,bptt", "seed=0,1", *TINY, f"hydra.sweep.dir={sweep}")
    runs = sorted(p.parent for p in sweep.glob("*/metrics.csv"))
    assert len(runs) == 4 and len({r.name for r in runs}) == 4
    for run in runs:
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        assert Path(cfg["run_dir"]) == run
        assert cfg["logger"]["wandb_group"] == "sw"  # grouped by the sweep dir's name
        assert (run / ".hydra" / "overrides.yaml").is_file()

    out = tmp_path / "cmp"
    compare_main([str(sweep), "--out", str(out), "--reps", "200"])
    printed = capsys.readouterr().out
    assert "| grad=bptt | 2 |" in printed and "| grad=rtrl | 2 |" in printed
    for name in ("learning_curves.png", "final_performance.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    table = pd.read_csv(out / "results.csv")
    assert table.group.tolist() == ["grad=bptt", "grad=rtrl"]
    assert table.n_seeds.tolist() == [2, 2]
    assert table.frames_max.tolist() == [3 * 8 * 10] * 2  # updates * num_envs * unroll
    md = (out / "results.md").read_text()
    assert "| grad=bptt | 2 |" in md and "| grad=rtrl | 2 |" in md


@pytest.mark.slow
def test_optuna_two_trials_run_and_report_best(tmp_path):
    sweep = tmp_path / "opt"
    rtrl_train(tmp_path, "-m", "+sweep=optuna", "hydra.sweeper.n_trials=2", *TINY,
               f"hydra.sweep.dir={sweep}")
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == {"algo.lr", "algo.entropy_cost", "runner.unroll"}
    assert len(list(sweep.glob("*/metrics.csv"))) == 2


# ------------------------------------------------------------------ wandb group


def test_sweep_group_name():
    assert sweep_group_name("multirun/2026-11-21/20-54-55") == "2026-11-21_20-54-55"
    assert sweep_group_name("/scratch/sweeps/lr_search") == "lr_search"


@pytest.fixture
def hydra_mode():
    """Set HydraConfig as in a job of the given mode; restored afterwards."""

    def set_mode(mode: RunMode, sweep_dir: str = "multirun/2026-01-02/03-04-05"):
        cfg = composed()
        with open_dict(cfg):
            cfg.hydra.mode = mode
            cfg.hydra.sweep.dir = sweep_dir
        HydraConfig.instance().set_config(cfg)

    yield set_mode
    HydraConfig.instance().cfg = None


@pytest.mark.parametrize("mode, given, expected", [
    (RunMode.MULTIRUN, None, "2026-01-02_03-04-05"),
    (RunMode.MULTIRUN, "mine", "mine"),
    (RunMode.RUN, None, None),
])
def test_apply_sweep_wandb_group(hydra_mode, mode, given, expected):
    hydra_mode(mode)
    job = OmegaConf.create({"logger": {"wandb_group": given}, "seed": 0})
    OmegaConf.set_struct(job, True)
    apply_sweep_wandb_group(job)
    assert job.logger.wandb_group == expected


def test_no_hydra_context_leaves_config_alone():
    job = OmegaConf.create({"logger": {"wandb_group": None}})
    assert apply_sweep_wandb_group(job) is None and job.logger.wandb_group is None


# ------------------------------------------------------------------ presets


def test_slurm_preset_composes():
    cfg = composed("+sweep=slurm")
    launcher = cfg.hydra.launcher
    assert cfg.hydra.runtime.choices["hydra/launcher"] == "submitit_slurm"
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    get_class(launcher._target_)  # the plugin is installed and imports
    assert launcher.gpus_per_node == 1
    for key in ("cpus_per_task", "timeout_min", "mem_gb", "array_parallelism"):
        assert isinstance(launcher[key], int) and launcher[key] > 0, key
    assert launcher.partition is None  # site-specific: left to the user
    assert all(isinstance(line, str) for line in launcher.setup)
    assert cfg.grad.name == "rtrl" and cfg.seed == 0  # the job config is untouched


def test_optuna_preset_composes_with_a_valid_search_space():
    cfg = composed("+sweep=optuna")
    sweeper = cfg.hydra.sweeper
    assert cfg.hydra.runtime.choices["hydra/sweeper"] == "optuna"
    assert sweeper._target_.endswith("optuna_sweeper.OptunaSweeper")
    get_class(sweeper._target_)
    assert sweeper.direction == "maximize" and sweeper.n_jobs == 1 and sweeper.n_trials > 0
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert sweeper.sampler.seed is not None
    parser = OverridesParser.create()
    params = {o.key_or_group: o for o in parser.parse_overrides(
        [f"{k}={v}" for k, v in sweeper.params.items()])}
    assert set(params) == {"algo.lr", "algo.entropy_cost", "runner.unroll"}
    assert "log" in params["algo.lr"].value().tags
    assert params["runner.unroll"].value().list == [5, 10, 20]


def test_both_presets_compose_together():
    cfg = composed("+sweep=[optuna,slurm]")
    choices = cfg.hydra.runtime.choices
    assert choices["hydra/sweeper"] == "optuna" and choices["hydra/launcher"] == "submitit_slurm"


@pytest.mark.parametrize(("delay", "frames", "forget_bias"), [
    (10, 4_000_000, 3.0),  # the 4M-frame floor (episodes alone would give 1.5M)
    (30, 4_000_000, 3.0),
    (100, 12_750_000, 4.61),  # 125k episodes of D + 2 steps; ln(100)
    (300, 37_750_000, 5.7),
])
def test_memory_scan_preset_budgets(delay, frames, forget_bias):
    cfg = composed("experiment=memory_scan", f"env.delay={delay}")
    assert cfg.runner.total_frames == frames
    assert cfg.model.elstm.forget_bias == pytest.approx(forget_bias)
    assert cfg.model.lstm.forget_bias == pytest.approx(forget_bias)
    params = cfg.hydra.sweeper.params
    assert params.method == "rtrl_t10,bptt_t10,bptt_t100" and params.seed == "0,1,2"


def test_gated_recall_preset_is_the_run_behind_the_readme_table():
    cfg = composed("experiment=gated_recall")
    assert (cfg.env.delay, cfg.env.distractors, cfg.env.cue_flag) == (30, True, True)
    assert cfg.model.core == "elstm" and cfg.model.hidden_size == 64
    assert cfg.runner.total_frames == 12_000_000 and cfg.runner.unroll == 10
    assert cfg.algo.max_grad_norm == 1.0
    params = cfg.hydra.sweeper.params
    assert params.method == "rtrl_t10,bptt_t10" and params.seed == "0,1,2"
    job = OmegaConf.to_container(cfg)
    job.pop("hydra")
    assert validate({**job, "run_dir": "x"}).env["cue_flag"] is True


def test_slurm_multinode_preset_runs_one_torchrun_task_per_node():
    cfg = composed("+sweep=slurm_multinode")
    launcher = cfg.hydra.launcher
    assert cfg.hydra.runtime.choices["hydra/launcher"] == "submitit_slurm"
    assert launcher.nodes == 2 and launcher.tasks_per_node == 1
    assert cfg.distributed.nproc_per_node == launcher.gpus_per_node == 8
    assert launcher.timeout_min == composed("+sweep=slurm").hydra.launcher.timeout_min
    job = OmegaConf.to_container(cfg)
    job.pop("hydra")
    assert validate({**job, "run_dir": "x"}).distributed.nproc_per_node == 8


def test_optuna_keeps_a_study_in_sqlite(tmp_path):
    """``hydra.sweeper.storage=sqlite:///...`` (the sweep extra's Optuna with its SQLAlchemy)
    stores and reloads a study."""
    optuna = pytest.importorskip("optuna")
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(storage=url, study_name="s", direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=2)
    again = optuna.load_study(study_name="s", storage=url)
    assert len(again.trials) == 2 and again.best_value == study.best_value
