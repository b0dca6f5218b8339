"""Encoder and decoder networks of a VAE: multilayer perceptrons and small convolutional nets.

An encoder maps an example ``x`` of shape ``(B, *event_shape)`` (already scaled, see
:meth:`VAE.encoder_input`) and an optional one-hot label ``(B, C)`` to the mean and log standard
deviation of the Gaussian q(z | x), each ``(B, latent_dim)``. A decoder maps codes
``(..., latent_dim)`` (any leading dimensions, e.g. importance samples) and an optional one-hot
label to likelihood parameters ``(..., P, *event_shape)``. Every decoder ends in a free
per-dimension bias of shape ``(P, *event_shape)``, which :meth:`VAE.on_train_start` sets to the
data's marginal.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dgm.core.errors import ConfigError
from dgm.nn.mlp import activation as make_activation
from dgm.nn.mlp import mlp

__all__ = ["ConvDecoder", "ConvEncoder", "MLPDecoder", "MLPEncoder", "build_networks"]


def _with_label(h: Tensor, y1h: Tensor | None) -> Tensor:
    """Append a one-hot label ``(B, C)`` to features ``(..., B, F)`` -> ``(..., B, F + C)``."""
    if y1h is None:
        return h
    return torch.cat([h, y1h.expand(*h.shape[:-1], y1h.shape[-1])], dim=-1)


class MLPEncoder(nn.Module):
    """``[x, y] -> hidden... -> (mu, log_std)``; with ``hidden=()`` a single linear map."""

    def __init__(
        self,
        event_shape: tuple[int, ...],
        hidden: tuple[int, ...],
        latent_dim: int,
        num_classes: int = 0,
        activation: str = "elu",
    ) -> None:
        super().__init__()
        d = math.prod(event_shape)
        self.net = mlp(d + num_classes, hidden, 2 * latent_dim, activation)

    def forward(self, x: Tensor, y1h: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h = _with_label(x.flatten(1), y1h)  # (B, D + C)
        mu, log_std = self.net(h).chunk(2, dim=-1)  # (B, L) each
        return mu, log_std


class MLPDecoder(nn.Module):
    """``[z, y] -> reversed hidden... -> (P, *event)`` plus a per-dimension bias."""

    def __init__(
        self,
        event_shape: tuple[int, ...],
        hidden: tuple[int, ...],
        latent_dim: int,
        num_params: int,
        num_classes: int = 0,
        activation: str = "elu",
    ) -> None:
        super().__init__()
        self.out_shape = (num_params, *event_shape)
        d = math.prod(self.out_shape)
        self.net = mlp(latent_dim + num_classes, hidden[::-1], d, activation)
        # the free bias below takes the last layer's place (dropped after construction, not
        # built without: the seed then draws the same random stream as the published runs)
        self.net[-1].bias = None
        self.bias = nn.Parameter(torch.zeros(self.out_shape))
        #: activations per decoded code, for the memory budget of importance sampling
        self.activation_size = sum(hidden) + d

    def forward(self, z: Tensor, y1h: Tensor | None = None) -> Tensor:
        h = self.net(_with_label(z, y1h))  # (..., P * D)
        return h.view(*h.shape[:-1], *self.out_shape) + self.bias  # (..., P, *event)


def _sizes(h: int, w: int, n: int) -> list[tuple[int, int]]:
    """Spatial sizes through ``n`` stride-2 convolutions (3x3, padding 1): ``ceil(s / 2)``."""
    out = [(h, w)]
    for _ in range(n):
        h, w = (h + 1) // 2, (w + 1) // 2
        out.append((h, w))
    return out


class ConvEncoder(nn.Module):
    """Stride-2 3x3 convolutions with ``hidden`` channels, then a linear map to ``(mu, log_std)``."""

    def __init__(
        self,
        event_shape: tuple[int, ...],
        hidden: tuple[int, ...],
        latent_dim: int,
        num_classes: int = 0,
        activation: str = "elu",
    ) -> None:
        super().__init__()
        c, h, w = event_shape
        sizes = _sizes(h, w, len(hidden))
        layers: list[nn.Module] = []
        for a, b in zip((c, *hidden[:-1]), hidden):
            layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), make_activation(activation)]
        self.convs = nn.Sequential(*layers)
        flat = hidden[-1] * sizes[-1][0] * sizes[-1][1]
        self.head = nn.Linear(flat + num_classes, 2 * latent_dim)

    def forward(self, x: Tensor, y1h: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h = self.convs(x).flatten(1)  # (B, F)
        mu, log_std = self.head(_with_label(h, y1h)).chunk(2, dim=-1)  # (B, L) each
        return mu, log_std


class ConvDecoder(nn.Module):
    """A linear map to the smallest feature map, then stride-2 transposed convolutions back up
    (the encoder mirrored), the last one to ``P * C`` channels at full resolution."""

    def __init__(
        self,
        event_shape: tuple[int, ...],
        hidden: tuple[int, ...],
        latent_dim: int,
        num_params: int,
        num_classes: int = 0,
        activation: str = "elu",
    ) -> None:
        super().__init__()
        c, h, w = event_shape
        self.out_shape = (num_params, c, h, w)
        self.sizes = _sizes(h, w, len(hidden))
        self.hidden = tuple(hidden)
        bottom = self.sizes[-1]
        self.head = nn.Sequential(
            nn.Linear(latent_dim + num_classes, hidden[-1] * bottom[0] * bottom[1]),
            make_activation(activation),
        )
        outs = (num_params * c, *hidden[:-1])  # channels after each transposed conv, top first
        self.deconvs = nn.ModuleList(
            nn.ConvTranspose2d(hidden[i], outs[i], 3, stride=2, padding=1, bias=i > 0)
            for i in reversed(range(len(hidden)))
        )
        self.act = make_activation(activation)
        self.bias = nn.Parameter(torch.zeros(self.out_shape))
        self.activation_size = sum(
            ch * s[0] * s[1] for ch, s in zip(hidden, self.sizes[1:])
        ) + math.prod(self.out_shape)

    def forward(self, z: Tensor, y1h: Tensor | None = None) -> Tensor:
        lead = z.shape[:-1]
        h = self.head(_with_label(z, y1h)).reshape(-1, self.hidden[-1], *self.sizes[-1])
        for j, deconv in enumerate(self.deconvs):
            level = len(self.hidden) - 1 - j  # output at sizes[level]
            h = deconv(h, output_size=list(self.sizes[level]))  # (N, ch, *sizes[level])
            if level > 0:
                h = self.act(h)
        return h.reshape(*lead, *self.out_shape) + self.bias  # (..., P, C, H, W)


def build_networks(
    architecture: str,
    event_shape: tuple[int, ...],
    hidden: tuple[int, ...],
    latent_dim: int,
    num_params: int,
    num_classes: int = 0,
    activation: str = "elu",
) -> tuple[nn.Module, nn.Module]:
    """The encoder and decoder for ``architecture`` ``"mlp"`` or ``"conv"``."""
    if architecture == "mlp":
        return (
            MLPEncoder(event_shape, hidden, latent_dim, num_classes, activation),
            MLPDecoder(event_shape, hidden, latent_dim, num_params, num_classes, activation),
        )
    if architecture == "conv":
        if len(event_shape) != 3:
            raise ConfigError(
                f"architecture='conv' needs images (C, H, W), not event shape {event_shape}; "
                "use architecture='mlp'"
            )
        if not hidden:
            raise ConfigError("architecture='conv' needs at least one channel count in hidden")
        return (
            ConvEncoder(event_shape, hidden, latent_dim, num_classes, activation),
            ConvDecoder(event_shape, hidden, latent_dim, num_params, num_classes, activation),
        )
    raise ConfigError(f"architecture must be 'mlp' or 'conv', not {architecture!r}")
