"""Gymnasium adapter: shapes, exact `first` against single envs, spaces, seeding."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch

from rtrl_rl.envs import ConfigError, VecEnv, make_env
from rtrl_rl.envs.seeding import derive_seed


def test_cartpole_first_matches_single_envs_stepped_by_hand():
    """Each stream equals a plain CartPole seeded like it and reset by hand when it ends."""
    b, seed, steps = 3, 7, 300
    env = make_env({"family": "gym", "id": "CartPole-v1"}, b, seed=seed)
    assert isinstance(env, VecEnv)
    assert env.spec.obs_shape == (4,) and env.spec.num_actions == 2
    ts = env.reset()
    base = derive_seed(seed, "train", 0)
    refs = [gymnasium.make("CartPole-v1") for _ in range(b)]
    ref_obs = [r.reset(seed=base + i)[0] for i, r in enumerate(refs)]
    np.testing.assert_array_equal(ts.obs.numpy(), np.stack(ref_obs))
    assert ts.obs.dtype == torch.float32 and ts.first.all() and not ts.done.any()
    lengths = [0] * b
    gen = torch.Generator().manual_seed(0)
    n_done = 0
    for _ in range(steps):
        actions = torch.randint(2, (b,), generator=gen)
        ts = env.step(actions)
        for i, r in enumerate(refs):
            obs, rew, term, trunc, _ = r.step(int(actions[i]))
            lengths[i] += 1
            ended = term or trunc
            assert bool(ts.first[i]) == ended and bool(ts.done[i]) == ended
            assert ts.reward[i] == rew
            if ended:
                n_done += 1
                assert ts.episode_length[i] == lengths[i]
                assert ts.episode_return[i] == lengths[i]  # CartPole pays 1 per step
                obs, _ = r.reset()
                lengths[i] = 0
            np.testing.assert_array_equal(ts.obs[i].numpy(), obs)
    assert n_done > 10
    env.close()


def test_truncation_sets_first_and_async_matches_sync():
    cfg = {"family": "gym", "id": "CartPole-v1", "max_episode_steps": 5}
    sync = make_env(cfg, 2, seed=0)
    asyn = make_env({**cfg, "vectorization": "async"}, 2, seed=0)
    try:
        a, s = asyn.reset(), sync.reset()
        assert torch.equal(a.obs, s.obs)
        for t in range(1, 11):
            acts = torch.tensor([0, 1])
            a, s = asyn.step(acts), sync.step(acts)
            assert torch.equal(a.obs, s.obs) and torch.equal(a.first, s.first)
            if t % 5 == 0:  # random-ish actions cannot fail CartPole within 5 steps
                assert s.first.all() and (s.episode_length == 5).all()
            else:
                assert not s.first.any()
    finally:
        asyn.close()
        sync.close()


def test_discrete_observations_are_one_hot():
    env = make_env({"family": "gym", "id": "FrozenLake-v1",
                    "make_kwargs": {"is_slippery": False}}, 2, seed=0)
    ts = env.reset()
    assert ts.obs.shape == (2, 16) and ts.obs.dtype == torch.float32
    assert torch.equal(ts.obs.sum(1), torch.ones(2)) and (ts.obs[:, 0] == 1).all()
    ts = env.step(torch.tensor([2, 1]))  # right, down
    assert ts.obs[0, 1] == 1 and ts.obs[1, 4] == 1
    env.close()


def test_unsupported_spaces_are_config_errors():
    import tests.envs.space_envs  # noqa: F401  (registers the test envs)

    for env_id, kind in (("TextObs-v0", "a Text observation space"),
                         ("MultiBinaryAct-v0", "action space MultiBinary")):
        with pytest.raises(ConfigError) as info:
            make_env({"family": "gym", "id": env_id}, 1, seed=0)
        assert f"env.id: '{env_id}' has {kind}" in str(info.value)
        assert "\n" not in str(info.value)


def test_box_actions_are_clipped_when_stepping():
    import tests.envs.space_envs  # noqa: F401  (its env asserts that actions are in bounds)

    env = make_env({"family": "gym", "id": "BoxAct-v0"}, 2, seed=0)
    assert env.spec.action.kind == "box" and env.spec.action.shape == (2,)
    env.reset(seed=3)
    # reward -|a - high|: 0 for a clipped to the upper bound, -2 per entry at the lower one
    reward = env.step(torch.tensor([[50.0, 1.0], [-50.0, -3.0]])).reward
    torch.testing.assert_close(reward, torch.tensor([0.0, -4.0]))
    env.close()


def test_seeding_repeats():
    def run(seed):
        env = make_env({"family": "gym", "id": "CartPole-v1"}, 2, seed=seed)
        obs = [env.reset().obs]
        for _ in range(20):
            obs.append(env.step(torch.tensor([0, 1])).obs)
        env.close()
        return torch.stack(obs)

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))
