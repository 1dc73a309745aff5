"""The templates of docs/extending/ run as plugins: each trains a few updates through
``rtrl-train`` with ``RTRL_RL_PLUGINS``, its options on the command line and in ``--help``;
the registries refuse a name twice; a plugin that fails is one line naming it."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from rtrl_rl import plugins
from rtrl_rl.algos import register_learner
from rtrl_rl.algos.impala import ImpalaConfig, ImpalaLearner
from rtrl_rl.envs import DelayedRecallConfig, register_env_family
from rtrl_rl.errors import PluginError
from rtrl_rl.models.cells import LSTM, Core
from rtrl_rl.models.registry import CORES, register_core

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "docs" / "extending" / "templates"
TINY = ["max_updates=3", "runner.num_envs=4", "runner.unroll=5", "model.hidden_size=16",
        "logger=none", "checkpoint_interval_s=1000"]


def rtrl_train(plugin: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """``RTRL_RL_PLUGINS=plugin python -m rtrl_rl.train ARGS`` with the templates importable."""
    path = os.pathsep.join([str(ROOT), str(TEMPLATES), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, plugins.ENV_VAR: plugin}
    return subprocess.run([sys.executable, "-m", "rtrl_rl.train", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def trained(run_dir: Path, proc: subprocess.CompletedProcess) -> dict:
    """The run's saved config, after checking that it exited 0 with 3 metrics rows."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and float(rows[-1]["env_frames"]) > 0
    return yaml.safe_load((run_dir / "config.yaml").read_text())


def test_cell_template_trains_with_its_option(tmp_path):
    proc = rtrl_train("add_cell", "model.core=gru", "grad=bptt", "model.gru.update_bias=2.5",
                      *TINY, f"run_dir={tmp_path}")
    cfg = trained(tmp_path, proc)
    assert cfg["model"]["core"] == "gru" and cfg["model"]["gru"] == {"update_bias": 2.5}


@pytest.mark.parametrize("runner", [
    ["runner=sync"],
    # env-only workers in spawned processes build the plugin's env (runners/env_worker.py)
    ["runner=async", "runner.num_workers=1", "runner.inference=learner"],
], ids=["sync", "async"])
def test_env_template_trains(tmp_path, runner):
    proc = rtrl_train("add_env", "env=echo", "env.lag=2", *runner, *TINY, f"run_dir={tmp_path}")
    cfg = trained(tmp_path, proc)
    assert cfg["env"] == {"family": "echo", "num_symbols": 4, "lag": 2, "length": 20,
                          "nonfinite": "error"}


def test_learner_template_trains(tmp_path):
    proc = rtrl_train("add_learner", "algo=a2c", "algo.gae_lambda=0.9", *TINY,
                      f"run_dir={tmp_path}")
    cfg = trained(tmp_path, proc)
    assert cfg["algo"]["name"] == "a2c" and cfg["algo"]["gae_lambda"] == 0.9


def test_help_lists_the_plugins_presets_and_options():
    proc = rtrl_train("add_cell,add_env,add_learner", "--help")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "  algo: a2c, impala, ppo" in out and "  env: atari, delayed_recall, echo," in out
    for line in ("model.gru (with model.core=gru):", "  model.gru.update_bias: float = 1.0",
                 "env: echo (with env=echo):", "  env.lag: int = 1",
                 "algo: a2c (with algo=a2c):", "  algo.gae_lambda: float = 0.95"):
        assert line in out.splitlines(), line


@pytest.mark.parametrize("plugin, args, error", [
    ("add_cell", ["model.core=gru"], "grad=rtrl needs an element-wise recurrent core, "
                                     "not model.core=gru; cores that support it: "),
    ("add_cell", ["model.core=gru", "grad=bptt", "model.gru.update_bias=inf"],
     "model.gru.update_bias: must be finite, got inf"),
    ("nonesuch", [], "plugin 'nonesuch' (RTRL_RL_PLUGINS): no module named 'nonesuch' "
                     "(is its folder on PYTHONPATH?)"),
], ids=["rtrl-refuses-gru", "bad-option", "missing-plugin"])
def test_mistakes_are_one_line(plugin, args, error):
    proc = rtrl_train(plugin, *args, "run_dir=unused")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(f"rtrl-train: error: {error}"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------ registries, in-process


def test_registries_refuse_a_name_twice():
    class Twin(LSTM):
        pass

    with pytest.raises(PluginError, match=r"^core 'lstm' is already registered "
                                          r"\(rtrl_rl.models.cells.LSTM\)$"):
        register_core(Twin)

    class Again(ImpalaLearner):
        config = ImpalaConfig

    with pytest.raises(PluginError, match=r"^learner 'impala' is already registered"):
        register_learner(Again)
    with pytest.raises(PluginError, match=r"^env family 'delayed_recall' is already registered"):
        register_env_family(DelayedRecallConfig, lambda *a: None)


def test_registries_refuse_what_they_cannot_use():
    class Nameless(Core):
        def forward(self, x, state, first, detach_every_step=False):
            return x, state

    with pytest.raises(PluginError, match="name must be an identifier of its own"):
        register_core(Nameless)
    with pytest.raises(PluginError, match="is not a Core subclass"):
        register_core(int)

    class NoConfig(ImpalaLearner):
        config = object

    with pytest.raises(PluginError, match="must be a LearnerConfig subclass"):
        register_learner(NoConfig)

    @dataclass
    class NoFamily:
        x: int = 0

    with pytest.raises(PluginError, match="is not an EnvOptions dataclass"):
        register_env_family(NoFamily, lambda *a: None)
    assert "core" not in CORES


@pytest.fixture
def fresh_plugins(monkeypatch):
    """``load_plugins`` as in a new process, with no entry points installed."""
    monkeypatch.setattr(plugins, "_state", {"loading": False, "loaded": [], "error": None})
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group: [])
    return monkeypatch


def test_load_plugins_imports_each_named_module_once(fresh_plugins):
    fresh_plugins.setenv(plugins.ENV_VAR, " json, csv ,")
    assert plugins.load_plugins() == ["json", "csv"]
    assert plugins.load_plugins() == ["json", "csv"]


def test_a_failing_plugin_is_one_line_naming_it_every_time(fresh_plugins):
    fresh_plugins.setenv(plugins.ENV_VAR, "json,rtrl_rl.no_such_module")
    for _ in range(2):
        with pytest.raises(PluginError) as e:
            plugins.load_plugins()
        assert str(e.value) == ("plugin 'rtrl_rl.no_such_module' (RTRL_RL_PLUGINS): no module "
                                "named 'rtrl_rl.no_such_module' (is its folder on PYTHONPATH?)")


def test_entry_points_are_plugins_too(fresh_plugins):
    @dataclass
    class EntryPoint:
        name: str
        value: str

    fresh_plugins.delenv(plugins.ENV_VAR, raising=False)
    fresh_plugins.setattr("importlib.metadata.entry_points",
                          lambda group: [EntryPoint("mine", "json:loads")]
                          if group == plugins.ENTRY_POINT_GROUP else [])
    assert plugins.plugin_names() == [("json:loads", "entry point 'mine'")]
    assert plugins.load_plugins() == ["json:loads"]
