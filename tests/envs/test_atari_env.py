"""Atari adapter (ALE vector backend): shapes, exact `first`, raw rewards, lives, seeding."""

from __future__ import annotations

import pytest
import torch

from rtrl_rl.envs import VecEnv, make_env

pytest.importorskip("ale_py")


def _random_actions(env, gen):
    return torch.randint(env.spec.num_actions, (env.spec.num_envs,), generator=gen)


def test_shapes_dtypes_and_reset():
    env = make_env({"family": "atari", "game": "pong", "num_threads": 1}, 2, seed=0)
    assert isinstance(env, VecEnv)
    assert env.spec.obs_shape == (4, 84, 84) and env.spec.obs_dtype == torch.uint8
    assert env.spec.num_actions == 6  # Pong's minimal action set
    ts = env.reset()
    assert ts.obs.shape == (2, 4, 84, 84) and ts.obs.dtype == torch.uint8
    assert ts.first.all() and not ts.done.any()
    ts2 = env.step(torch.zeros(2, dtype=torch.int64))
    assert ts2.obs.shape == (2, 4, 84, 84) and ts2.reward.dtype == torch.float32
    assert ts2.first.dtype == torch.bool and ts2.episode_length.dtype == torch.int64
    before = ts2.obs.clone()
    env.step(torch.zeros(2, dtype=torch.int64))
    assert torch.equal(ts2.obs, before)  # returned tensors are not overwritten later
    env.close()
    full = make_env({"family": "atari", "game": "pong", "full_action_space": True}, 1, seed=0)
    assert full.spec.num_actions == 18
    full.close()


def test_first_is_exact_at_truncation():
    """max_episode_frames = 40 emulator frames = 10 agent steps at frameskip 4."""
    env = make_env({"family": "atari", "game": "pong", "max_episode_frames": 40,
                    "num_threads": 1}, 2, seed=0)
    env.reset()
    gen = torch.Generator().manual_seed(0)
    for t in range(1, 31):
        ts = env.step(_random_actions(env, gen))
        end = t % 10 == 0
        assert ts.first.tolist() == [end, end] and ts.done.tolist() == [end, end]
        if end:
            assert ts.episode_length.tolist() == [10, 10]
    env.close()


def test_rewards_are_raw_scores_and_returns_add_up():
    env = make_env({"family": "atari", "game": "space_invaders", "max_episode_frames": 800,
                    "num_threads": 1}, 2, seed=1)
    env.reset()
    gen = torch.Generator().manual_seed(0)
    running = torch.zeros(2)
    big, finished = False, 0
    for _ in range(400):
        ts = env.step(_random_actions(env, gen))
        running += ts.reward
        big |= bool((ts.reward > 1).any())
        for i in ts.done.nonzero().flatten().tolist():
            assert ts.episode_return[i] == running[i]
            running[i] = 0
            finished += 1
    assert big, "rewards look clipped"
    assert finished >= 2
    env.close()


def test_episodic_life_marks_life_losses_but_reports_whole_games():
    env = make_env({"family": "atari", "game": "breakout", "episodic_life": True,
                    "num_threads": 1}, 1, seed=0)
    env.reset()
    gen = torch.Generator().manual_seed(0)
    lives_lost, games, steps, ret = 0, 0, 0, 0.0
    for _ in range(3000):
        ts = env.step(_random_actions(env, gen))
        steps += 1
        ret += float(ts.reward[0])
        if ts.first[0] and not ts.done[0]:
            lives_lost += 1
        if ts.done[0]:
            assert ts.first[0]
            assert ts.episode_length[0] == steps and ts.episode_return[0] == ret
            assert lives_lost == 4  # breakout: 5 lives, the last loss ends the game
            games += 1
            lives_lost, steps, ret = 0, 0, 0.0
            if games == 2:
                break
    assert games == 2
    env.close()


def test_seeding_repeats_and_sticky_actions_option():
    def run(seed, **opts):
        env = make_env({"family": "atari", "game": "breakout", "num_threads": 1, **opts}, 2,
                       seed=seed)
        gen = torch.Generator().manual_seed(0)
        obs = [env.reset().obs]
        for _ in range(40):
            obs.append(env.step(_random_actions(env, gen)).obs)
        env.close()
        return torch.stack(obs)

    a = run(0)
    assert torch.equal(a, run(0))
    assert not torch.equal(a, run(1))
    assert torch.equal(run(0, sticky_actions=0.25), run(0, sticky_actions=0.25))
