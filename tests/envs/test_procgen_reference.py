"""The ProcGen adapter against procgen's own vector env, ``procgen.ProcgenEnv``.

The reference is procgen's baselines-style VecEnv (``procgen.ProcgenEnv``: HWC frames under
``"rgb"``, ``done`` flags, one info dict per stream), built here from the config's meaning
rather than from the adapter's code: the train split plays ``[start_level, start_level +
num_levels)``, the eval split every level from ``start_level + num_levels`` upward, and the
backend's ``rand_seed`` is ``derive_seed(seed, split, k)`` for the ``k``-th (re)build. Driven
with the same actions for a few hundred steps, across many level changes, in both splits, the
adapter's observations (CHW) equal the reference's frames transposed here, its rewards equal
the reference's, and ``first`` and ``done`` both equal the reference's ``done``: the step that
ends a level brings that level's last reward and the next level's first frame.

Levels are checked against the game, not against the level sampler: for each level a stream
starts, a one-level env of that level seed (``ProcgenGym3Env(num_levels=1,
start_level=seed)``) must show the same first frame, and the seeds must lie in the split's
range (eval: none from the training range).

Intended differences: none in the stream. The adapter adds a ``reset()`` (gym3 has none): it
rebuilds the backend with the next seed of its seed stream, which the last test compares with
a reference built from that seed.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch

pytest.importorskip("procgen")

from rtrl_rl.envs import make_env  # noqa: E402
from rtrl_rl.envs.config import ProcgenConfig  # noqa: E402
from rtrl_rl.envs.seeding import derive_seed  # noqa: E402

INT32_MAX = 2**31 - 1
SEED, NUM_ENVS = 3, 4


def _procgen():
    with contextlib.redirect_stderr(io.StringIO()):  # the legacy gym import's notice
        import procgen
    return procgen


def _game_options(cfg: ProcgenConfig) -> dict:
    return dict(env_name=cfg.game, distribution_mode=cfg.distribution_mode,
                use_backgrounds=cfg.use_backgrounds, center_agent=cfg.center_agent,
                paint_vel_info=cfg.paint_vel_info)


def _reference(cfg: ProcgenConfig, split: str, build: int = 0):
    if split == "train":
        start, count = cfg.start_level, cfg.num_levels
    else:  # every level after the training range
        start = cfg.start_level + cfg.num_levels
        count = INT32_MAX - start
    return _procgen().ProcgenEnv(num_envs=NUM_ENVS, start_level=start, num_levels=count,
                                 rand_seed=derive_seed(SEED, split, build),
                                 **_game_options(cfg))


def _chw(frames: np.ndarray) -> np.ndarray:
    return np.stack([np.stack([f[:, :, c] for c in range(3)]) for f in frames])


def _level_start(cfg: ProcgenConfig, level_seed: int) -> np.ndarray:
    """The first frame of level ``level_seed``, CHW, from a one-level env."""
    one = _procgen().ProcgenGym3Env(num=1, num_levels=1, start_level=level_seed,
                                    rand_seed=12345, **_game_options(cfg))
    frame = one.observe()[1]["rgb"][0]
    one.close()
    return _chw(frame[None])[0]


def _compare(cfg: ProcgenConfig, split: str, steps: int) -> dict[int, np.ndarray]:
    """Assert the adapter's stream equal to the reference's; returns the first frame of
    every level a stream started, by level seed."""
    env = make_env(cfg, NUM_ENVS, seed=SEED, split=split)
    ref = _reference(cfg, split)
    ts = env.reset()
    obs = ref.reset()
    np.testing.assert_array_equal(ts.obs.numpy(), _chw(obs["rgb"]))
    starts = {int(i["level_seed"]): ts.obs[b].numpy() for b, i in enumerate(ref.env.get_info())}
    rng = np.random.default_rng(0)
    ends = 0
    for t in range(steps):
        acts = rng.integers(15, size=NUM_ENVS)
        ts = env.step(torch.from_numpy(acts))
        obs, reward, done, infos = ref.step(acts.astype(np.int32))
        np.testing.assert_array_equal(ts.obs.numpy(), _chw(obs["rgb"]), err_msg=f"step {t}")
        np.testing.assert_array_equal(ts.reward.numpy(), reward, err_msg=f"step {t}")
        np.testing.assert_array_equal(ts.first.numpy(), done, err_msg=f"step {t}")
        np.testing.assert_array_equal(ts.done.numpy(), done, err_msg=f"step {t}")
        for b in np.flatnonzero(done):
            starts.setdefault(int(infos[b]["level_seed"]), ts.obs[b].numpy())
        ends += int(done.sum())
    env.close()
    ref.close()
    assert ends >= 2 * NUM_ENVS
    return starts


@pytest.mark.parametrize("split", ["train", "eval"])
@pytest.mark.parametrize("game", ["fruitbot", "starpilot"])
def test_stream_and_levels_match_reference(game: str, split: str):
    """Fruitbot and starpilot end levels often under random actions (both reward and
    penalize, so rewards of both signs arrive, some with ``first``)."""
    cfg = ProcgenConfig(game=game)
    starts = _compare(cfg, split, steps=200)
    seeds = sorted(starts)
    if split == "train":
        assert all(0 <= s < cfg.num_levels for s in seeds)
    else:
        assert all(s >= cfg.num_levels for s in seeds)
    assert len(seeds) >= NUM_ENVS + 2
    for s in seeds[:6]:
        np.testing.assert_array_equal(starts[s], _level_start(cfg, s), err_msg=f"level {s}")


def test_custom_level_ranges_match_reference():
    """Train levels ``[100, 103)``: few levels, so they repeat; eval starts at 103."""
    cfg = ProcgenConfig(game="fruitbot", start_level=100, num_levels=3)
    starts = _compare(cfg, "train", steps=120)
    assert set(starts) == {100, 101, 102}
    assert min(_compare(cfg, "eval", steps=120)) >= 103


def test_reset_rebuilds_from_the_next_seed():
    """After ``reset()``, the adapter equals a reference built from the second seed of its
    seed stream (``derive_seed(seed, split, 1)``)."""
    cfg = ProcgenConfig(game="fruitbot")
    env = make_env(cfg, NUM_ENVS, seed=SEED, split="eval")
    env.reset()
    for _ in range(5):
        env.step(torch.zeros(NUM_ENVS, dtype=torch.int64))
    ts = env.reset()
    ref = _reference(cfg, "eval", build=1)
    np.testing.assert_array_equal(ts.obs.numpy(), _chw(ref.reset()["rgb"]))
    rng = np.random.default_rng(1)
    for _ in range(30):
        acts = rng.integers(15, size=NUM_ENVS)
        ts = env.step(torch.from_numpy(acts))
        obs, reward, done, _ = ref.step(acts.astype(np.int32))
        np.testing.assert_array_equal(ts.obs.numpy(), _chw(obs["rgb"]))
        np.testing.assert_array_equal(ts.reward.numpy(), reward)
        np.testing.assert_array_equal(ts.first.numpy(), done)
    env.close()
    ref.close()
