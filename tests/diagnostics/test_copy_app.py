"""rtrl-copy as a Hydra app: run dirs, multiruns read by rtrl-compare, the sweep presets."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rtrl_rl.compare import main as compare_main
from rtrl_rl.diagnostics.copy_app import job_overrides, split_args
from rtrl_rl.diagnostics.copy_config import CONFIG_DIR, FIELDS, CopyConfig, validate
from rtrl_rl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
TINY = ["pattern_length=3", "hidden_size=8", "batch_size=4", "eval_episodes=16", "steps=40",
        "eval_every=10", "quiet=true"]


def rtrl_copy(*args: str, module: str = "") -> subprocess.CompletedProcess:
    """The console script when installed next to this Python (else ``python -m``), or
    ``python -m module``."""
    script = Path(sys.executable).with_name("rtrl-copy")
    if module or not script.is_file():
        cmd = [sys.executable, "-m", module or "rtrl_rl.diagnostics.copy_task"]
    else:
        cmd = [str(script)]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def hydra_compose(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def test_console_script_errors_are_one_line():
    app = "rtrl_rl.diagnostics.copy_app"  # the same main without importing torch first
    for args, module, needle in ((["patern_length=5"], "", "did you mean pattern_length"),
                                 (["-m", "grad=rtrl,bpt"], app, "did you mean bptt"),
                                 (["--bogus"], app, "unknown flag '--bogus'")):
        out = rtrl_copy(*args, module=module)
        err = out.stderr.strip()
        assert out.returncode == 2 and "\n" not in err, (args, err)
        assert err.startswith("rtrl-copy: error: ") and needle in err, err


def test_single_run_writes_its_run_dir(tmp_path):
    run = tmp_path / "run"
    out = rtrl_copy(*TINY, "grad=bptt", f"hydra.run.dir={run}")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert list(cfg) == list(FIELDS) and Path(cfg["run_dir"]) == run
    assert validate(cfg) == CopyConfig(**cfg)  # the resolved config, as rtrl-train writes it
    assert (cfg["grad"], cfg["steps"], cfg["quiet"]) == ("bptt", 40, True)
    assert (run / "git_rev.txt").is_file() and (run / ".hydra" / "overrides.yaml").is_file()
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:2] == ["env_frames", "step"] and "seq_acc" in rows[0]
    assert [int(r["env_frames"]) for r in rows] == [40, 80, 120, 160]  # steps * batch_size
    results = json.loads((run / "results.json").read_text())
    assert results["seq_acc"] == summary["seq_acc"] and len(results["history"]) == 4
    assert results["config"] == cfg


def test_multirun_then_compare(tmp_path, capsys):
    sweep = tmp_path / "sw"
    out = rtrl_copy("-m", "grad=rtrl,bptt", "seed=0,1", *TINY, f"hydra.sweep.dir={sweep}")
    assert out.returncode == 0, out.stderr
    runs = sorted(p.parent for p in sweep.glob("*/metrics.csv"))
    assert len(runs) == 4 and all((r / "results.json").is_file() for r in runs)
    seeds = {(c["grad"], c["seed"]) for c in
             (yaml.safe_load((r / "config.yaml").read_text()) for r in runs)}
    assert seeds == {(g, s) for g in ("rtrl", "bptt") for s in (0, 1)}
    compare_main([str(sweep), "--out", str(tmp_path / "cmp"), "--reps", "200"])
    printed = capsys.readouterr().out
    assert "| grad=bptt | 2 |" in printed and "| grad=rtrl | 2 |" in printed
    md = (tmp_path / "cmp" / "results.md").read_text()
    assert md.startswith("# seq_acc: 4 runs in 2 groups")  # the copy task's default metric
    assert "| grad=bptt | 2 |" in md and "| grad=rtrl | 2 |" in md
    compare_main([str(sweep), "--out", str(tmp_path / "bit"), "--reps", "200",
                  "--metric", "bit_acc"])
    assert (tmp_path / "bit" / "results.md").read_text().startswith("# bit_acc:")


def test_optuna_returns_the_objective(tmp_path):
    sweep = tmp_path / "opt"
    out = rtrl_copy("-m", "+sweep=optuna", "hydra.sweeper.n_trials=2", "objective=bit_acc",
                    *TINY, f"hydra.sweep.dir={sweep}")
    assert out.returncode == 0, out.stderr
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    trials = [json.loads(p.read_text())["bit_acc"] for p in sweep.glob("*/results.json")]
    assert len(trials) == 2 and best["best_value"] == pytest.approx(max(trials))
    assert set(best["best_params"]) <= set(FIELDS)


def test_sweep_presets_compose():
    cfg = hydra_compose("+sweep=optuna", "objective=bit_acc")
    sweeper = cfg.hydra.sweeper
    assert "optuna" in sweeper._target_.lower() and sweeper.direction == "maximize"
    assert set(sweeper.params) <= set(FIELDS) and sweeper.sampler.seed == 0
    slurm = hydra_compose("+sweep=slurm").hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher") and slurm.cpus_per_task == 1
    both = hydra_compose("+sweep=[optuna,slurm]").hydra
    assert "optuna" in both.sweeper._target_.lower()
    assert both.launcher._target_.endswith("SlurmLauncher")
    for preset in (cfg, hydra_compose("+sweep=slurm"), hydra_compose("+experiment=scan")):
        OmegaConf.set_struct(preset, False)
        preset.run_dir = "x"
        validate(preset)  # the presets set only CopyConfig keys
    scan = hydra_compose("+experiment=scan")
    assert scan.steps == 15000 and set(scan.hydra.sweeper.params) == {"pattern_length", "grad"}


def test_job_overrides_expand_every_job():
    jobs = job_overrides(["grad=rtrl,bptt", "seed=0,1", "steps=5"], multirun=True)
    assert len(jobs) == 4 and ["grad=bptt", "seed=1", "steps=5"] in jobs
    assert len(job_overrides(["+experiment=scan"], multirun=True)) == 12  # the preset's grid
    scan = job_overrides(["+experiment=scan", "pattern_length=2,3"], multirun=True)
    assert len(scan) == 6  # the command line replaces the preset's lengths
    optuna = job_overrides(["+sweep=optuna", "lr=interval(1e-3,1e-2)", "grad=rtrl,bptt"], True)
    assert optuna == [["+sweep=optuna", "grad=rtrl"], ["+sweep=optuna", "grad=bptt"]]
    assert job_overrides(["seed=0,1"], multirun=False) == [["seed=0,1"]]


def test_split_args():
    assert split_args(["-m", "--json", "a.json", "x=1"]) == (["-m"], ["json=a.json", "x=1"])
    assert split_args(["--cfg", "job", "lr=-1"]) == (["--cfg", "job"], ["lr=-1"])
    with pytest.raises(ConfigError, match="--bogus"):
        split_args(["--bogus"])
