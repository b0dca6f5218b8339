r"""``glow``: multi-scale flow of ActNorm, invertible 1x1 convolutions and affine couplings.

Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS 2018,
arXiv:1807.03039.

For ``(C, H, W)`` images, each of ``levels`` levels is

.. math::

    \text{squeeze} \to \big[\text{actnorm} \to \text{1x1 conv} \to \text{affine coupling}\big]
    \times K \to \text{split},

where the coupling is a channel coupling with a ``3x3 -> 1x1 -> 3x3`` CNN (last layer zero), the
1x1 convolution is in LU form (:mod:`.conv1x1`) and ActNorm is initialised from the first batch
(:mod:`.actnorm`). At each split (all levels but the last) half of the channels leave for the
base; with ``split_prior=True`` their prior is the learned ``N(mu(h), sigma(h)^2)`` of the paper,
written as one more affine channel coupling ``z -> (z - mu(h)) / sigma(h)`` of the factored-out
half ``z`` conditioned on the kept half ``h``, so that the base stays ``N(0, I)``:

.. math::

    \log p(x) = \log \mathcal{N}(f(x); 0, I) + \textstyle\sum \log |\det J|.

Data in ``[0, 1]`` first go through a logit (``logit_alpha``): the model works in model space,
the dequantized pixels ``(x + u) / L`` the engine feeds it, and under the caller's grad mode; a
trained run loaded with ``dgm.load`` (:class:`dgm.api.TrainedModel`) takes and returns the raw
levels ``0..L-1`` and samples without grad, as every family does. For vectors (``D >= 2``) the
same step (actnorm, LU linear, affine coupling with alternating masks and MLP conditioners) is
repeated ``depth`` times without squeezes or splits.

>>> from dgm.core.spec import DataSpec
>>> model = Glow(DataSpec((1, 8, 8)), Glow.Config(levels=2, depth=2, width=8))
>>> model.sample(2).shape
torch.Size([2, 1, 8, 8])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from dgm.core.errors import ConfigError
from dgm.core.model import Example
from dgm.core.registry import register
from dgm.core.spec import DataSpec
from dgm.core.transforms import Composite, MonotonicAffine, Transform
from dgm.models.flows.actnorm import ActNorm
from dgm.models.flows.affine import ImageCoupling
from dgm.models.flows.base import FlowModel, ImageOptions, check_coupling_config
from dgm.models.flows.class_prior import ClassPrior
from dgm.models.flows.conv1x1 import InvConv1x1
from dgm.models.flows.coupling import Coupling, alternating_mask
from dgm.models.flows.multiscale import MultiScale, Squeeze

__all__ = ["Glow", "GlowConfig"]

#: flow steps per level of an image Glow when ``depth`` is not given
IMAGE_DEPTH = 8
#: flow steps of a vector Glow when ``depth`` is not given: KL 0.067 nats on 8gaussians at the
#: class's ``train_defaults`` (51 CPU s), against 0.114 with 8
VECTOR_DEPTH = 12


@dataclass
class GlowConfig(ImageOptions):
    """Hyperparameters of :class:`Glow` (and the image options of
    :class:`~dgm.models.flows.base.ImageOptions`).

    Attributes:
        levels: multi-scale levels ``L`` for images (``H, W`` divisible by ``2 ** L``).
        depth: flow steps ``K`` per level (the whole flow for vectors); ``None``: 8 per level
            for images, 12 for vectors (with 8 the default run on 8gaussians ended 0.114 nats
            from the data in KL, with 12 at 0.067; ``benchmarks/results/defaults.json``).
        width: channels of each image conditioner CNN.
        hidden: hidden widths of each vector conditioner MLP.
        split_prior: learned conditional prior on the factored-out channels.
        class_prior: (conditional models) a learned prior per class on the flow's output,
            ``N(m_y, diag(exp(2 s_y)))`` (:mod:`~dgm.models.flows.class_prior`, Glow's
            ``ycond``), besides the label fed to every coupling; ``None``: on when conditional.
            On MNIST, 30 minutes on one thread, it took the honest samples' conditional
            accuracy from 0.362 to 0.652 and their per-class FID* from 21.6 to 10.24
            (``conditional_mnist_glow30temp.json``, ``conditional_mnist_glow30classprior.json``).
        activation: activation of the conditioners.
        log_scale_bound: ``c``; each coupling's log-scale lies in ``(-c, c)``.
        seed: seed of the 1x1 convolutions' initial rotations.
    """

    #: keys of earlier versions and their names now (saved runs are translated)
    renamed: ClassVar[dict[str, str]] = {"steps": "depth", "hidden_channels": "width"}
    #: keys added since and the values that behave as before (saved runs are read with them)
    added: ClassVar[dict[str, Any]] = {"class_prior": False}

    levels: int = 2
    depth: int | None = None
    width: int = 64
    hidden: tuple[int, ...] = (64, 64)
    split_prior: bool = True
    class_prior: bool | None = None
    activation: Literal["relu", "tanh", "elu"] = "relu"
    log_scale_bound: float = 3.0
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_coupling_config(self, ("levels",) if self.depth is None else ("levels", "depth"))
        if self.class_prior is None:
            self.class_prior = self.conditional
        if self.class_prior and not self.conditional:
            raise ConfigError("class_prior=True needs a conditional glow (conditional=True)")


@register
class Glow(FlowModel):
    """Glow for images (multi-scale) and vectors (see the module docstring)."""

    name = "glow"
    description = (
        "Glow: actnorm + invertible 1x1 conv + affine coupling, multi-scale, exact likelihood "
        "(Kingma & Dhariwal 2018)"
    )
    Config = GlowConfig
    #: as RealNVP's: 3000 steps of 512 with a cosine decay (``benchmarks/results/defaults.json``)
    train_defaults: ClassVar[dict[str, Any]] = {
        "steps": 3000, "batch_size": 512, "schedule": "cosine",
    }  # fmt: skip
    #: on MNIST-sized images: the recipe of the 30-minute MNIST benchmark (1.537 bits/dim,
    #: ``flows_images_mnist_30min_glow.json``): 30 minutes of batches of 64 (a step of 512 took
    #: 2.8 s there, so 15 minutes trained 324 steps and a conditional glow drew no digits:
    #: accuracy 0.138, ``conditional_mnist_families15.json``)
    large_image_train_defaults: ClassVar[dict[str, Any]] = {"max_minutes": 30, "batch_size": 64}
    example = Example(
        spec=DataSpec((1, 4, 4)),
        config={"levels": 2, "depth": 2, "width": 8, "logit_alpha": 0.0},
    )

    def __init__(self, spec: DataSpec, config: GlowConfig | None = None) -> None:
        super().__init__(spec, config)
        c: GlowConfig = self.config
        self.affine = MonotonicAffine(c.log_scale_bound)
        if spec.is_image:
            transform = self._image_transform(c)
            if c.class_prior:
                transform = Composite([transform, ClassPrior(self.num_dims, self.num_classes)])
            self._make_flow(transform, on_event_shape=True)
            return
        d = self.num_dims
        if d < 2:
            raise ConfigError("glow needs at least 2 dimensions to split between coupling halves")
        layers: list[Transform] = []
        for i in range(VECTOR_DEPTH if c.depth is None else c.depth):
            layers += [
                ActNorm(d),
                InvConv1x1(d, seed=c.seed + i),
                Coupling(
                    alternating_mask(d, i),
                    self.affine,
                    c.hidden,
                    context_features=self.num_classes,
                    activation=c.activation,
                ),
            ]
        if c.class_prior:
            layers.append(ClassPrior(d, self.num_classes))
        self._make_flow(Composite(layers))

    def _coupling(self, channels: int, parity: int) -> ImageCoupling:
        c: GlowConfig = self.config
        return ImageCoupling(
            channels,
            "channel",
            parity,
            c.width,
            context_features=self.num_classes,
            univariate=self.affine,
            activation=c.activation,
        )

    def _image_transform(self, c: GlowConfig) -> Transform:
        ch, h, w = self.event_shape
        k = 2**c.levels
        if h % k or w % k:
            raise ConfigError(
                f"glow with levels={c.levels} needs height and width divisible by {k}, "
                f"not {h} x {w}; lower levels"
            )
        levels: list[Transform] = []
        for level in range(c.levels):
            steps: list[Transform] = [Squeeze()]
            ch *= 4
            for i in range(IMAGE_DEPTH if c.depth is None else c.depth):
                seed = c.seed + 1000 * level + i
                steps += [ActNorm(ch), InvConv1x1(ch, seed=seed), self._coupling(ch, i)]
            if level < c.levels - 1:
                if c.split_prior:  # transforms the first half (factored out) given the rest
                    steps.append(self._coupling(ch, 1))
                ch -= ch // 2
            levels.append(Composite(steps))
        return MultiScale(levels, self.event_shape)
