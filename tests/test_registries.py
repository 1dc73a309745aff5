"""Registries are the one source of names: the config's choices, the errors and the README
are derived from them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rtrl_rl.algos import LEARNERS
from rtrl_rl.algos.learner import LearnerConfig
from rtrl_rl.config import GradConfig, ModelConfig
from rtrl_rl.envs import FAMILIES, parse_env_config
from rtrl_rl.errors import ConfigError
from rtrl_rl.grad import GRADS
from rtrl_rl.models.registry import CORES, rtrl_cores
from rtrl_rl.runners import RUNNERS
from rtrl_rl.runners.runner_config import RunnerConfig
from rtrl_rl.train import precheck

README = Path(__file__).resolve().parents[1] / "README.md"


def choices(make) -> set[str]:
    """The choices an unknown name's one-line error lists."""
    with pytest.raises(ConfigError) as e:
        make("zzz-none-such")
    return set(re.search(r"choices: (.*)$", str(e.value)).group(1).split(", "))


@pytest.mark.parametrize("make, registry", [
    (lambda v: ModelConfig(core=v), CORES),
    (lambda v: GradConfig(name=v), GRADS),
    (lambda v: LearnerConfig(name=v), LEARNERS),
    (lambda v: RunnerConfig(kind=v), RUNNERS),
    (lambda v: parse_env_config({"family": v}), FAMILIES),
])
def test_config_choices_are_the_registries_keys(make, registry):
    assert choices(make) == set(registry)


def test_rtrl_capability_is_the_core_classes_property():
    assert rtrl_cores() == [n for n, c in CORES.items() if c.elementwise]
    assert {"elstm", "rtu", "lru", "none"} <= set(rtrl_cores()) and "lstm" not in rtrl_cores()


def test_rtrl_on_an_lstm_names_every_capable_core_as_the_readme_quotes_it(capsys):
    with pytest.raises(SystemExit) as e:
        precheck(["model.core=lstm", "grad=rtrl"])
    assert e.value.code == 2
    line = capsys.readouterr().err.strip()
    assert line.endswith("cores that support it: " + ", ".join(rtrl_cores()))
    assert line in README.read_text().splitlines()
