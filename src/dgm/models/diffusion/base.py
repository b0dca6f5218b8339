"""What the diffusion models share: the network for the data's shape and the map to model space.

Every diffusion model works in a *model space* ``z`` where the data has a scale of about one, the
scale its noise schedule assumes:

* discrete data with ``L`` levels (raw integers ``0..L-1``, as the engine hands them to a model
  that takes discrete data) is mapped to ``z = 2 x / (L - 1) - 1 in [-1, 1]`` (Ho et al. 2020,
  section 3.3); samples are mapped back by rounding to the nearest level;
* continuous data is standardised, ``z = (x - shift) / scale``, with ``shift`` and ``scale``
  measured on the first training batch by :meth:`on_train_start` (per dimension for vectors, one
  scalar for images) and kept in buffers, so they are saved with the weights. Densities pick up
  the log-determinant ``-sum log scale``, so likelihoods are in the units of the data.

The network is a :class:`~dgm.nn.embeddings.TimeMLP` for vector data and a
:class:`~dgm.nn.unet.UNet` for images ``(C, H, W)``; both take ``(z, t)`` with ``t`` of shape
``(B,)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from dgm.core.errors import ConfigError
from dgm.core.model import Model
from dgm.core.spec import DataSpec
from dgm.nn.embeddings import TimeMLP
from dgm.nn.unet import UNet

__all__ = ["DiffusionBase", "NetConfig"]


@dataclass
class NetConfig:
    """Network hyperparameters shared by the diffusion models.

    Attributes:
        width: width of the time-conditioned MLP (vector data).
        depth: residual blocks of the MLP (vector data).
        unet_depth: residual blocks per U-Net level on the way down (images).
        time_dim: size of the sinusoidal time embedding (MLP) / of the embedding MLP (U-Net).
        unet_width: channels of the U-Net's first level (images).
        unet_mults: U-Net channel multipliers per level; empty: ``(1, 2)`` up to 16 pixels a side,
            ``(1, 2, 2)`` above (28x28 MNIST goes 28 -> 14 -> 7).
    """

    #: keys of earlier versions and their names now (saved runs are translated)
    renamed: ClassVar[dict[str, str]] = {
        "hidden": "width",
        "blocks": "depth",
        "channels": "unet_width",
        "unet_blocks": "unet_depth",
        "mults": "unet_mults",
    }

    width: int = 128
    depth: int = 3
    unet_depth: int = 1
    time_dim: int = 64
    unet_width: int = 32
    unet_mults: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for key in ("width", "depth", "unet_depth", "time_dim", "unet_width"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be a positive integer, not {getattr(self, key)}")
        if self.time_dim % 2:
            raise ConfigError(f"time_dim must be even, not {self.time_dim}")
        if any(m < 1 for m in self.unet_mults):
            raise ConfigError(f"unet_mults must be positive integers, not {self.unet_mults}")


class DiffusionBase(Model):
    """Shared machinery (see the module docstring); not registered itself."""

    family = "diffusion"
    #: what ``dgm train`` runs without options (``benchmarks/results/defaults.json``): 5000 steps
    #: of 256, a cosine decay and the engine's weight average 0.999 (with its warm-up)
    train_defaults: ClassVar[dict[str, Any]] = {
        "steps": 5000, "batch_size": 256, "schedule": "cosine", "ema": 0.999,
    }  # fmt: skip

    def __init__(self, spec: DataSpec, config: NetConfig | None = None) -> None:
        super().__init__(spec, config)
        c: NetConfig = self.config
        self.discrete = spec.kind == "discrete"
        self.levels = int(spec.levels) if self.discrete else 0
        if spec.is_image:
            mults = c.unet_mults or ((1, 2) if max(spec.event_shape[1:]) <= 16 else (1, 2, 2))
            self.net: nn.Module = UNet(
                spec.event_shape[0], c.unet_width, mults, c.unet_depth, 2 * c.time_dim
            )
        else:
            self.net = TimeMLP(self.num_dims, c.width, c.depth, c.time_dim)
        self.register_buffer("shift", torch.zeros(spec.event_shape))
        self.register_buffer("scale", torch.ones(spec.event_shape))

    # ------------------------------------------------------------------ model space
    def on_train_start(self, train_data: Tensor) -> None:
        """Standardise continuous data: ``shift``/``scale`` from the first batch (no-op for
        discrete data, whose map to [-1, 1] is fixed)."""
        if self.discrete:
            return
        x = train_data.to(self.shift.dtype)
        if self.spec.is_image or x.shape[0] < 2:
            mean, std = x.mean(), x.std() if x.numel() > 1 else torch.ones(())
            self.shift.fill_(float(mean))
            self.scale.fill_(max(float(std), 1e-6))
        else:
            self.shift.copy_(x.mean(0))
            self.scale.copy_(x.std(0).clamp_min(1e-6))

    def to_model_space(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(z, log_det)`` with ``log p_x(x) = log p_z(z) + log_det`` for continuous data; for
        discrete data ``z`` in [-1, 1] and ``log_det = 0`` (bins map to bins)."""
        if self.discrete:
            z = 2 * x / (self.levels - 1) - 1  # (B, *event)
            return z, torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        z = (x - self.shift) / self.scale
        log_det = -torch.log(self.scale).sum().expand(x.shape[0])  # (B,)
        return z, log_det

    def from_model_space(self, z: Tensor) -> Tensor:
        """Back to data space; discrete data is rounded to the nearest of its levels."""
        if self.discrete:
            return ((z + 1) * (self.levels - 1) / 2).round().clamp(0, self.levels - 1) + 0.0
        return z * self.scale + self.shift

    def network(self, z: Tensor, t: Tensor) -> Tensor:
        """The network on model-space ``z (B, *event)`` at times ``t (B,)``: ``(B, *event)``."""
        if self.spec.is_image:
            return self.net(z, t)
        return self.net(z.reshape(z.shape[0], -1), t).view(z.shape)

    def prior_noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(
            n, *self.event_shape, generator=generator, dtype=self.dtype, device=self.device
        )
