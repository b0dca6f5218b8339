r"""What the diffusion models share: the network for the data's shape and the map to model space.

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

**Class labels** (``conditional=True``, data with ``num_classes = K``): a label embedding is
added to the time embedding (:class:`~dgm.nn.embeddings.LabelEmbedding`), with a *null* class
``K`` for "no label". Training replaces each label by the null class with probability
``label_dropout`` (default 0.1), so one network is both the conditional model ``p(x | y)`` and
the unconditional ``p(x)`` (Ho & Salimans, "Classifier-Free Diffusion Guidance", 2022,
arXiv:2207.12598). Called without labels, a conditional model is that unconditional branch:
``sample(n)`` draws from it and the likelihood ``log p(x)`` is its own (not the mixture of the
conditionals).

**Classifier-free guidance** (``sample(n, y, guidance=w)``): every prediction of the network
(the noise, the score, the velocity; all linear in the score) is replaced by

.. math::

    \hat\epsilon = (1 + w)\, \epsilon_\theta(z, t, y) - w\, \epsilon_\theta(z, t, \varnothing),

Ho & Salimans' convention: ``w = 0`` is exactly the conditional sampler (the unconditional branch
is then not evaluated), ``w = -1`` exactly the unconditional one, ``w > 0`` sharpens the classes.
A guided sampler (``w != 0``) draws from no density the model can score: **there is no
likelihood of guided samples**, and ``log_prob``/the bound always score the unguided model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from dgm.core.errors import ConfigError, DataError
from dgm.core.model import Model, check_labels
from dgm.core.spec import DataSpec
from dgm.nn.embeddings import TimeMLP
from dgm.nn.unet import UNet

__all__ = ["DiffusionBase", "NetConfig", "check_guidance"]

#: the U-Net's first-level channels on images above 16 pixels a side (``unet_width`` None):
#: 16, the width of the 30-minute MNIST benchmarks (32 on smaller images)
LARGE_IMAGE_UNET_WIDTH = 16


def check_guidance(guidance: float) -> float:
    """``guidance`` if it is a finite number ``>= -1``, else a one-sentence ConfigError."""
    if isinstance(guidance, bool) or not (
        isinstance(guidance, (int, float)) and math.isfinite(guidance) and guidance >= -1
    ):
        raise ConfigError(
            f"guidance must be a finite number >= -1 (0: the conditional sampler, -1: the "
            f"unconditional one), not {guidance!r}"
        )
    return float(guidance)


@dataclass
class NetConfig:
    """Network hyperparameters shared by the diffusion models.

    Attributes:
        width: width of the time-conditioned MLP (vector data).
        depth: residual blocks of the MLP (vector data).
        unet_depth: residual blocks per U-Net level on the way down (images).
        time_dim: size of the sinusoidal time embedding (MLP) / of the embedding MLP (U-Net).
        unet_width: channels of the U-Net's first level (images); ``None``: 32 up to 16 pixels a
            side, above it the model's ``large_image_unet_width`` (16, the MNIST benchmarks' U-Net,
            ``LARGE_IMAGE_UNET_WIDTH``; flow-matching 32).
        unet_mults: U-Net channel multipliers per level; empty: ``(1, 2)`` up to 16 pixels a side,
            ``(1, 2, 2)`` above (28x28 MNIST goes 28 -> 14 -> 7).
        conditional: condition on class labels (needs ``num_classes`` in the data spec): a
            label embedding added to the time embedding.
        label_dropout: probability that a training label is replaced by the null class
            (conditional models only), so the network is also the unconditional model that
            classifier-free guidance and label-free sampling and scoring use; 0: no
            unconditional branch (then no guidance).
        fourier_features: (vector data) the MLP reads ``F`` random Fourier features of its input
            beside it, ``[z, sin(z W), cos(z W)]`` (:class:`~dgm.nn.embeddings.TimeMLP`); 0: none;
            ``None``: the model's ``auto_fourier_features`` on 2-D data (flow-matching, reflow and
            consistency: 256; the diffusion models 0), none above two dimensions.
        fourier_scale: standard deviation of their angular frequencies, in model space (data
            standardised per feature).
    """

    #: keys of earlier versions and their names now (saved runs are translated)
    renamed: ClassVar[dict[str, str]] = {
        "hidden": "width",
        "blocks": "depth",
        "channels": "unet_width",
        "unet_blocks": "unet_depth",
        "mults": "unet_mults",
    }
    #: keys added since, with the value that behaves as runs saved before them did
    added: ClassVar[dict[str, Any]] = {"fourier_features": 0}

    width: int = 128
    depth: int = 3
    unet_depth: int = 1
    time_dim: int = 64
    unet_width: int | None = None
    unet_mults: tuple[int, ...] = ()
    conditional: bool = False
    label_dropout: float = 0.1
    fourier_features: int | None = None
    fourier_scale: float = 6.0

    def __post_init__(self) -> None:
        if (self.fourier_features or 0) < 0 or not self.fourier_scale > 0:
            raise ConfigError(
                f"fourier_features must be >= 0 and fourier_scale positive, not "
                f"{self.fourier_features} and {self.fourier_scale}"
            )
        if not 0 <= self.label_dropout < 1:
            raise ConfigError(f"label_dropout must lie in [0, 1), not {self.label_dropout}")
        for key in ("width", "depth", "unet_depth", "time_dim"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be a positive integer, not {getattr(self, key)}")
        if self.time_dim % 2:
            raise ConfigError(f"time_dim must be even, not {self.time_dim}")
        if any(m < 1 for m in self.unet_mults):
            raise ConfigError(f"unet_mults must be positive integers, not {self.unet_mults}")
        if self.unet_width is not None and self.unet_width < 1:
            raise ConfigError(f"unet_width must be a positive integer, not {self.unet_width}")


class DiffusionBase(Model):
    """Shared machinery (see the module docstring); not registered itself."""

    family = "diffusion"
    #: what ``dgm train`` runs without options (``benchmarks/results/defaults.json``): 5000 steps
    #: of 256, a cosine decay and the engine's weight average 0.999 (with its warm-up)
    train_defaults: ClassVar[dict[str, Any]] = {
        "steps": 5000, "batch_size": 256, "schedule": "cosine", "ema": 0.999,
    }  # fmt: skip
    #: on MNIST-sized images: the recipe of the 30-minute MNIST benchmarks (ddpm 1.907 bits/dim;
    #: ``benchmarks/results/INDEX.md``): 30 minutes of batches of 64, the cosine decay over the
    #: budget, with the U-Net of ``large_image_unet_width``
    large_image_train_defaults: ClassVar[dict[str, Any]] = {"max_minutes": 30, "batch_size": 64}
    #: the U-Net's first-level channels on images above 16 pixels a side when ``unet_width`` is
    #: None (a model whose MNIST recipe is wider says so here)
    large_image_unet_width: ClassVar[int] = LARGE_IMAGE_UNET_WIDTH
    #: random Fourier features of the MLP's input on 2-D data when ``fourier_features`` is None
    #: (none above two dimensions, where they were not measured)
    auto_fourier_features: ClassVar[int] = 0

    def __init__(self, spec: DataSpec, config: NetConfig | None = None) -> None:
        super().__init__(spec, config)
        c: NetConfig = self.config
        self.discrete = spec.kind == "discrete"
        self.levels = int(spec.levels) if self.discrete else 0
        self.num_classes = 0
        if self.conditional:
            if not spec.num_classes:
                raise ConfigError(
                    f"{self.name} with conditional=True needs labelled data "
                    "(num_classes in the data spec)"
                )
            self.num_classes = int(spec.num_classes)
        k = self.num_classes
        #: the Fourier features the MLP reads (``fourier_features`` resolved; none on images)
        self.fourier_features = c.fourier_features
        if self.fourier_features is None:
            auto = not spec.is_image and self.num_dims <= 2
            self.fourier_features = self.auto_fourier_features if auto else 0
        if spec.is_image:
            large = spec.is_large_image
            mults = c.unet_mults or ((1, 2, 2) if large else (1, 2))
            width = c.unet_width or (self.large_image_unet_width if large else 32)
            self.net: nn.Module = UNet(
                spec.event_shape[0], width, mults, c.unet_depth, 2 * c.time_dim, k
            )
        else:
            self.net = TimeMLP(
                self.num_dims,
                c.width,
                c.depth,
                c.time_dim,
                k,
                self.fourier_features,
                c.fourier_scale,
            )
        self.register_buffer("shift", torch.zeros(spec.event_shape))
        self.register_buffer("scale", torch.ones(spec.event_shape))

    # ------------------------------------------------------------------ model space
    def on_train_start(self, train_data: Tensor, labels: Tensor | None = None) -> None:
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

    def network(self, z: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """The network on model-space ``z (B, *event)`` at times ``t (B,)`` with network labels
        ``y (B,)`` (:meth:`net_labels`; ``None`` for an unconditional model): ``(B, *event)``."""
        args = (y,) if self.conditional else ()
        if self.spec.is_image:
            return self.net(z, t, *args)
        return self.net(z.reshape(z.shape[0], -1), t, *args).view(z.shape)

    def sample_batch(self) -> int:
        """The spec's inference batch (41 MNIST images): every solver step runs the network over
        the whole batch. DDIM with 20 steps drew 400 MNIST samples of an untrained U-Net in 7.1 s
        in calls of 41 against 8.4 s in one call (5.8 against 6.3 s with the ``dgm`` command's
        malloc), 2 threads, fresh processes (``benchmarks/results/scoring_sampling.json``)."""
        return self.spec.inference_batch()

    # ------------------------------------------------------------------ labels
    def net_labels(self, y: Tensor | None, n: int) -> Tensor | None:
        """Labels for the network: ``y`` checked, or for a conditional model called without
        labels the null class ``K`` (the unconditional branch); ``None`` for an unconditional
        model (which refuses labels)."""
        if self.conditional and y is None:
            if not self.config.label_dropout:
                raise DataError(
                    f"model {self.name!r} was trained with label_dropout=0, so it has no "
                    f"unconditional branch; pass class labels y of shape ({n},)"
                )
            return torch.full((n,), self.num_classes, dtype=torch.long, device=self.device)
        return check_labels(self, y, n)

    def train_labels(self, y: Tensor | None, n: int) -> Tensor | None:
        """Training labels: ``y`` checked, each replaced by the null class with probability
        ``label_dropout``; ``None`` for an unconditional model (labels in the batch unused)."""
        if not self.conditional:
            return None
        y = check_labels(self, y, n)
        assert y is not None
        p = self.config.label_dropout
        if p > 0:
            drop = torch.rand(n, device=y.device) < p
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        return y

    def guide(
        self, predict: Callable[[Tensor | None], Tensor], y: Tensor | None, guidance: float
    ) -> Tensor:
        """Classifier-free guidance of a prediction (module docstring):
        ``(1 + w) predict(y) - w predict(null)``; ``w = 0`` evaluates ``predict(y)`` alone."""
        if guidance == 0:
            return predict(y)
        assert y is not None
        null = torch.full_like(y, self.num_classes)
        return (1 + guidance) * predict(y) - guidance * predict(null)

    def sample_labels(self, y: Tensor | None, n: int, guidance: float) -> Tensor | None:
        """Network labels for sampling with guidance ``w`` checked: guidance needs a conditional
        model trained with label dropout and labels ``y``."""
        guidance = check_guidance(guidance)
        if guidance != 0:
            if not self.conditional:
                raise ConfigError(
                    f"guidance needs a conditional model; {self.name!r} was built without "
                    "conditional=True"
                )
            if not self.config.label_dropout:
                raise ConfigError(
                    f"guidance needs an unconditional branch, but {self.name!r} was trained "
                    "with label_dropout=0"
                )
            if y is None:
                raise DataError(f"guidance needs class labels y of shape ({n},)")
        return self.net_labels(y, n)

    def prior_noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(
            n, *self.event_shape, generator=generator, dtype=self.dtype, device=self.device
        )
