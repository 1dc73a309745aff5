"""The env check: bad env data is stopped (error), repaired (zero) or cut (reset) where it
enters, through a real gymnasium env that goes bad at a chosen step."""

from __future__ import annotations

import math

import pytest
import torch

from rtrl_rl.envs import ConfigError, EnvSpec, TimeStep, make_env
from rtrl_rl.envs.guard import CheckedEnv
from rtrl_rl.errors import EnvDataError
from tests.envs import bad_envs

ID = "tests.envs.bad_envs:BadData-v0"
B = 4


def bad_env(mode: str = "error", **kwargs) -> CheckedEnv:
    bad_envs.BadData.built = 0  # the stream-th sub-env built from here on goes bad
    return make_env({"family": "gym", "id": ID, "nonfinite": mode, "make_kwargs": kwargs},
                    B, seed=0)


def steps(env: CheckedEnv, n: int) -> list[TimeStep]:
    env.reset()
    return [env.step(torch.zeros(B, dtype=torch.long)) for _ in range(n)]


@pytest.mark.parametrize("field, value, named", [
    ("reward", math.nan, "reward is nan"),
    ("reward", -math.inf, "reward is -inf"),
    ("obs", math.inf, "observation[2] is inf"),
    ("obs", math.nan, "observation[2] is nan"),
])
def test_error_names_env_stream_step_field_and_value(field, value, named):
    env = bad_env(field=field, value=value, at=7, stream=2)
    with pytest.raises(EnvDataError) as e:
        steps(env, 10)
    msg = str(e.value)
    assert msg.startswith(f"env gym:{ID}: stream 2, step 7: {named}")
    assert "\n" not in msg
    env.close()


def test_a_worker_names_the_runs_stream():
    env = bad_env(at=3, stream=1)
    env.first_stream = 8
    with pytest.raises(EnvDataError, match="stream 9, step 3"):
        steps(env, 5)
    env.close()


def test_a_wrong_shaped_observation_is_an_error_in_every_mode():
    for mode in ("error", "zero", "reset"):
        env = bad_env(mode, field="shape", at=4)
        with pytest.raises(EnvDataError, match=r"step 4: a sub-env's observation does not fit"):
            steps(env, 6)
        env.close()


class FakeEnv:
    """A VecEnv whose step returns whatever it is given."""

    def __init__(self, obs: torch.Tensor, dtype=torch.float32) -> None:
        self.spec = EnvSpec(obs_shape=(3,), obs_dtype=dtype, num_envs=2, num_actions=2)
        self.obs = obs

    def reset(self, seed=None) -> TimeStep:
        return TimeStep.at_reset(torch.zeros(2, 3, dtype=self.spec.obs_dtype))

    def step(self, actions) -> TimeStep:
        ts = TimeStep.at_reset(self.obs.clone())
        ts.first[:] = False
        return ts

    def close(self) -> None:
        pass


def test_wrong_dtype_and_shape_are_errors():
    with pytest.raises(EnvDataError, match=r"dtype torch.float64, expected \[2, 3\] and "
                                           r"torch.float32"):
        CheckedEnv(FakeEnv(torch.zeros(2, 3, dtype=torch.float64)), "fake").step(None)
    with pytest.raises(EnvDataError, match=r"shape \[2, 4\]"):
        CheckedEnv(FakeEnv(torch.zeros(2, 4)), "fake").step(None)


def test_huge_but_finite_values_pass():
    obs = torch.full((2, 3), 3e38)  # the sum overflows; no entry is non-finite
    ts = CheckedEnv(FakeEnv(obs), "fake").step(None)
    assert torch.equal(ts.obs, obs)


def test_zero_mode_zeroes_counts_and_drops_the_episode_return():
    env = bad_env("zero", field="reward", at=3, stream=1)
    out = steps(env, 2 * bad_envs.LENGTH)
    assert out[2].reward.tolist() == [1.0, 0.0, 1.0, 1.0]
    assert not out[2].first.any()
    end = out[bad_envs.LENGTH - 1]  # the first episodes end: stream 1's return was nan
    assert end.done.tolist() == [True, False, True, True]
    assert all(math.isfinite(ts.episode_return[ts.done].sum()) for ts in out)
    assert env.take_counts() == {"env/nonfinite_zeroed": 1, "env/nonfinite_resets": 0,
                                 "env/nonfinite_episodes": 1}
    assert env.take_counts()["env/nonfinite_zeroed"] == 0  # increments, taken once
    env.close()


def test_zero_mode_zeroes_only_the_bad_entries():
    env = bad_env("zero", field="obs", value=math.inf, at=2, stream=3)
    ts = steps(env, 2)[-1]
    assert ts.obs[3, 2] == 0.0 and ts.obs[3].abs().sum() > 0
    env.close()


def test_reset_mode_restarts_the_stream():
    env = bad_env("reset", field="reward", at=3, stream=1)
    out = steps(env, 2 * bad_envs.LENGTH + 5)
    assert out[2].reward.tolist() == [1.0, 0.0, 1.0, 1.0]
    assert out[2].first.tolist() == [False, True, False, False]
    # the cut episode is not reported; the restarted one ends 20 steps after the cut
    assert not out[bad_envs.LENGTH - 1].done[1]
    assert out[2 + bad_envs.LENGTH].done[1]
    assert out[2 + bad_envs.LENGTH].episode_return[1] == bad_envs.LENGTH
    assert env.take_counts()["env/nonfinite_resets"] == 1
    env.close()


def test_every_family_is_checked():
    env = make_env({"family": "delayed_recall", "delay": 2}, 2, seed=0)
    assert isinstance(env, CheckedEnv) and env.label == "delayed_recall"


def test_an_unknown_mode_is_one_line():
    with pytest.raises(ConfigError, match=r"^env.nonfinite: unknown nonfinite mode 'nan'; "
                                          "choices: error, reset, zero$"):
        make_env({"family": "gym", "id": "CartPole-v1", "nonfinite": "nan"}, 2, seed=0)


def test_a_deferred_check_finds_the_step_in_the_rollout():
    env = bad_env(field="obs", value=math.inf, at=7, stream=2)
    check = env.defer()
    out = steps(env, 10)  # no error at step 7: the caller checks whole rollouts
    reward = torch.stack([ts.reward for ts in out])
    obs = torch.stack([ts.obs for ts in out])
    with pytest.raises(EnvDataError, match=r"stream 2, step 7: observation\[2\] is inf"):
        check(reward, obs)
    assert bad_env("zero").defer() is None  # repairs act at every step
    env.close()
