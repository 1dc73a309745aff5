"""Wrappers from the config: checked before any env is built, applied in order."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest

from rtrl_rl.envs import make_env, validate_env_config
from rtrl_rl.envs.wrappers import MaskObservation, apply_wrappers
from rtrl_rl.errors import ConfigError

MASK = "rtrl_rl.envs.wrappers.MaskObservation"


def test_mask_keeps_the_chosen_entries_and_bounds():
    env = MaskObservation(gymnasium.make("CartPole-v1"), keep=[0, 2])
    full, _ = env.env.reset(seed=3)
    masked, _ = env.reset(seed=3)
    np.testing.assert_array_equal(masked, full[[0, 2]])
    base = env.env.observation_space
    np.testing.assert_array_equal(env.observation_space.low, base.low[[0, 2]])
    np.testing.assert_array_equal(env.observation_space.high, base.high[[0, 2]])


def test_wrappers_apply_in_the_config_order():
    specs = [{"_target_": MASK, "keep": [0, 2]}, {"_target_": MASK, "keep": [1]}]
    env = apply_wrappers(gymnasium.make("CartPole-v1"), specs)
    full, _ = gymnasium.make("CartPole-v1").reset(seed=5)
    obs, _ = env.reset(seed=5)
    np.testing.assert_array_equal(obs, full[[2]])  # the pole angle
    vec = make_env({"family": "gym", "id": "CartPole-v1", "wrappers": specs}, 2, seed=0)
    assert vec.spec.obs_shape == (1,)
    vec.close()


@pytest.mark.parametrize("wrappers, message", [
    ([{"_target_": "gymnasium.wrappers.NoSuchWrapper"}],
     "env.wrappers[0]: cannot import 'gymnasium.wrappers.NoSuchWrapper'"),
    ([{"_target_": "no_such_module.Wrapper"}], "cannot import 'no_such_module.Wrapper'"),
    ([{"keep": [0]}], "env.wrappers[0]: expected a mapping with a '_target_' string"),
    ([{"_target_": MASK, "keep": [0]}, {"_target_": MASK, "kep": [0]}],
     "env.wrappers[1]: rtrl_rl.envs.wrappers.MaskObservation does not take these options"),
    ([{"_target_": "gymnasium.wrappers.ClipReward", "mn_reward": 0}],
     "does not take these options"),
    ([{"_target_": "math.pi"}], "'math.pi' is not callable"),
])
def test_bad_wrappers_are_one_line_errors_before_any_env(wrappers, message):
    with pytest.raises(ConfigError) as err:
        validate_env_config({"family": "gym", "id": "CartPole-v1", "wrappers": wrappers})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_mask_refuses_bad_indices_and_spaces():
    with pytest.raises(ConfigError, match="keep must be non-empty indices in"):
        MaskObservation(gymnasium.make("CartPole-v1"), keep=[4])
    with pytest.raises(ConfigError, match="needs a flat Box observation"):
        MaskObservation(gymnasium.make("FrozenLake-v1"), keep=[0])


def test_unknown_ids_hint_at_the_module_form():
    with pytest.raises(ConfigError, match=r"try env.id=minigrid:MiniGrid-Empty-5x5-v0"):
        validate_env_config({"family": "gym", "id": "MiniGrid-Empty-5x5-v0"})
    with pytest.raises(ConfigError, match=r"name the module: env.id=module:Foo-v0"):
        validate_env_config({"family": "gym", "id": "Foo-v0"})
    validate_env_config({"family": "gym", "id": "tests.envs.space_envs:DictObs-v0"})


def test_a_wrapper_that_fails_to_build_is_one_line_before_a_run():
    # POPGym's wrappers assert that they wrap its raw env, which gymnasium.make wraps
    cfg = {"family": "gym", "id": "popgym:popgym-RepeatFirstEasy-v0",
           "wrappers": [{"_target_": "popgym.wrappers.PreviousAction"}]}
    with pytest.raises(ConfigError) as err:
        validate_env_config(cfg)
    msg = str(err.value)
    assert msg.startswith("env.wrappers[0]: popgym.wrappers.PreviousAction failed to wrap the "
                          "env: AssertionError") and "model.first_input=true" in msg
    assert "\n" not in msg
