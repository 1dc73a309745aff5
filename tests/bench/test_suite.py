"""The suite config: checks before anything starts, the grid's runs and the suite dir."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rtrl_rl.bench.app import CONFIG_DIR
from rtrl_rl.bench.suite import MANIFEST, claim_dir, expand, load_suite
from rtrl_rl.errors import ConfigError


def suite(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    OmegaConf.set_struct(cfg, False)
    return load_suite(cfg)


def test_popgym_suite_covers_the_tasks_and_methods():
    s = suite("suite=popgym")
    assert set(s.tasks) >= {"RepeatPreviousEasy", "RepeatPreviousMedium", "RepeatFirstEasy",
                            "PositionOnlyCartPoleEasy", "CountRecallEasy", "AutoencodeEasy",
                            "HigherLowerEasy"}
    assert len(s.methods) == 9 and s.seeds == 3
    assert all(s.budget(t) >= 2_000_000 for t in s.tasks)


def test_expand_fills_the_long_unroll_and_per_run_keys(tmp_path):
    s = suite("suite=popgym", "tasks=[RepeatPreviousMedium]",
              "methods=[elstm_bptt_long,lru_rtrl_t10]", "seeds=2", "frames=5000",
              f"out={tmp_path}", "jobs=2", "threads_per_job=3")
    runs = expand(s)
    assert [r.key for r in runs] == [
        "RepeatPreviousMedium/elstm_bptt_long/seed0", "RepeatPreviousMedium/elstm_bptt_long/seed1",
        "RepeatPreviousMedium/lru_rtrl_t10/seed0", "RepeatPreviousMedium/lru_rtrl_t10/seed1"]
    long, short = runs[0].overrides, runs[2].overrides
    assert "runner.unroll=206" in long and "runner.unroll=10" in short  # 2 x 103 steps
    assert "seed=1" in runs[1].overrides and "runner.total_frames=5000" in long
    assert "torch_threads=3" in long and "resume=true" in long
    assert f"run_dir={tmp_path.resolve()}/runs/RepeatPreviousMedium/lru_rtrl_t10/seed0" in short
    # later keys win in Hydra: the task's env and the method's core come after the shared ones
    assert long.index("model.core=elstm") > long.index("experiment=popgym")


@pytest.mark.parametrize("override, message", [
    ("tasks=[RepeatFirstEasyy]", "tasks: unknown task 'RepeatFirstEasyy'; did you mean"),
    ("methods=[elstm_rtrl]", "methods: unknown method 'elstm_rtrl'"),
    ("methods=[ff,ff]", "methods: listed twice: ff"),
    ("frames=-1", "frames: must be a positive number of frames"),
    ("frames=lots", "frames: Value 'lots'"),
    ("seeds=0", "seeds: must be >= 1"),
    ("jobs=0", "jobs: must be >= 1"),
    ("task_specs.RepeatFirstEasy.frames=0",
     "task_specs.RepeatFirstEasy.frames: must be a positive"),
])
def test_bad_input_is_one_line(override, message):
    with pytest.raises(ConfigError, match="^" + message.replace("[", r"\[").replace("(", r"\(")):
        suite("suite=popgym", override)


def test_suite_dir_holds_one_suite(tmp_path):
    s = suite("suite=popgym", f"out={tmp_path / 's'}")
    claim_dir(s)
    assert json.loads((tmp_path / "s" / MANIFEST).read_text()) == {"suite": "popgym"}
    claim_dir(s)  # the same suite again: fine
    other = suite("suite=memory", f"out={tmp_path / 's'}")
    with pytest.raises(ConfigError, match="holds the runs of suite 'popgym', not 'memory'"):
        claim_dir(other)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="not a suite directory"):
        claim_dir(suite("suite=memory", f"out={tmp_path / 'junk'}"))


@pytest.mark.parametrize("args, message", [
    (["tasks=[Nope]"], "rtrl-bench: error: tasks: unknown task 'Nope'"),
    (["suite=nope"], "rtrl-bench: error: In 'config': Could not find 'suite/nope'"),
    (["methods=[ff]", 'train=["experiment=popgym","algo.lr=-1"]'],
     "rtrl-bench: error: task RepeatFirstEasy, method ff: algo.lr: must be > 0"),
])
def test_cli_errors_exit_2_before_any_run(tmp_path, args, message):
    out = tmp_path / "suite"
    proc = subprocess.run([sys.executable, "-m", "rtrl_rl.bench.app", f"out={out}", *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr
    assert not out.exists()


def test_extra_methods_run_on_their_task_only():
    s = suite("suite=popgym", "tasks=[RepeatFirstEasy,RepeatPreviousEasy]", "methods=[ff]",
              "seeds=1")
    keys = [r.key for r in expand(s)]
    assert keys == ["RepeatFirstEasy/ff/seed0", "RepeatFirstEasy/elstm_rtrl_t10_noflag/seed0",
                    "RepeatPreviousEasy/ff/seed0"]
    noflag = expand(s)[1].overrides
    assert noflag.index("model.first_input=false") > noflag.index("experiment=popgym")
    with pytest.raises(ConfigError, match="extra_methods: unknown method 'nope'"):
        suite("suite=popgym", "task_specs.RepeatFirstEasy.extra_methods=[nope]")


@pytest.mark.parametrize("name, tasks, methods", [
    ("atari", {"Breakout", "Gravitar", "MsPacman", "Qbert", "Seaquest"},
     {"rtrl_t50", "bptt_t50", "ff"}),
    ("procgen", {"ChaserHard"}, {"rtrl_t5", "bptt_t5", "rtrl_t50", "bptt_t50", "ff"}),
])
def test_paper_suites_compose_every_run_with_the_published_scores(name, tasks, methods):
    from rtrl_rl.bench.app import _compose_all

    s = suite(f"suite={name}")
    assert set(s.tasks) == tasks and set(s.methods) == methods
    typed = _compose_all(s)
    assert len(typed) == len(tasks) * len(methods)
    for (_task, method), cfg in typed.items():
        assert cfg.runner.streams_per_batch == 32 and cfg.model.hidden_size == 256
        assert cfg.runner.unroll == (5 if method.endswith("t5") else 50)
        assert (cfg.model.core == "none") == (method == "ff")
    if name == "atari":
        assert s.task_specs["Breakout"].published == {"FF": 234, "TBPTT": 305, "RTRL": 275}
        assert all(s.budget(t) == 800_000_000 for t in tasks)
