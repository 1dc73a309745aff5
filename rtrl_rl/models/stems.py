"""Observation encoders ("stems") below the recurrent core.

Every stem is an ``nn.Module`` with an ``out_dim`` attribute and maps observations
``[N, *obs_shape]`` to features ``[N, out_dim]``; extra leading dimensions are kept
(``[T, B, *obs_shape] -> [T, B, out_dim]``), though the agent normally passes flattened
``[T * B, ...]`` batches.

Image stems take raw pixel values in [0, 255], ``uint8`` (as the envs emit them) or any
float dtype, layout ``[C, H, W]``, and scale by 1/255 inside. Vector stems take ``[D]``
features as they are. Inputs are cast to the stem's parameter dtype.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rtrl_rl.errors import ConfigError, unknown_name

__all__ = ["MLP", "STEMS", "ImpalaResNet", "NatureCNN", "SplitStem", "make_obs_stem",
           "make_stem"]


def _param_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def _check_trailing(name: str, x: torch.Tensor, shape: tuple[int, ...]) -> None:
    if x.dim() < len(shape) or tuple(x.shape[x.dim() - len(shape) :]) != shape:
        expected = ", ".join(map(str, shape))
        raise ValueError(f"{name}: expected input [..., {expected}], got {tuple(x.shape)}")


class _ResidualBlock(nn.Module):
    """x + conv(relu(conv(relu(x)))), channel count and size preserved."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Not in-place: x is also the skip path.
        return x + self.conv1(F.relu(self.conv0(F.relu(x))))


class _ConvGroup(nn.Module):
    """conv3x3 -> maxpool 3x3 stride 2 (halves H, W, rounding up) -> 2 residual blocks."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.res0 = _ResidualBlock(out_channels)
        self.res1 = _ResidualBlock(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res1(self.res0(self.pool(self.conv(x))))


class ImpalaResNet(nn.Module):
    """The IMPALA "deep" encoder (Espeholt et al. 2018, Fig. 3), as used by R2AC.

    ``[..., C, H, W]`` pixels -> ``[..., out_dim]``. Each channel group is conv3x3, maxpool
    3x3/2 and two residual blocks; then ReLU, flatten, Linear(out_dim), ReLU. Spatial size
    after the groups is ``ceil(H / 2^k)``: 64x64 -> 8x8, 84x84 -> 11x11 with 3 groups.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        channels: Sequence[int] = (16, 32, 32),
        out_dim: int = 256,
    ) -> None:
        super().__init__()
        self.in_shape = tuple(int(s) for s in in_shape)
        if len(self.in_shape) != 3:
            raise ConfigError(f"stem 'impala' needs image obs [C, H, W], got {self.in_shape}")
        if not channels:
            raise ConfigError("stem 'impala': channels must be non-empty")
        c, h, w = self.in_shape
        groups = []
        for ch in channels:
            groups.append(_ConvGroup(c, int(ch)))
            c, h, w = int(ch), (h + 1) // 2, (w + 1) // 2
        self.groups = nn.Sequential(*groups)
        self.conv_out_shape = (c, h, w)
        self.fc = nn.Linear(c * h * w, out_dim)
        self.out_dim = int(out_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs [..., C, H, W]`` pixels in [0, 255] -> ``[..., out_dim]``."""
        _check_trailing("ImpalaResNet", obs, self.in_shape)
        lead = obs.shape[:-3]
        x = obs.reshape(-1, *self.in_shape).to(_param_dtype(self)) / 255.0
        x = F.relu(self.groups(x)).flatten(1)
        return F.relu(self.fc(x)).reshape(*lead, self.out_dim)


class NatureCNN(nn.Module):
    """The DQN encoder (Mnih et al. 2015): conv 32x8/4, 64x4/2, 64x3/1 (ReLU each), then
    Linear(out_dim) + ReLU. ``[..., C, H, W]`` pixels -> ``[..., out_dim]``; needs H, W >= 36.
    """

    def __init__(self, in_shape: Sequence[int], out_dim: int = 512) -> None:
        super().__init__()
        self.in_shape = tuple(int(s) for s in in_shape)
        if len(self.in_shape) != 3:
            raise ConfigError(f"stem 'nature' needs image obs [C, H, W], got {self.in_shape}")
        c, h, w = self.in_shape
        for k, s in ((8, 4), (4, 2), (3, 1)):
            h, w = (h - k) // s + 1, (w - k) // s + 1
        if h < 1 or w < 1:
            raise ConfigError(
                f"stem 'nature' needs images of at least 36x36, got obs shape {self.in_shape}"
            )
        self.convs = nn.Sequential(
            nn.Conv2d(c, 32, kernel_size=8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, kernel_size=3, stride=1),
            nn.ReLU(),
        )
        self.conv_out_shape = (64, h, w)
        self.fc = nn.Linear(64 * h * w, out_dim)
        self.out_dim = int(out_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs [..., C, H, W]`` pixels in [0, 255] -> ``[..., out_dim]``."""
        _check_trailing("NatureCNN", obs, self.in_shape)
        lead = obs.shape[:-3]
        x = obs.reshape(-1, *self.in_shape).to(_param_dtype(self)) / 255.0
        x = self.convs(x).flatten(1)
        return F.relu(self.fc(x)).reshape(*lead, self.out_dim)


_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}


class MLP(nn.Module):
    """Fully connected encoder for vector observations: ``[..., in_dim] -> [..., out_dim]``.

    Each hidden layer is Linear + activation (``"relu"`` or ``"tanh"``); ``out_dim`` is the
    last hidden width. An empty ``hidden`` is the identity (``out_dim = in_dim``).
    """

    def __init__(
        self, in_dim: int, hidden: Sequence[int] = (64,), activation: str = "relu"
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise unknown_name("mlp activation", activation, _ACTIVATIONS)
        self.in_dim = int(in_dim)
        layers: list[nn.Module] = []
        d = self.in_dim
        for width in hidden:
            layers += [nn.Linear(d, int(width)), _ACTIVATIONS[activation]()]
            d = int(width)
        self.net = nn.Sequential(*layers)
        self.out_dim = d

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs [..., in_dim]`` -> ``[..., out_dim]``."""
        _check_trailing("MLP", obs, (self.in_dim,))
        if len(self.net) == 0:
            return obs if obs.is_floating_point() else obs.float()
        return self.net(obs.to(_param_dtype(self)))


STEMS: dict[str, type[nn.Module]] = {"impala": ImpalaResNet, "nature": NatureCNN, "mlp": MLP}
_IMAGE_STEMS = {"impala", "nature"}


def make_stem(kind: str, obs_shape: Sequence[int], **options: object) -> nn.Module:
    """Build the stem ``kind`` (``impala``, ``nature``, ``mlp``) for per-stream observations
    of shape ``obs_shape`` (``(C, H, W)`` for image stems, ``(D,)`` for ``mlp``).

    ``options`` are the stem's constructor keywords (``channels``, ``out_dim``; ``out_dim``;
    ``hidden``, ``activation``). Raises ``ConfigError`` (one line) for an unknown kind, an
    unknown option, or a stem that does not fit the observation shape.
    """
    if kind not in STEMS:
        raise unknown_name("stem", kind, STEMS)
    obs_shape = tuple(int(s) for s in obs_shape)
    if kind in _IMAGE_STEMS and len(obs_shape) != 3:
        raise ConfigError(
            f"stem '{kind}' needs image observations [C, H, W], got obs shape {obs_shape}; "
            "use stem 'mlp' for vector observations"
        )
    if kind not in _IMAGE_STEMS and len(obs_shape) != 1:
        raise ConfigError(
            f"stem '{kind}' needs vector observations [D], got obs shape {obs_shape}; "
            f"use stem {' or '.join(repr(k) for k in sorted(_IMAGE_STEMS))} for images"
        )
    cls = STEMS[kind]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self",)]
    accepted = accepted[1:]  # the first is the observation shape / size, given here
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"stem '{kind}' got unknown option(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(accepted)}"
        )
    if kind == "mlp":
        return cls(obs_shape[0], **options)
    return cls(obs_shape, **options)


class SplitStem(nn.Module):
    """An image stem on the flattened image that starts a vector observation, with the
    vector's remaining entries concatenated after the image features:
    ``[..., C*H*W + R] -> [..., image_stem.out_dim + R]``."""

    def __init__(self, image_stem: nn.Module, image_shape: Sequence[int], rest: int) -> None:
        super().__init__()
        self.image = image_stem
        self.image_shape = tuple(int(s) for s in image_shape)
        self.split = math.prod(self.image_shape)
        self.rest = int(rest)
        self.out_dim = image_stem.out_dim + self.rest

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        _check_trailing("SplitStem", obs, (self.split + self.rest,))
        pixels = obs[..., : self.split].reshape(*obs.shape[:-1], *self.image_shape)
        feats = self.image(pixels)
        return torch.cat([feats, obs[..., self.split :].to(feats.dtype)], -1)


def resolve_stem(kind: str, spec) -> str:
    """``auto``: the IMPALA ResNet for observations that are or carry an image, the MLP for
    vectors; any other kind as it is."""
    if kind != "auto":
        return kind
    image = spec.image_shape is not None or len(spec.obs_shape) == 3
    return "impala" if image else "mlp"


def make_obs_stem(cfg, spec) -> nn.Module:
    """The stem a ``ModelConfig`` asks for, fitted to an ``EnvSpec`` (``auto``: see
    ``resolve_stem``): an image stem on an observation that carries a flattened image part
    (``spec.image_shape``) reads that part and passes the rest on (``SplitStem``); otherwise
    ``make_stem`` on the whole."""
    kind = resolve_stem(cfg.stem, spec)
    if kind in _IMAGE_STEMS and spec.image_shape is not None:
        rest = spec.obs_shape[0] - math.prod(spec.image_shape)
        image = make_stem(kind, spec.image_shape, out_dim=cfg.stem_out)
        return SplitStem(image, spec.image_shape, rest)
    if kind == "mlp":
        return make_stem("mlp", spec.obs_shape, hidden=tuple(cfg.stem_hidden))
    return make_stem(kind, spec.obs_shape, out_dim=cfg.stem_out)
