"""Per-component configs: the learner, runner and core dataclasses a config's names select,
and configs saved by an older version, read in today's layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rtrl_rl.algos.impala import ImpalaConfig
from rtrl_rl.algos.ppo import PPOConfig
from rtrl_rl.config import to_dict, upgrade_saved, validate
from rtrl_rl.errors import ConfigError
from rtrl_rl.resume import check_resume_config
from rtrl_rl.runners.runner_config import AsyncRunnerConfig, RunnerConfig
from rtrl_rl.train import compose_config

OLD = yaml.safe_load((Path(__file__).parent / "data" / "config_v0.yaml").read_text())
SAME_RUN = ["env.delay=10", "model.elstm.forget_bias=3.0", "model.lstm.forget_bias=3.0"]


def current(*overrides: str) -> dict:
    return to_dict(validate(compose_config([*SAME_RUN, *overrides], OLD["run_dir"])))


def test_names_select_the_component_dataclasses():
    cfg = validate(compose_config(["algo=ppo", "runner=async", "model.core=lru"], "r"))
    assert type(cfg.algo) is PPOConfig and type(cfg.runner) is AsyncRunnerConfig
    assert cfg.model.core_options() == {"r_min": 0.9, "r_max": 0.999,
                                        "max_phase": pytest.approx(6.283185307179586)}
    cfg = validate(compose_config(["model.core=none"], "r"))
    assert type(cfg.algo) is ImpalaConfig and type(cfg.runner) is RunnerConfig
    assert cfg.model.core_options() == {}


def test_a_config_is_not_given_another_variants_options():
    raw = compose_config([], "r")
    raw.algo.epochs = 3
    with pytest.raises(ConfigError, match="^algo.epochs: an option of algo=ppo, not of "
                                          "algo=impala$"):
        validate(raw)
    with pytest.raises(ConfigError, match="algo.name: 'ppo' takes PPOConfig, not ImpalaConfig"):
        ImpalaConfig(name="ppo")


def test_an_old_config_reads_in_the_new_layout():
    new = upgrade_saved(OLD)
    assert new["model"]["elstm"] == {"forget_bias": 3.0}
    assert "forget_bias" not in new["model"] and "r_min" not in new["model"]
    assert "epochs" not in new["algo"] and new["algo"]["clip_rho"] == 1.0
    assert "num_workers" not in new["runner"] and new["runner"]["unroll"] == 10
    assert upgrade_saved(new) == new  # today's layout comes back unchanged
    cfg = validate(OLD, saved=True)
    assert cfg.model.core_options() == {"forget_bias": 3.0}
    assert type(cfg.algo) is ImpalaConfig and type(cfg.runner) is RunnerConfig
    with pytest.raises(ConfigError, match="an option of algo=ppo, not of algo=impala"):
        validate(OLD)  # not read as a saved config: its stray options are errors
    flat = {**OLD, "algo": upgrade_saved(OLD)["algo"], "runner": upgrade_saved(OLD)["runner"]}
    with pytest.raises(ConfigError, match="^model.forget_bias: a core's options are in its "
                                          "block, e.g. model.<core>.forget_bias"):
        validate(flat)


def test_an_old_checkpoint_resumes_and_still_guards_the_core_options():
    changes = check_resume_config(OLD, current(), Path("ckpt_0.pt"))
    # model.stem: a run that named its stem resumes under stem=auto (the weights must fit)
    assert "model.stem: 'mlp' -> 'auto'" in changes
    assert not [c for c in changes if c.startswith(("model.", "algo.", "runner."))
                and not c.startswith("model.stem")], changes
    # another core's options do not matter to this run
    assert check_resume_config(OLD, current("model.lru.r_min=0.5"), Path("c.pt")) == changes
    with pytest.raises(ConfigError, match=r"model.elstm.forget_bias: 3.0 -> 2.0"):
        check_resume_config(OLD, current("model.elstm.forget_bias=2.0"), Path("c.pt"))
