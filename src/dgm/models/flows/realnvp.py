r"""``realnvp``: affine coupling flows for vectors and multi-scale images (Dinh et al. 2017).

Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017, arXiv:1605.08803.

Every layer is an affine coupling: with a mask splitting ``x`` into ``x_A`` (passed through) and
``x_B``,

.. math::

    y_A = x_A, \qquad y_B = x_B \odot \exp(s(x_A)) + t(x_A), \qquad
    \log |\det J| = \textstyle\sum_B s(x_A),

with a bounded log-scale ``s = c \tanh(\tilde s / c)`` (``c = log_scale_bound``) and a conditioner
whose last layer starts at zero (the flow starts as the identity).

Image couplings use instead

.. math::

    y_B = \big(x_B + t(x_A)\big) \odot \exp(s), \qquad s = a \odot \tanh(\tilde s(x_A)),

with a learned per-channel scale ``a`` (starting at 1) on the tanh, as in Dinh et al.'s
implementation, and the shift added before the scaling, as in Glow. On MNIST the background
pixels are almost constant, so the couplings learn to expand them by close to ``e^c``; with the
shift added after the scaling, centring them takes a shift of about ``mean * e^c``, a large,
linear function of the conditioner's input, and a pixel that breaks the prediction is amplified
from layer to layer until the loss overflows (``1e20`` within 20 Adam steps at ``lr=1e-3`` with
``c = 3``). With the shift first it stays on the data's scale, and the learned ``a`` lets the
log-scale range grow only as fast as training asks.

* **Vectors** (``architecture="vector"``, the default for 1-D event shapes): ``depth``
  couplings with alternating even/odd masks and MLP conditioners (the layer loop of
  :mod:`dgm.models.flows.stack`, shared with MAF and NSF).
* **Images** (``"image"``, the default for ``(C, H, W)``): the multi-scale architecture of the
  paper. Each of the first ``levels - 1`` scales applies 3 checkerboard couplings, a squeeze,
  3 channel couplings and factors out half of the channels; the last scale applies 4 checkerboard
  couplings. Conditioners are small CNNs; ActNorm (data-initialised) follows every coupling in
  place of the paper's batch normalisation. Data in ``[0, 1]`` first go through a logit.

With ``conditional=True`` a one-hot label is an extra input of every conditioner.

>>> from dgm.core.spec import DataSpec
>>> model = RealNVP(DataSpec((2,)), RealNVP.Config(depth=2))
>>> model.sample(3).shape
torch.Size([3, 2])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from dgm.core.errors import ConfigError
from dgm.core.model import Example
from dgm.core.registry import register
from dgm.core.spec import DataSpec
from dgm.core.transforms import Composite, MonotonicAffine, Transform, Univariate
from dgm.models.flows.actnorm import ActNorm
from dgm.models.flows.affine import ImageCoupling
from dgm.models.flows.base import FlowModel, ImageOptions, check_coupling_config
from dgm.models.flows.multiscale import MultiScale, Squeeze
from dgm.models.flows.stack import elementwise_stack

__all__ = ["RealNVP", "RealNVPConfig", "RescaledAffine"]


@dataclass
class RealNVPConfig(ImageOptions):
    """Hyperparameters of :class:`RealNVP` (and the image options of
    :class:`~dgm.models.flows.base.ImageOptions`).

    Attributes:
        architecture: ``"auto"`` (image for ``(C, H, W)`` data, else vector), ``"vector"`` or
            ``"image"``.
        depth: coupling layers of the vector architecture.
        hidden: hidden widths of each vector conditioner MLP.
        levels: scales of the image architecture (``H`` and ``W`` must be divisible by
            ``2 ** (levels - 1)``).
        width: channels of each image conditioner CNN.
        activation: activation of the conditioners.
        log_scale_bound: ``c``; each vector coupling's log-scale lies in ``(-c, c)``.
    """

    #: keys of earlier versions and their names now (saved runs are translated)
    renamed: ClassVar[dict[str, str]] = {
        "num_layers": "depth",
        "hidden_channels": "width",
        "num_scales": "levels",
    }

    architecture: Literal["auto", "vector", "image"] = "auto"
    #: 12: with 8, KL 0.14 nats on 8gaussians after 2000 steps of 512 (flows_2d_rest.json)
    depth: int = 12
    hidden: tuple[int, ...] = (64, 64)
    levels: int = 2
    width: int = 64
    activation: Literal["relu", "tanh", "elu"] = "relu"
    log_scale_bound: float = 3.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_coupling_config(self, ("depth", "levels"))


class RescaledAffine(nn.Module, Univariate):
    r"""``y = (x + t) \exp(s)`` with ``s = a \tanh(\tilde s)`` and a learned scale ``a`` per
    channel (dimension 1), starting at 1; ``params[..., 0] = t``, ``params[..., 1] =
    \tilde s``; zeros give the identity. ``log |dy/dx| = s``.

    Args:
        num_channels: channels of the transformed part ``x``, ``(B, C, H, W)``.
    """

    num_params = 2

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(num_channels))

    def forward(self, x: Tensor, params: Tensor, inverse: bool = False) -> tuple[Tensor, Tensor]:
        shift, raw = params[..., 0], params[..., 1]  # (B, C, H, W) each
        a = self.scale.view(1, -1, *([1] * (x.dim() - 2)))  # (1, C, 1, 1)
        log_scale = a * torch.tanh(raw)  # (B, C, H, W)
        if inverse:
            return x * torch.exp(-log_scale) - shift, -log_scale
        return (x + shift) * torch.exp(log_scale), log_scale


@register
class RealNVP(FlowModel):
    """RealNVP affine coupling flow over vectors or images (see the module docstring).

    :meth:`forward_transform` (data to noise) and :meth:`inverse_transform` (noise to data) expose
    the bijection and its log-determinant. Like every model, it works in model space (the
    preprocessed data of ``spec``: dequantized images in ``[0, 1)``) and ``sample`` runs under the
    caller's grad mode (one can differentiate through samples); a trained run loaded with
    ``dgm.load`` (:class:`dgm.api.TrainedModel`) samples and scores raw data, without grad.
    """

    name = "realnvp"
    description = (
        "RealNVP: affine couplings, multi-scale checkerboard/channel masks for images, "
        "exact likelihood (Dinh et al. 2017)"
    )
    Config = RealNVPConfig
    #: 3000 steps of 512 with a cosine decay (``benchmarks/results/defaults.json``): with 12
    #: layers, KL 0.068 nats on 8gaussians (3000 of 512), against 0.25 for 8 layers and the
    #: engine's 1000 steps of 128 at a constant rate
    train_defaults: ClassVar[dict[str, Any]] = {
        "steps": 3000, "batch_size": 512, "schedule": "cosine",
    }  # fmt: skip
    #: on MNIST-sized images: the recipe of the 30-minute MNIST benchmark (1.656 bits/dim,
    #: ``flows_images_mnist_30min_realnvp.json``): 30 minutes of batches of 64
    large_image_train_defaults: ClassVar[dict[str, Any]] = {"max_minutes": 30, "batch_size": 64}
    example = Example(
        spec=DataSpec((2,)),
        config={"depth": 2, "hidden": (16,)},
    )

    def __init__(self, spec: DataSpec, config: RealNVPConfig | None = None) -> None:
        super().__init__(spec, config)
        c: RealNVPConfig = self.config
        image = c.architecture == "image" or (c.architecture == "auto" and spec.is_image)
        if image:
            self._make_flow(self._image_transform(c), on_event_shape=True)
            return
        d = self.num_dims
        if d < 2:
            raise ConfigError(
                "realnvp needs at least 2 dimensions to split between coupling halves; "
                "use model 'nsf' with variant='autoregressive' for 1-D data"
            )
        stack = elementwise_stack(
            d,
            MonotonicAffine(c.log_scale_bound),
            c.depth,
            c.hidden,
            conditioner="coupling",
            mask="alternating",
            permutation=None,
            context_features=self.num_classes,
            activation=c.activation,
        )
        self._make_flow(stack)

    def _image_transform(self, c: RealNVPConfig) -> Transform:
        if not self.spec.is_image:
            raise ConfigError(
                f"architecture='image' needs (C, H, W) data, not shape {self.event_shape}"
            )
        ch, h, w = self.event_shape
        k = 2 ** (c.levels - 1)
        if h % k or w % k:
            raise ConfigError(
                f"realnvp with levels={c.levels} needs height and width divisible by {k}, "
                f"not {h} x {w}; lower levels or use architecture='vector'"
            )

        def coupling(channels: int, mask: str, parity: int) -> list[Transform]:
            # channels of the transformed part: all (checkerboard) or one half
            half = channels // 2 if parity % 2 else channels - channels // 2
            affine = RescaledAffine(channels if mask == "checkerboard" else half)
            layer = ImageCoupling(
                channels,
                mask,  # type: ignore[arg-type]
                parity,
                c.width,
                context_features=self.num_classes,
                univariate=affine,
                activation=c.activation,
            )
            return [layer, ActNorm(channels)]

        levels: list[Transform] = []
        for scale in range(c.levels):
            steps: list[Transform] = []
            if scale == c.levels - 1:
                for i in range(4):
                    steps += coupling(ch, "checkerboard", i)
            else:
                for i in range(3):
                    steps += coupling(ch, "checkerboard", i)
                steps.append(Squeeze())
                ch *= 4
                for i in range(3):
                    steps += coupling(ch, "channel", i)
                ch -= ch // 2  # the first half is factored out after this scale
            levels.append(Composite(steps))
        return MultiScale(levels, self.event_shape)
