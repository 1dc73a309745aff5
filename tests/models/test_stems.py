"""Observation encoders: shapes, input dtypes, configuration errors, gradients, sizes."""

from __future__ import annotations

import pytest
import torch

from rtrl_rl.errors import ConfigError
from rtrl_rl.models.stems import MLP, ImpalaResNet, NatureCNN, make_stem


def _pixels(n: int, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *shape), generator=gen, dtype=torch.uint8)


def _n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _impala_params(c_in: int, channels: tuple[int, ...], hw: int, out_dim: int) -> int:
    total = 0
    for c in channels:
        conv = 9 * c_in * c + c
        res = 2 * 2 * (9 * c * c + c)  # 2 blocks x 2 convs
        total += conv + res
        c_in, hw = c, (hw + 1) // 2
    return total + c_in * hw * hw * out_dim + out_dim


@pytest.mark.parametrize(
    "obs_shape, conv_out",
    [((3, 64, 64), (32, 8, 8)), ((4, 84, 84), (32, 11, 11))],
)
def test_impala_shapes_and_uint8(obs_shape, conv_out):
    stem = ImpalaResNet(obs_shape)
    assert stem.out_dim == 256 and stem.conv_out_shape == conv_out
    out = stem(_pixels(5, obs_shape))
    assert out.shape == (5, 256) and out.dtype == torch.float32
    assert (out >= 0).all()  # final ReLU
    assert _n_params(stem) == _impala_params(obs_shape[0], (16, 32, 32), obs_shape[1], 256)


def test_impala_64x64_parameter_count_is_about_620k():
    # conv stack ~ 0.1M, FC 2048 -> 256 ~ 0.52M
    n = _n_params(ImpalaResNet((3, 64, 64)))
    assert 600_000 < n < 650_000


@pytest.mark.parametrize(
    "obs_shape, conv_out, n_params",
    [
        # conv 8224 + 32832 + 36928, FC 3136*512 + 512 = 1606144 -> 1684128 (the DQN torso)
        ((4, 84, 84), (64, 7, 7), 1_684_128),
        # same convs, FC 64*4*4*512 + 512 = 524800 (conv1 on 3 channels: 6176)
        ((3, 64, 64), (64, 4, 4), 6176 + 32832 + 36928 + 524_800),
    ],
)
def test_nature_shapes_and_parameter_count(obs_shape, conv_out, n_params):
    stem = NatureCNN(obs_shape)
    assert stem.out_dim == 512 and stem.conv_out_shape == conv_out
    assert stem(_pixels(3, obs_shape)).shape == (3, 512)
    assert _n_params(stem) == n_params


def test_image_stems_scale_pixels_same_for_uint8_and_float():
    torch.manual_seed(0)
    for stem in (ImpalaResNet((3, 64, 64), out_dim=32), NatureCNN((4, 84, 84), out_dim=32)):
        x = _pixels(2, stem.in_shape)
        torch.testing.assert_close(stem(x), stem(x.float()))


def test_image_stems_keep_leading_dims():
    stem = ImpalaResNet((3, 64, 64), channels=(4, 8), out_dim=16)
    x = _pixels(6, (3, 64, 64)).reshape(2, 3, 3, 64, 64)  # [T, B, C, H, W]
    out = stem(x)
    assert out.shape == (2, 3, 16)
    torch.testing.assert_close(out.reshape(6, 16), stem(x.reshape(6, 3, 64, 64)))


def test_image_stem_rejects_wrong_input_shape():
    stem = ImpalaResNet((3, 64, 64), channels=(4,), out_dim=8)
    with pytest.raises(ValueError, match="3, 64, 64"):
        stem(_pixels(2, (4, 84, 84)))


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_mlp_shapes(activation):
    stem = MLP(7, hidden=(32, 16), activation=activation)
    assert stem.out_dim == 16
    out = stem(torch.randn(5, 7))
    assert out.shape == (5, 16)
    assert stem(torch.randn(2, 3, 7)).shape == (2, 3, 16)
    assert _n_params(stem) == (7 * 32 + 32) + (32 * 16 + 16)
    if activation == "tanh":
        assert out.abs().max() <= 1


def test_mlp_defaults_and_identity():
    assert MLP(4).out_dim == 64
    ident = MLP(4, hidden=())
    x = torch.randn(3, 4)
    assert ident.out_dim == 4 and torch.equal(ident(x), x)


def test_mlp_unknown_activation():
    with pytest.raises(ConfigError, match="activation"):
        MLP(4, activation="gelu")


@pytest.mark.parametrize(
    "kind, obs_shape, x, out_dim",
    [
        ("impala", (3, 64, 64), _pixels(2, (3, 64, 64)), 256),
        ("nature", (4, 84, 84), _pixels(2, (4, 84, 84)), 512),
        ("mlp", (6,), torch.randn(2, 6), 64),
    ],
)
def test_make_stem(kind, obs_shape, x, out_dim):
    stem = make_stem(kind, obs_shape)
    assert stem.out_dim == out_dim
    assert stem(x).shape == (2, out_dim)


def test_make_stem_options():
    assert make_stem("impala", (3, 64, 64), channels=(8,), out_dim=64).out_dim == 64
    assert make_stem("nature", [4, 84, 84], out_dim=128).out_dim == 128
    mlp = make_stem("mlp", (6,), hidden=[16, 8], activation="tanh")
    assert mlp.out_dim == 8
    with pytest.raises(ConfigError, match="unknown option.*hiden.*accepted: hidden"):
        make_stem("mlp", (6,), hiden=(8,))


def test_make_stem_unknown_kind():
    with pytest.raises(ConfigError, match="unknown stem 'impla'; did you mean impala"):
        make_stem("impla", (3, 64, 64))


@pytest.mark.parametrize(
    "kind, obs_shape",
    [("impala", (8,)), ("nature", (4, 84)), ("mlp", (3, 64, 64)), ("mlp", (1, 8))],
)
def test_make_stem_obs_mismatch(kind, obs_shape):
    with pytest.raises(ConfigError) as info:
        make_stem(kind, obs_shape)
    msg = str(info.value)
    assert "\n" not in msg
    assert f"'{kind}'" in msg and str(tuple(obs_shape)) in msg


def test_nature_rejects_tiny_images():
    with pytest.raises(ConfigError, match="36x36"):
        make_stem("nature", (3, 16, 16))


@pytest.mark.parametrize(
    "stem, x",
    [
        (ImpalaResNet((3, 64, 64), channels=(4, 8), out_dim=16), _pixels(2, (3, 64, 64))),
        (NatureCNN((4, 84, 84), out_dim=16), _pixels(2, (4, 84, 84))),
        (MLP(5, hidden=(8, 8)), torch.randn(2, 5)),
    ],
)
def test_gradients_reach_every_parameter(stem, x):
    torch.manual_seed(0)
    stem(x).sum().backward()
    for name, p in stem.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    # The first layer gets a non-zero gradient (nothing dead between input and output).
    first = next(stem.parameters())
    assert first.grad.abs().sum() > 0


def test_float64_stem():
    stem = ImpalaResNet((3, 64, 64), channels=(4,), out_dim=8).double()
    assert stem(_pixels(1, (3, 64, 64))).dtype == torch.float64


def _impala_by_hand(stem: ImpalaResNet, x: torch.Tensor) -> torch.Tensor:
    """The IMPALA encoder written out with functional ops on the stem's own weights."""
    import torch.nn.functional as F

    def conv(layer: torch.nn.Conv2d, h: torch.Tensor) -> torch.Tensor:
        return F.conv2d(h, layer.weight, layer.bias, padding=1)

    for g in stem.groups:
        x = F.max_pool2d(conv(g.conv, x), kernel_size=3, stride=2, padding=1)
        for res in (g.res0, g.res1):
            x = x + conv(res.conv1, F.relu(conv(res.conv0, F.relu(x))))
    return F.relu(F.linear(F.relu(x).flatten(1), stem.fc.weight, stem.fc.bias))


def _nature_by_hand(stem: NatureCNN, x: torch.Tensor) -> torch.Tensor:
    """The DQN encoder written out with functional ops on the stem's own weights."""
    import torch.nn.functional as F

    convs = [m for m in stem.convs if isinstance(m, torch.nn.Conv2d)]
    for layer, stride in zip(convs, (4, 2, 1), strict=True):
        x = F.relu(F.conv2d(x, layer.weight, layer.bias, stride=stride))
    return F.relu(F.linear(x.flatten(1), stem.fc.weight, stem.fc.bias))


@pytest.mark.parametrize("kind", ["impala", "nature"])
def test_image_stems_divide_uint8_pixels_by_255(kind: str):
    """stem(uint8 pixels) equals the layers applied by hand to pixels / 255, in float64."""
    torch.manual_seed(0)
    if kind == "impala":
        stem, by_hand = ImpalaResNet((3, 16, 16), channels=(4, 8), out_dim=8), _impala_by_hand
    else:
        stem, by_hand = NatureCNN((2, 36, 36), out_dim=8), _nature_by_hand
    stem = stem.double()
    x = _pixels(3, stem.in_shape, seed=1)
    x[0, 0, :4] = 255  # the extremes too
    x[0, 0, 4:8] = 0
    with torch.no_grad():
        expected = by_hand(stem, x.double() / 255.0)
        out = stem(x)
    assert expected.abs().max() > 1e-3  # not all ReLU-dead
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_auto_stem_follows_the_observations():
    from rtrl_rl.envs.base import EnvSpec
    from rtrl_rl.models.stems import resolve_stem

    image = EnvSpec(obs_shape=(3, 64, 64), obs_dtype=torch.uint8, num_actions=15, num_envs=1)
    vector = EnvSpec(obs_shape=(7,), obs_dtype=torch.float32, num_actions=2, num_envs=1)
    assert resolve_stem("auto", image) == "impala" and resolve_stem("auto", vector) == "mlp"
    assert resolve_stem("nature", vector) == "nature"  # a named stem is kept (and checked later)
