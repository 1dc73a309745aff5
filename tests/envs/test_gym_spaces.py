"""Observation and action codecs against gymnasium's own flatten, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.vector.utils import concatenate, create_empty_array

from rtrl_rl.envs.gym_spaces import action_codec, obs_codec
from rtrl_rl.errors import ConfigError

NESTED = spaces.Dict({
    "a": spaces.Tuple((spaces.Discrete(3, start=-1), spaces.MultiBinary(2))),
    "b": spaces.MultiDiscrete([[2, 3], [4, 2]], start=[[1, 0], [0, 5]]),
    "c": spaces.Box(-2.0, 2.0, (2, 3), np.float32),
})


def _batch(space, samples):
    out = create_empty_array(space, len(samples))
    return concatenate(space, samples, out)


@pytest.mark.parametrize("space", [
    NESTED,
    spaces.Tuple((spaces.Discrete(2), spaces.Discrete(4))),
    spaces.MultiDiscrete([2, 2]),
    spaces.MultiBinary(5),
    spaces.Discrete(6, start=3),
    spaces.Box(0.0, 1.0, (4,), np.float32),
], ids=["nested_dict", "tuple", "multi_discrete", "multi_binary", "discrete", "box"])
def test_encoding_equals_gymnasium_flatten(space):
    space.seed(0)
    samples = [space.sample() for _ in range(7)]
    codec = obs_codec(space, "Test-v0")
    got = codec.encode(_batch(space, samples))
    want = np.stack([spaces.flatten(space, s) for s in samples]).astype(np.float32)
    assert codec.dim == spaces.flatdim(space) == want.shape[1]
    assert codec.image_shape is None
    assert got.dtype == torch.float32
    np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize("layout", ["hwc", "chw", "hw"])
def test_one_image_part_comes_first_as_chw(layout):
    shape = {"hwc": (10, 12, 3), "chw": (3, 10, 12), "hw": (10, 12)}[layout]
    space = spaces.Dict({"flag": spaces.Discrete(2), "image": spaces.Box(0, 255, shape, np.uint8),
                         "pos": spaces.Box(-1.0, 1.0, (2,), np.float32)})
    space.seed(1)
    samples = [space.sample() for _ in range(3)]
    codec = obs_codec(space, "Test-v0")
    c = 1 if layout == "hw" else 3
    assert codec.image_shape == (c, 10, 12)
    got = codec.encode(_batch(space, samples)).numpy()
    rest = spaces.Dict({"flag": space["flag"], "pos": space["pos"]})
    for row, s in zip(got, samples, strict=True):
        img = s["image"].transpose(2, 0, 1) if layout == "hwc" else s["image"].reshape(c, 10, 12)
        np.testing.assert_array_equal(row[: c * 120].reshape(c, 10, 12), img.astype(np.float32))
        np.testing.assert_array_equal(row[c * 120:], spaces.flatten(
            rest, {"flag": s["flag"], "pos": s["pos"]}).astype(np.float32))


def test_two_image_parts_are_both_flattened():
    img = spaces.Box(0, 255, (8, 8, 3), np.uint8)
    codec = obs_codec(spaces.Tuple((img, img)), "Test-v0")
    assert codec.image_shape is None and codec.dim == 2 * 192


@pytest.mark.parametrize("space, name", [
    (spaces.Text(5), "Text"),
    (spaces.Sequence(spaces.Discrete(2)), "Sequence"),
    (spaces.Graph(spaces.Box(0.0, 1.0, (2,)), spaces.Discrete(2)), "Graph"),
    (spaces.Dict({"ok": spaces.Discrete(2), "no": spaces.Text(3)}), "Text"),
])
def test_unsupported_observation_spaces_are_one_line_errors(space, name):
    with pytest.raises(ConfigError) as err:
        obs_codec(space, "My-v0")
    msg = str(err.value)
    assert "\n" not in msg and f"'My-v0' has a {name} observation space" in msg


def test_actions_to_the_env():
    d = action_codec(spaces.Discrete(3, start=2), "T")
    assert d.spec.kind == "discrete" and d.spec.nvec == (3,)
    np.testing.assert_array_equal(d.to_env(torch.tensor([0, 2])), [2, 4])
    md = action_codec(spaces.MultiDiscrete([3, 2], start=[1, -1]), "T")
    assert md.spec.kind == "multi_discrete" and md.spec.shape == (2,)
    np.testing.assert_array_equal(md.to_env(torch.tensor([[2, 0], [0, 1]])), [[3, -1], [1, 0]])
    low, high = np.array([-1.0, 0.0], np.float32), np.array([1.0, 2.0], np.float32)
    box = action_codec(spaces.Box(low, high, dtype=np.float32), "T")
    assert box.spec.kind == "box" and box.spec.low == (-1.0, 0.0) and box.spec.high == (1.0, 2.0)
    out = box.to_env(torch.tensor([[-3.0, 0.5], [0.25, 9.0]]))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[-1.0, 0.5], [0.25, 2.0]])
    square = action_codec(spaces.Box(-1.0, 1.0, (2, 2), np.float32), "T")
    assert square.spec.shape == (4,) and square.to_env(torch.zeros(3, 4)).shape == (3, 2, 2)
    with pytest.raises(ConfigError, match="'T' has action space MultiBinary"):
        action_codec(spaces.MultiBinary(2), "T")
