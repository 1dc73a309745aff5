"""``rtrl-train`` end to end on gymnasium envs with every kind of space, rtrl and bptt."""

from __future__ import annotations

import math

import pytest

from rtrl_rl.checkpoint import latest_checkpoint, load_checkpoint
from rtrl_rl.runners.loop import train
from tests.runners.helpers import make_cfg

MOD = "tests.envs.space_envs"
ENVS = {
    "blackjack": ["env.id=Blackjack-v1"],
    "frozen_lake": ["env.id=FrozenLake-v1"],
    "pendulum": ["env.id=Pendulum-v1"],
    "multi_discrete_obs": [f"env.id={MOD}:MultiDiscreteObs-v0"],
    "multi_binary_obs": [f"env.id={MOD}:MultiBinaryObs-v0"],
    "dict_obs": [f"env.id={MOD}:DictObs-v0"],
    "dict_image_obs": [f"env.id={MOD}:DictImageObs-v0", "model.stem=impala",
                       "model.stem_out=16"],
    "dict_image_obs_mlp": [f"env.id={MOD}:DictImageObs-v0"],
    "tuple_obs": [f"env.id={MOD}:TupleObs-v0"],
    "multi_discrete_act": [f"env.id={MOD}:MultiDiscreteAct-v0", "model.prev_action=true"],
    "box_act": [f"env.id={MOD}:BoxAct-v0", "model.prev_action=true"],
}


def _run(tmp_path, *overrides: str) -> list[str]:
    cfg = make_cfg(tmp_path, "env=gym", *overrides, "max_updates=3",
                   "runner.total_frames=100000", "model.hidden_size=8")
    assert isinstance(train(cfg), float)
    assert load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))["learner"]["updates"] == 3
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("env_frames") and len(rows) == 4
    assert all(math.isfinite(float(v)) for v in rows[-1].split(",")[1:4])
    return rows


@pytest.mark.parametrize("grad", ["rtrl", "bptt"])
@pytest.mark.parametrize("env", list(ENVS))
def test_train_on_each_kind_of_space(tmp_path, env, grad):
    _run(tmp_path, f"grad={grad}", *ENVS[env])


@pytest.mark.parametrize("inference", ["learner", "worker"])
@pytest.mark.parametrize("env", ["box_act", "multi_discrete_act"])
def test_async_runner_carries_non_discrete_actions(tmp_path, env, inference):
    _run(tmp_path, *ENVS[env], "runner=async", f"runner.inference={inference}",
         "runner.num_workers=1", "runner.env_groups=1")


def test_masked_cartpole_wrapper_from_the_config(tmp_path):
    _run(tmp_path, "env.id=CartPole-v1",
         "env.wrappers=[{_target_: rtrl_rl.envs.wrappers.MaskObservation, keep: [0, 2]}]")
    cfg = load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))["config"]
    assert cfg["env"]["wrappers"][0]["keep"] == [0, 2]
