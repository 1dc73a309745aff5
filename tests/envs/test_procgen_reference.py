"""The ProcGen adapter against a reference driver of the same compiled games: gym3's cffi one.

The adapter drives procgen's ``libenv.so`` through ``rtrl_rl/envs/procgen_lib.py`` (ctypes).
The reference drives the same library through a driver that shares none of that code:
gym3's ``CEnv`` (``gym3.libenv``, cffi), constructed the way ``procgen.ProcgenGym3Env``
constructs it (procgen 0.10.7's ``env.py``: the wheel's ``data/prebuilt`` library, its
``data/assets`` resource root, and the same options), behind a baselines-style VecEnv
(``_BaselinesVecEnv``: ``reset()``, ``step()`` returning ``(obs, reward, done, infos)``,
``get_info()``, as ``procgen.ProcgenEnv`` / ``gym3.ToBaselinesVecEnv`` behave). ``import
procgen`` is not used: it imports all of gym3 and the legacy gym, which pin numpy < 2;
``gym3.libenv`` alone imports under numpy 2 with only ``cffi`` (gym3 is installed with
``--no-deps`` by the Makefile; the module is skipped only if gym3's libenv or the procgen
wheel is missing).

The reference is built from the config's meaning rather than from the adapter's code: the
train split plays ``[start_level, start_level + num_levels)``, the eval split every level
from ``start_level + num_levels`` upward, and the backend's ``rand_seed`` is
``derive_seed(seed, split, k)`` for the ``k``-th (re)build. Driven with the same actions for
a few hundred steps, across many level changes, in both splits, the adapter's observations
(CHW) equal the reference's HWC ``"rgb"`` frames transposed here, its rewards equal the
reference's, and ``first`` and ``done`` both equal the reference's ``done``: the step that
ends a level brings that level's last reward and the next level's first frame.

Levels are checked against the game, not against the level sampler: for each level a stream
starts, a one-level reference env of that level seed (``num_levels=1, start_level=seed``)
must show the same first frame, and the seeds must lie in the split's range (eval: none from
the training range).

Intended differences: none in the stream. The adapter adds a ``reset()`` (gym3 has none): it
rebuilds the backend with the next seed of its seed stream, which the last test compares with
a reference built from that seed.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch


def _procgen_dir() -> str | None:
    """The installed procgen package's folder, found without importing it."""
    spec = importlib.util.find_spec("procgen")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = list(spec.submodule_search_locations)[0]
    return root if os.path.exists(os.path.join(root, "data", "prebuilt", "libenv.so")) else None


try:
    from gym3.libenv import CEnv
except ImportError:  # gym3 (pip install --no-deps gym3==0.3.3) or cffi missing
    CEnv = None
PROCGEN_DIR = _procgen_dir()
if CEnv is None or PROCGEN_DIR is None:
    pytest.skip("needs gym3's libenv (gym3 with --no-deps, and cffi) and the procgen-mirror "
                "wheel", allow_module_level=True)

from rtrl_rl.envs import make_env  # noqa: E402
from rtrl_rl.envs.config import ProcgenConfig  # noqa: E402
from rtrl_rl.envs.seeding import derive_seed  # noqa: E402

INT32_MAX = 2**31 - 1
SEED, NUM_ENVS = 3, 4
# procgen.env: DISTRIBUTION_MODE_DICT, and len(BaseProcgenEnv.get_combos())
DISTRIBUTION_MODES = {"easy": 0, "hard": 1, "extreme": 2, "memory": 10}
NUM_ACTIONS = 15


def _gym3_env(cfg: ProcgenConfig, num: int, start_level: int, num_levels: int,
              rand_seed: int):
    """``procgen.ProcgenGym3Env(num, cfg.game, ...)`` with its defaults otherwise: the CEnv
    ``BaseProcgenEnv.__init__`` builds."""
    options = {
        "center_agent": bool(cfg.center_agent), "use_generated_assets": False,
        "use_monochrome_assets": False, "restrict_themes": False,
        "use_backgrounds": bool(cfg.use_backgrounds),
        "paint_vel_info": bool(cfg.paint_vel_info),
        "distribution_mode": DISTRIBUTION_MODES[cfg.distribution_mode],
        "env_name": cfg.game, "num_levels": num_levels, "start_level": start_level,
        "num_actions": NUM_ACTIONS, "use_sequential_levels": False, "debug_mode": 0,
        "rand_seed": rand_seed, "num_threads": 4, "render_human": False,
        "resource_root": os.path.join(PROCGEN_DIR, "data", "assets") + os.sep,
    }
    return CEnv(num=num, lib_dir=os.path.join(PROCGEN_DIR, "data", "prebuilt"),
                options=options,
                c_func_defs=["int get_state(libenv_env *, int, char *, int);",
                             "void set_state(libenv_env *, int, char *, int);"])


class _BaselinesVecEnv:
    """``gym3.ToBaselinesVecEnv`` over the CEnv, as ``procgen.ProcgenEnv`` returns it."""

    def __init__(self, env):
        self.env = env

    def reset(self) -> dict[str, np.ndarray]:
        _, obs, first = self.env.observe()
        assert first.all()  # a fresh env; gym3 has no reset
        return obs

    def step(self, actions: np.ndarray):
        self.env.act({"action": actions.astype(np.int32)})
        reward, obs, first = self.env.observe()
        return obs, reward, first, self.env.get_info()

    def get_info(self) -> list[dict]:
        return self.env.get_info()

    def close(self) -> None:
        self.env.close()


def _reference(cfg: ProcgenConfig, split: str, build: int = 0) -> _BaselinesVecEnv:
    if split == "train":
        start, count = cfg.start_level, cfg.num_levels
    else:  # every level after the training range
        start = cfg.start_level + cfg.num_levels
        count = INT32_MAX - start
    return _BaselinesVecEnv(_gym3_env(cfg, NUM_ENVS, start, count,
                                      derive_seed(SEED, split, build)))


def _chw(frames: np.ndarray) -> np.ndarray:
    return np.stack([np.stack([f[:, :, c] for c in range(3)]) for f in frames])


def _level_start(cfg: ProcgenConfig, level_seed: int) -> np.ndarray:
    """The first frame of level ``level_seed``, CHW, from a one-level env."""
    one = _gym3_env(cfg, 1, start_level=level_seed, num_levels=1, rand_seed=12345)
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
    starts = {int(i["level_seed"]): ts.obs[b].numpy() for b, i in enumerate(ref.get_info())}
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
