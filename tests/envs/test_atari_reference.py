"""The Atari adapter against gymnasium's reference preprocessing over ALE's single env.

The reference, per stream, is the stack the field uses (gymnasium >= 1.0 names)::

    gymnasium.make("ALE/<Game>-v5", frameskip=1, repeat_action_probability=0.0,
                   max_num_frames_per_episode=0)        # raw frames, no sticky actions
    -> _ResetStart(FIRE if the game has it, then k NOOP frames)
    -> gymnasium.wrappers.TimeLimit(max_episode_steps=max_episode_frames)
    -> gymnasium.wrappers.AtariPreprocessing(noop_max=0, frame_skip=4, screen_size=84,
                                             grayscale_obs=True, terminal_on_life_loss=False)
    -> gymnasium.wrappers.FrameStackObservation(4, padding_type="zero")

driven with the same actions; each reference episode that ends is ``reset()`` by the test,
as a gymnasium user would. With ``AtariConfig`` defaults (sticky actions off) every
observation stack, reward, ``first`` and ``done`` of the adapter equals the reference's, bit
for bit, across game overs and truncations. That covers what both sides compute the same
way: the action repeat, the max-pool over the last two frames of each repeat (none at a
reset, where the second buffer is zeros), ALE's palette grayscale, the resize (OpenCV
``INTER_AREA`` on both sides: ALE's vector backend links OpenCV, AtariPreprocessing calls
``cv2.resize``), the oldest-first frame order of the stack, raw (unclipped) rewards and an
episode that ends part-way through an action repeat.

Intended differences, each tested below as a difference:

1. No-op starts. The backend draws ``d`` uniformly from ``[0, noop_max - 1]``; the FIRE
   press (2.) takes the first of those frames, so ``max(d - 1, 0)`` NOOP frames follow it in
   a game with FIRE and ``d`` in one without. AtariPreprocessing draws from
   ``[1, noop_max]`` with its own RNG. The counts therefore cannot be made equal through
   seeds: the exact comparisons use ``noop_max = 0`` (none on either side), and a separate
   test reads the backend's count from its ``episode_frame_number`` and plays the same count
   in the reference (``_ResetStart``).
2. FIRE on reset (``fire_reset``, on by default): one FIRE frame after each game reset in
   games that have FIRE. AtariPreprocessing has no such step (hence ``_ResetStart`` in the
   reference); with ``fire_reset = False`` the adapter equals plain AtariPreprocessing.
3. Frame-stack padding at a reset: zeros. ``FrameStackObservation``'s default
   (``padding_type="reset"``) repeats the first frame instead.
4. ``max_episode_frames`` counts the emulator frames of agent steps only. ALE's own
   ``max_num_frames_per_episode`` (the single env's, used by ``gymnasium.make``) counts the
   episode frame number, which includes the reset's FIRE and no-op frames (fewer than
   ``noop_max``), so it ends an episode that many frames earlier. The reference therefore
   puts gymnasium's ``TimeLimit`` (counting raw steps) under AtariPreprocessing instead.
5. Life loss with ``episodic_life``: the step that loses a life has ``first = 1`` and
   ``done = 0`` and the game plays on (observations stay equal to the reference's). With
   ``AtariPreprocessing(terminal_on_life_loss=True)`` the same step is a termination, the
   action repeat stops at the frame of the loss and the user's ``reset()`` starts a new game.
6. The last observation of an ended episode is not returned (same-step auto-reset: the step
   returns the next episode's first stack, the reference's ``reset()`` returns the same).

Sticky actions are not compared: the two sides seed ALE's RNG differently. With them off,
ALE's RNG is unused, so the references are not seeded (the adapter is, with ``SEED``); the
no-op counts, which the backend draws from its own seeded RNG, are read from the backend.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

pytest.importorskip("ale_py")
pytest.importorskip("cv2")  # AtariPreprocessing resizes with OpenCV

import ale_py  # noqa: E402
import gymnasium as gym  # noqa: E402
from gymnasium.wrappers import (  # noqa: E402
    AtariPreprocessing,
    FrameStackObservation,
    TimeLimit,
)

from rtrl_rl.envs import make_env  # noqa: E402
from rtrl_rl.envs.atari import AtariEnv  # noqa: E402
from rtrl_rl.envs.config import AtariConfig  # noqa: E402

gym.register_envs(ale_py)

GYM_IDS = {"pong": "ALE/Pong-v5", "breakout": "ALE/Breakout-v5", "freeway": "ALE/Freeway-v5"}
SEED = 0


class _ResetStart(gym.Wrapper):
    """After every game reset: one FIRE frame (if ``fire`` and the game has FIRE), then
    ``noops()`` NOOP frames; the backend's reset sequence, played on raw frames."""

    def __init__(self, env: gym.Env, fire: bool, noops: Callable[[], int] = lambda: 0) -> None:
        super().__init__(env)
        self.fire, self.noops = fire, noops

    def reset(self, **kwargs) -> tuple[np.ndarray, dict]:
        obs, info = self.env.reset(**kwargs)
        meanings = self.env.unwrapped.get_action_meanings()
        if self.fire and "FIRE" in meanings:
            self.env.step(meanings.index("FIRE"))
        for _ in range(self.noops()):
            self.env.step(0)
        return obs, info


def _reference(game: str, cfg: AtariConfig, *, noops: Callable[[], int] = lambda: 0,
               padding: str = "zero", ale_frame_limit: bool = False,
               terminal_on_life_loss: bool = False) -> gym.Env:
    """The module docstring's reference stack for one stream. ``ale_frame_limit``: let ALE
    count ``max_episode_frames`` (difference 4) instead of ``TimeLimit``."""
    env = gym.make(GYM_IDS[game], frameskip=1, repeat_action_probability=0.0,
                   full_action_space=cfg.full_action_space,
                   max_num_frames_per_episode=cfg.max_episode_frames if ale_frame_limit else 0)
    env = _ResetStart(env, cfg.fire_reset, noops)
    if not ale_frame_limit:
        env = TimeLimit(env, max_episode_steps=cfg.max_episode_frames)
    env = AtariPreprocessing(env, noop_max=0, frame_skip=cfg.frameskip,
                             screen_size=cfg.frame_size, grayscale_obs=True,
                             terminal_on_life_loss=terminal_on_life_loss)
    return FrameStackObservation(env, cfg.frame_stack, padding_type=padding)


def _cfg(game: str, **opts) -> AtariConfig:
    return AtariConfig(game=game, num_threads=1, **{"noop_max": 0, **opts})


def _actions(num_actions: int, steps: int, num_envs: int) -> np.ndarray:
    return np.random.default_rng(1).integers(num_actions, size=(steps, num_envs))


def _compare(game: str, cfg: AtariConfig, steps: int, num_envs: int = 2,
             **ref_opts) -> dict[str, int]:
    """Step the adapter and one reference per stream with the same actions; assert every
    output equal. Returns counts of the events seen, so callers can check coverage."""
    env = make_env(cfg, num_envs, seed=SEED)
    refs = [_reference(game, cfg, **ref_opts) for _ in range(num_envs)]
    ts = env.reset()
    ref_obs = [r.reset()[0] for r in refs]
    ref_lives = [r.unwrapped.ale.lives() for r in refs]
    np.testing.assert_array_equal(ts.obs.numpy(), np.stack(ref_obs))
    seen = {"ends": 0, "life_losses": 0, "rewards": 0}
    for t, acts in enumerate(_actions(env.spec.num_actions, steps, num_envs)):
        ts = env.step(torch.from_numpy(acts))
        for b, ref in enumerate(refs):
            obs, reward, terminated, truncated, _ = ref.step(int(acts[b]))
            ended = terminated or truncated
            lives = ref.unwrapped.ale.lives()
            life_lost = cfg.episodic_life and not ended and lives < ref_lives[b]
            ref_lives[b] = lives
            if ended:
                obs, _ = ref.reset()
                ref_lives[b] = ref.unwrapped.ale.lives()
            where = f"step {t}, stream {b}"
            np.testing.assert_array_equal(ts.obs[b].numpy(), obs, err_msg=where)
            assert float(ts.reward[b]) == reward, where
            assert bool(ts.first[b]) == (ended or life_lost), where
            assert bool(ts.done[b]) == ended, where
            seen["ends"] += ended
            seen["life_losses"] += life_lost
            seen["rewards"] += reward != 0
    env.close()
    return seen


def test_game_overs_and_rewards_match_reference():
    """Breakout with random actions loses its five lives within ~150 steps."""
    seen = _compare("breakout", _cfg("breakout"), steps=300)
    assert seen["ends"] >= 2 and seen["rewards"] >= 2


@pytest.mark.parametrize("frames", [200, 202])
def test_truncations_match_reference(frames: int):
    """202 frames is not a multiple of the action repeat: the episode ends part-way through
    a step, whose reward and (dropped) last stack cover only the frames played."""
    seen = _compare("pong", _cfg("pong", max_episode_frames=frames), steps=110)
    assert seen["ends"] >= 2 * 2


def test_episodic_life_marks_losses_and_plays_on():
    """Difference 5: ``first`` at each life loss, ``done`` only at game over, and the
    observations stay equal to a reference that is not reset at life losses."""
    seen = _compare("breakout", _cfg("breakout", episodic_life=True), steps=300)
    assert seen["life_losses"] >= 4 and seen["ends"] >= 1


def test_life_loss_step_matches_terminal_on_life_loss():
    """Difference 5: the first life loss is the step on which
    ``AtariPreprocessing(terminal_on_life_loss=True)`` terminates."""
    cfg = _cfg("breakout", episodic_life=True)
    env = make_env(cfg, 1, seed=SEED)
    ref = _reference("breakout", cfg, terminal_on_life_loss=True)
    env.reset()
    ref.reset()
    for t, acts in enumerate(_actions(env.spec.num_actions, 300, 1)):
        ts = env.step(torch.from_numpy(acts))
        _, _, terminated, _, _ = ref.step(int(acts[0]))
        assert bool(ts.first[0]) == terminated, f"step {t}"
        if terminated:
            assert not ts.done[0] and ref.unwrapped.ale.lives() == 4
            break
    else:
        pytest.fail("no life lost in 300 steps")
    env.close()


def test_without_fire_reset_equals_plain_atari_preprocessing():
    """Difference 2: with ``fire_reset = False`` the reference needs no FIRE frame."""
    cfg = _cfg("breakout", fire_reset=False, max_episode_frames=240)
    seen = _compare("breakout", cfg, steps=130)
    assert seen["ends"] >= 2 * 2


def test_fire_reset_and_padding_are_differences():
    """Differences 2 and 3, each against the reference that lacks the matching piece: the
    stacks at reset differ (zeros vs. the repeated first frame) and the game without the
    FIRE frame diverges."""
    cfg = _cfg("breakout")
    ours = make_env(cfg, 1, seed=SEED)
    first = ours.reset().obs[0].numpy()
    repeated = _reference("breakout", cfg, padding="reset").reset()[0]
    np.testing.assert_array_equal(first[-1], repeated[-1])
    assert first[-1].any() and not first[:-1].any()
    assert all(np.array_equal(frame, repeated[-1]) for frame in repeated[:-1])

    no_fire = _reference("breakout", AtariConfig(game="breakout", fire_reset=False))
    no_fire.reset()
    acts = _actions(ours.spec.num_actions, 60, 1)
    diverged = False
    for a in acts:
        obs = ours.step(torch.from_numpy(a)).obs[0].numpy()
        diverged |= not np.array_equal(obs, no_fire.step(int(a[0]))[0])
    assert diverged
    ours.close()


def test_ale_frame_limit_counts_reset_frames():
    """Difference 4: with a limit of 41 frames, the adapter truncates on step 11 (at its
    first frame, the 41st of play); ALE's own limit also counts the reset's FIRE frame, so
    its 41st frame is the last of step 10."""
    cfg = _cfg("pong", max_episode_frames=41)
    env = make_env(cfg, 1, seed=SEED)
    ref = _reference("pong", cfg, ale_frame_limit=True)
    env.reset()
    ref.reset()
    ours_end = ref_end = None
    for t in range(1, 13):
        ts = env.step(torch.zeros(1, dtype=torch.int64))
        _, _, terminated, truncated, _ = ref.step(0)
        if ts.first[0] and ours_end is None:
            ours_end = t
        if (terminated or truncated) and ref_end is None:
            ref_end = t
    assert (ours_end, ref_end) == (11, 10)
    env.close()


@pytest.mark.parametrize("game", ["breakout", "freeway"])
def test_noop_starts_match_reference_with_the_same_count(game: str):
    """Difference 1: the backend's no-op count per reset, read from its
    ``episode_frame_number`` (FIRE plus no-ops), lies in ``[0, noop_max - 1]``; the
    reference playing the same count gives the same stream. Breakout has FIRE, Freeway not."""
    noop_max, num_envs = 30, 4
    cfg = AtariConfig(game=game, noop_max=noop_max, max_episode_frames=120, num_threads=1)
    env = AtariEnv(cfg, num_envs, seed=SEED)
    start_frames = np.zeros(num_envs, dtype=np.int64)  # frames played by the latest reset
    backend_reset, backend_step = env._env.reset, env._env.step

    def reset(**kwargs) -> tuple[np.ndarray, dict]:
        obs, info = backend_reset(**kwargs)
        start_frames[:] = info["episode_frame_number"]
        return obs, info

    def step(actions: np.ndarray) -> tuple:
        out = backend_step(actions)
        ended = np.logical_or(out[2], out[3])
        start_frames[ended] = out[4]["episode_frame_number"][ended]
        return out

    env._env.reset, env._env.step = reset, step
    counts: list[int] = []

    def noops_of(b: int) -> Callable[[], int]:
        def draw() -> int:
            counts.append(int(start_frames[b]) - fire)
            return counts[-1]
        return draw

    refs = [_reference(game, cfg, noops=noops_of(b)) for b in range(num_envs)]
    fire = int(cfg.fire_reset and "FIRE" in refs[0].unwrapped.get_action_meanings())
    ts = env.reset()
    np.testing.assert_array_equal(ts.obs.numpy(), np.stack([r.reset()[0] for r in refs]))
    for t, acts in enumerate(_actions(env.spec.num_actions, 90, num_envs)):
        ts = env.step(torch.from_numpy(acts))
        for b, ref in enumerate(refs):
            obs, reward, terminated, truncated, _ = ref.step(int(acts[b]))
            if terminated or truncated:
                obs, _ = ref.reset()
            np.testing.assert_array_equal(ts.obs[b].numpy(), obs, err_msg=f"step {t}")
            assert float(ts.reward[b]) == reward and bool(ts.first[b]) == (terminated or
                                                                         truncated)
    env.close()
    assert len(counts) >= 2 * num_envs  # every stream went through an auto-reset
    assert min(counts) >= 0 and max(counts) <= noop_max - 1 - fire
    assert len(set(counts)) >= 5  # drawn, not fixed
