r"""``masked-diffusion``: absorbing-state (masked) discrete diffusion with a continuous-time bound.

Shi, Han, Wang, Doucet & Titsias, "Simplified and Generalized Masked Diffusion for Discrete Data"
(MD4), arXiv:2406.04329; Sahoo et al., "Simple and Effective Masked Diffusion Language Models"
(MDLM), arXiv:2406.07524; Austin et al., "Structured Denoising Diffusion Models in Discrete
State-Spaces" (D3PM), arXiv:2107.03006; Hoogeboom et al., "Autoregressive Diffusion Models"
(ARDM), arXiv:2110.02037.

For discrete data ``x in {0..L-1}^D`` the forward process masks every pixel independently with
probability ``1 - alpha(t)`` (:class:`~dgm.models.masked_diffusion.schedule.MaskSchedule`); the
network (:mod:`~dgm.models.masked_diffusion.network`) sees ``z_t`` and predicts a categorical
``p_theta(x_i | z_t)`` for every masked pixel, and the reverse process copies unmasked pixels
("carry-over unmasking"). **The bound** (MD4 eq. 5, MDLM eq. 10):

.. math::

    -\log p_\theta(x) \le \int_0^1 \frac{-\alpha'(t)}{1 - \alpha(t)}\,
        \mathbb{E}_{q(z_t|x)} \Big[\sum_{i: z_{t,i} = m} -\log p_\theta(x_i \mid z_t)\Big] dt
    = D\, \mathbb{E}_{j \sim U\{1..D\}}\, \mathbb{E}_{|M| = j}
        \Big[\frac{1}{j} \sum_{i \in M} -\log p_\theta(x_i \mid x_{\setminus M})\Big],

in nats per image. The second form integrates ``t`` out given the masked set ``M`` (the ARDM
objective, Hoogeboom et al. eq. 5): both are the same number, the negative ELBO, and equal
``E_sigma[-log p_sigma(x)]``, the average over orders ``sigma`` of the chain rule with the
network's conditionals, so by Jensen it bounds ``-log E_sigma p_sigma(x)`` from above. Two
unbiased Monte Carlo estimators (``estimator``): ``"time"`` draws ``t`` (``t_sampling``:
``"stratified"`` over the batch, one uniform shifted by ``k / K`` -- MD4's antithetic-style low
variance draw -- or ``"uniform"``) and masks at ``alpha(t)``; ``"count"`` draws the number ``j``
of masked pixels (stratified the same way) and a uniform set of that size: the Rao-Blackwellised
form, whose terms are bounded by ``D`` times the largest cross-entropy (the time form's weight
``1/t`` has unbounded variance near ``t = 0``). :meth:`MaskedDiffusion.elbo` is a stochastic
estimate of the lower bound on ``log p`` from ``k`` draws per image; its Monte Carlo
standard error is :meth:`MaskedDiffusion.elbo_stats` (``k``: the number of draws, ``dgm score
--set k=K``).

**Sampling** (:class:`MaskedDiffusionSampleOptions`) goes from all-masked to clean in ``steps``
network passes on the time grid ``t_k = 1 - k/T``: after step ``k`` ``round(D (1 - alpha(t_k)))``
pixels stay masked, the others being drawn from the network's categoricals given the current
``z``. ``order="random"`` chooses the pixels to unmask uniformly (the ancestral reverse process
with its pixel counts fixed at their expectations); ``"confidence"`` unmasks the pixels whose drawn
value is most probable first (MaskGIT-style); ``"raster"`` unmasks them in the flat (raster)
order, first index first: one pixel per step, this is the model's chain rule in that one fixed
order, the sampler of an autoregressive model. With the linear schedule and ``steps = D`` one pixel
is unmasked per step, in a uniformly random order: the order-agnostic autoregressive sampler,
which draws exactly from the model's mixture over orders. :meth:`MaskedDiffusion.complete` runs the
same chain from a partly observed image, keeping the observed pixels.

>>> from dgm.core.spec import DataSpec
>>> m = MaskedDiffusion(DataSpec((1, 4, 4), "discrete", levels=2), MaskedDiffusionConfig(width=8, depth=1))
>>> m.sample(2, steps=4).shape
torch.Size([2, 1, 4, 4])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgm.core.errors import ConfigError, DataError
from dgm.core.likelihood import Likelihood
from dgm.core.model import Batch, Example, Model, check_labels, completion_mask, unpack
from dgm.core.registry import register
from dgm.core.spec import DataSpec
from dgm.models.masked_diffusion.network import (
    ResNetDenoiser,
    TransformerDenoiser,
    UNetDenoiser,
)
from dgm.models.masked_diffusion.schedule import MaskSchedule

__all__ = ["MaskedDiffusion", "MaskedDiffusionConfig", "MaskedDiffusionSampleOptions"]

ESTIMATORS = ("time", "count")


#: each network's size when the config leaves it ``None``: the resnet and transformer as the
#: digits benchmark trains them (82.45 nats in 16 min), the U-Net (28x28 images and larger) as the
#: binarized-MNIST one (16 channels, two downsamplings: 84.89 nats in 30 min on one thread, and 2.8x
#: the steps per second of a 32x(1,2) U-Net; ``benchmarks/results/INDEX.md``)
NETWORK_DEFAULTS: dict[str, dict[str, Any]] = {
    "resnet": {"width": 64, "depth": 6},
    "unet": {"width": 16, "depth": 1, "mults": (1, 2, 2)},
    "transformer": {"width": 64, "depth": 6},
}


@dataclass
class MaskedDiffusionConfig:
    """Hyperparameters of :class:`MaskedDiffusion`.

    Attributes:
        network: ``"resnet"`` (full-resolution residual CNN), ``"unet"`` (the tiny U-Net),
            ``"transformer"`` (bidirectional, any event shape) or ``"auto"``: the resnet for
            images up to 16x16, the U-Net for larger images, the transformer otherwise.
        width: channels of the CNNs, model width of the transformer; ``None``: the network's
            own (``NETWORK_DEFAULTS``).
        depth: residual blocks (resnet), blocks per level (unet) or layers (transformer);
            ``None``: the network's own.
        mults: channel multipliers per U-Net level; ``None``: the U-Net's own.
        heads: attention heads of the transformer.
        schedule: ``alpha(t)``: ``"linear"`` (``1 - t``) or ``"cosine"``.
        time_input: the network sees ``t``; off, a learned constant stands in for it.
        estimator: Monte Carlo form of the bound in the training loss: ``"time"`` (draw ``t``,
            mask with ``alpha(t)``, weight ``-alpha'/(1-alpha)``) or ``"count"`` (draw the number
            of masked pixels, weight ``D / j``; the same bound, lower variance).
        bound_estimator: the form used for the reported bound (:meth:`elbo`, ``dgm eval``,
            ``dgm score``): ``"count"`` by default, whose terms are bounded, so its standard error
            can be trusted (on binarized MNIST a 4-draw time-form figure read 106.8 +- 0.7 nats
            where the count form read 95.1 +- 0.5 for the same weights); or ``"time"``.
        t_sampling: ``"stratified"`` (one uniform shifted over the ``K`` draws of a batch) or
            ``"uniform"`` (independent draws).
        bound_t_samples: draws per image of :meth:`elbo` when the caller gives none.
        region_masks: share of each training batch (0 to 1) whose masked pixels are drawn inside
            a random region (:func:`random_regions`: a half-plane or a box of an image) with the
            count form of the bound on completing that region given the rest (ARDM's objective
            made conditional). Inpainting asks for the conditionals of such contiguous holes,
            which uniform masks almost never produce; the reported bound (:meth:`elbo`) stays the
            unconditional one, and with a share above 0 the training loss is no longer it.
            Measured (lower half hidden, class match): digits 0.687 -> 0.720 (+-0.02) at 0.5,
            bound 82.36 -> 83.21 nats; binarized MNIST 0.723 -> 0.740 (+-0.025), bound 84.64 ->
            85.44; so off by default (``benchmarks/results/INDEX.md``).
        conditional: condition on class labels (needs ``num_classes`` in the data spec).
        wide_head: the U-Net ends in ``width`` feature maps that a 1x1 convolution maps to the
            logits. Off (runs saved before the option): it ends in as many maps as its input
            has channels, ``C (L + 1) + K``, three for binary data: a bottleneck before the
            logits.
    """

    network: Literal["auto", "resnet", "unet", "transformer"] = "auto"
    width: int | None = None
    depth: int | None = None
    mults: tuple[int, ...] | None = None
    heads: int = 4
    schedule: Literal["linear", "cosine"] = "linear"
    time_input: bool = True
    estimator: Literal["time", "count"] = "time"
    bound_estimator: Literal["time", "count"] = "count"
    t_sampling: Literal["stratified", "uniform"] = "stratified"
    bound_t_samples: int = 16
    region_masks: float = 0.0
    conditional: bool = False
    wide_head: bool = True

    #: keys added since and the values that behave as before (saved runs are read with them)
    added: ClassVar[dict[str, Any]] = {"wide_head": False}

    def __post_init__(self) -> None:
        if self.network not in ("auto", "resnet", "unet", "transformer"):
            raise ConfigError(
                f"network must be auto, resnet, unet or transformer, not {self.network!r}"
            )
        if (self.width is not None and self.width < 1) or (
            self.depth is not None and self.depth < 1
        ):
            raise ConfigError(f"width and depth must be positive, not {self.width}, {self.depth}")
        for key in ("estimator", "bound_estimator"):
            if getattr(self, key) not in ESTIMATORS:
                raise ConfigError(f"{key} must be 'time' or 'count', not {getattr(self, key)!r}")
        if self.t_sampling not in ("stratified", "uniform"):
            raise ConfigError(
                f"t_sampling must be 'stratified' or 'uniform', not {self.t_sampling!r}"
            )
        if self.bound_t_samples < 1:
            raise ConfigError(f"bound_t_samples must be >= 1, not {self.bound_t_samples}")
        if not 0.0 <= self.region_masks <= 1.0:
            raise ConfigError(f"region_masks must lie in [0, 1], not {self.region_masks}")
        MaskSchedule(self.schedule)  # checks the name


@dataclass
class MaskedDiffusionSampleOptions:
    """Options of ``sample(n, **options)`` and ``complete`` for :class:`MaskedDiffusion`.

    Attributes:
        steps: network passes ``T`` from all-masked to clean, 1..D; 0: ``D`` (with the linear
            schedule one pixel per step, the exact order-agnostic autoregressive sampler).
        order: which masked pixels a step unmasks: ``"random"`` (ancestral), ``"confidence"``
            (the most probable drawn values first) or ``"raster"`` (first flat index first; one
            pixel per step: the chain rule in raster order, what an autoregressive model samples).
            Completing the lower half of binarized MNIST (300 test images, the 30-min model) the
            raster order's class match read 0.700 against 0.737 for the random order
            (``benchmarks/results/masked_diffusion_binarized_mnist_completion_orders.json``).
    """

    steps: int = 0
    order: Literal["random", "confidence", "raster"] = "random"

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or self.steps < 0:
            raise ConfigError(f"steps must be an integer >= 0 (0: one per pixel), not {self.steps}")
        if self.order not in ("random", "confidence", "raster"):
            raise ConfigError(
                f"order must be 'random', 'confidence' or 'raster', not {self.order!r}"
            )


def random_regions(event_shape: tuple[int, ...], n: int, device: Any = None) -> Tensor:
    """``n`` random regions ``(n, D)`` bool of the flat event, what inpainting hides.

    Images ``(C, H, W)``: half of them a half-plane (the rows below or above, or the columns
    right or left of, a uniform cut strictly inside the image), half a box (its rows and its
    columns each between two uniform ends), over all channels. Other shapes: a uniform span
    ``[a, b)`` of the flat order. Never empty.
    """
    D = math.prod(event_shape)
    if len(event_shape) != 3:
        a = torch.randint(0, D, (n, 1), device=device)
        length = (torch.rand(n, 1, device=device) * (D - a)).floor().long() + 1
        pos = torch.arange(D, device=device)
        return (pos >= a) & (pos < a + length)
    C, H, W = event_shape
    rows = torch.arange(H, device=device).view(1, H, 1)
    cols = torch.arange(W, device=device).view(1, 1, W)

    def span(size: int) -> tuple[Tensor, Tensor]:  # between two uniform ends, both included
        ends = torch.randint(0, size, (2, n, 1, 1), device=device)
        return ends.min(0).values, ends.max(0).values + 1

    r0, r1 = span(H)
    c0, c1 = span(W)
    box = (rows >= r0) & (rows < r1) & (cols >= c0) & (cols < c1)  # (n, H, W)
    cut_r = torch.randint(1, max(H, 2), (n, 1, 1), device=device)
    cut_c = torch.randint(1, max(W, 2), (n, 1, 1), device=device)
    side = torch.randint(0, 4, (n, 1, 1), device=device)
    half = torch.where(
        side < 2,
        torch.where(side == 0, rows >= cut_r, rows < cut_r).expand(n, H, W),
        torch.where(side == 2, cols >= cut_c, cols < cut_c).expand(n, H, W),
    )
    pick = torch.rand(n, 1, 1, device=device) < 0.5
    region = torch.where(pick, half, box)  # (n, H, W)
    region = region | ~region.flatten(1).any(1).view(n, 1, 1)  # a 1-pixel image's empty cut
    return region.unsqueeze(1).expand(n, C, H, W).reshape(n, D)


def _stratified(n: int, stratified: bool, device: torch.device) -> Tensor:
    """``n`` numbers in (0, 1): ``(u + k) / n`` for one uniform ``u`` (or ``n`` independent)."""
    u = torch.rand(1 if stratified else n, dtype=torch.float64, device=device)
    if stratified:
        u = (u + torch.arange(n, dtype=torch.float64, device=device)) / n
    return u.clamp(min=1e-12)


@register
class MaskedDiffusion(Model):
    """Masked (absorbing-state) diffusion over discrete data (see the module docstring)."""

    name = "masked-diffusion"
    family = "masked_diffusion"
    description = (
        "masked (absorbing-state) discrete diffusion: any-order completion, few-step sampling, "
        "continuous-time bound (MD4/MDLM)"
    )
    Config = MaskedDiffusionConfig
    SampleOptions = MaskedDiffusionSampleOptions
    likelihood_bound = "elbo"
    bound_options = ("k",)
    data_kinds = frozenset({"discrete"})
    train_defaults = {"lr": 1e-3, "batch_size": 128, "grad_clip": 1.0}
    #: on MNIST-sized images the binarized-MNIST benchmark's recipe (84.89 nats in 30 minutes)
    large_image_train_defaults = {"max_minutes": 30, "batch_size": 64}
    example = Example(
        spec=DataSpec((1, 3, 3), kind="discrete", levels=3, num_classes=3),
        config={"width": 8, "depth": 1, "bound_t_samples": 2},
        variants=(
            {"network": "transformer", "width": 16, "depth": 1, "heads": 2},
            {"network": "unet", "width": 8, "mults": (1,)},
            {"conditional": True, "schedule": "cosine", "estimator": "count"},
            {"region_masks": 0.5},
        ),
    )

    def __init__(self, spec: DataSpec, config: MaskedDiffusionConfig | None = None) -> None:
        super().__init__(spec, config)
        c: MaskedDiffusionConfig = self.config
        self.levels = int(spec.levels)  # type: ignore[arg-type]
        if c.conditional and not spec.num_classes:
            raise ConfigError(
                "masked-diffusion with conditional=True needs labelled data "
                "(num_classes in the data spec)"
            )
        self.num_classes = int(spec.num_classes) if c.conditional else 0
        self.schedule = MaskSchedule(c.schedule)
        network = c.network
        image = spec.is_image
        if network == "auto":
            network = "unet" if spec.is_large_image else "resnet" if image else "transformer"
        if network in ("resnet", "unet") and not image:
            raise ConfigError(
                f"network={network} takes images (C, H, W), not event shape {self.event_shape}; "
                "use network=transformer"
            )
        self.network = network
        own = NETWORK_DEFAULTS[network]
        width = c.width if c.width is not None else own["width"]
        depth = c.depth if c.depth is not None else own["depth"]
        mults = tuple(c.mults) if c.mults is not None else own.get("mults", (1, 2))
        #: the network's size in use (the config's ``None`` resolved)
        self.net_size = {"width": width, "depth": depth, "mults": mults}
        k = self.num_classes
        self.net: nn.Module
        if network == "resnet":
            self.net = ResNetDenoiser(self.event_shape, self.levels, width, depth, c.time_input, k)
        elif network == "unet":
            self.net = UNetDenoiser(self.event_shape, self.levels, width, mults, depth, k,
                                    wide_head=c.wide_head)  # fmt: skip
        else:
            self.net = TransformerDenoiser(
                self.num_dims, self.levels, width, depth, c.heads, c.time_input, k
            )

    # ------------------------------------------------------------------ the network
    @property
    def mask_token(self) -> int:
        """The token of a masked pixel, ``L``."""
        return self.levels

    def logits(self, z: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """Logits ``(B, D, L)`` of every pixel given tokens ``z`` (B, D) and times ``t`` (B,)."""
        return self.net(z, t.to(self.dtype), y)

    def _flat(self, x: Tensor) -> Tensor:
        return self.check_input(x).reshape(x.shape[0], -1).long()  # (B, D)

    # ------------------------------------------------------------------ the bound
    def mask_draws(
        self, x: Tensor, draws: Tensor, estimator: str, region: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The masked set ``(B, D)`` bool, the times ``t`` (B,) and the weights (B,) of one Monte
        Carlo term of the bound per row of flat data ``x`` (B, D), for ``draws`` (B,) in (0, 1):
        the times (``"time"``) or the masked counts' quantiles (``"count"``, ``j = ceil(D u)``).
        With ``region`` (B, D) bool the count form runs inside each row's region ``R``: ``j =
        ceil(|R| u)`` pixels of ``R`` masked, weight ``|R| / j``, the term of the bound on
        ``-log p(x_R | x_rest)`` (:func:`random_regions`)."""
        B, D = x.shape
        if estimator == "time" and region is None:
            return self.schedule.mask(x, draws), draws, self.schedule.weight(draws)
        size = (
            torch.full((B,), float(D), dtype=torch.float64, device=x.device)
            if region is None
            else region.sum(1).to(torch.float64)
        )  # (B,)
        j = torch.minimum(torch.ceil(draws * size).clamp(min=1), size)  # (B,) masked pixels
        keys = torch.rand(B, D, device=x.device)
        if region is not None:
            keys = keys.masked_fill(~region, 2.0)  # pixels outside the region rank last
        rank = keys.argsort(1).argsort(1)  # a random order (of the region first)
        masked = rank < j[:, None]  # (B, D): a uniform set of j pixels (of the region)
        return masked, self.schedule.time_of(j / D), size / j

    def nelbo_draws(
        self,
        x: Tensor,
        y: Tensor | None,
        draws: Tensor,
        estimator: str,
        region: Tensor | None = None,
    ) -> Tensor:
        """One Monte Carlo term of the negative ELBO per row: flat data ``x`` (B, D) long, checked
        labels ``y``, and ``draws`` (B,) in (0, 1) (:meth:`mask_draws`; with ``region`` the
        bound on completing each row's region). Nats per image, ``(B,)``."""
        masked, t, weight = self.mask_draws(x, draws, estimator, region)
        z = torch.where(masked, torch.full_like(x, self.mask_token), x)  # (B, D)
        logits = self.logits(z, t, y)  # (B, D, L)
        ce = F.cross_entropy(logits.transpose(1, 2), x, reduction="none")  # (B, D)
        return weight.to(ce.dtype) * (ce * masked).sum(1)  # (B,)

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        """Mean negative ELBO of the batch, one draw per image (stratified over the batch); with
        ``region_masks`` that share of the images trains the bound of completing a random region
        instead (:class:`MaskedDiffusionConfig`)."""
        x, y = unpack(batch)
        x = self._flat(x)
        y = check_labels(self, y, x.shape[0])
        c = self.config
        B = x.shape[0]
        draws = _stratified(B, c.t_sampling == "stratified", x.device)
        draws = draws[torch.randperm(B, device=x.device)]
        r = int(round(c.region_masks * B))
        if r == 0:
            nelbo = self.nelbo_draws(x, y, draws, c.estimator)
            return {"loss": nelbo.mean(), "nelbo": nelbo.mean().detach()}
        # the first B - r rows (a random batch: any rows) train the bound, the last r a region
        m0, t0, w0 = self.mask_draws(x[: B - r], draws[: B - r], c.estimator)
        region = random_regions(self.event_shape, r, x.device)
        m1, t1, w1 = self.mask_draws(x[B - r :], draws[B - r :], "count", region)
        masked, t, weight = torch.cat([m0, m1]), torch.cat([t0, t1]), torch.cat([w0, w1])
        z = torch.where(masked, torch.full_like(x, self.mask_token), x)  # (B, D)
        ce = F.cross_entropy(self.logits(z, t, y).transpose(1, 2), x, reduction="none")
        terms = weight.to(ce.dtype) * (ce * masked).sum(1)  # (B,)
        out = {"loss": terms.mean(), "region_nll": terms[B - r :].mean().detach()}
        if r < B:
            out["nelbo"] = terms[: B - r].mean().detach()
        return out

    def elbo_stats(
        self, x: Tensor, y: Tensor | None = None, k: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """The ELBO estimate ``(B,)`` (a lower bound on ``log p(x)`` in nats, estimated from
        ``k`` stratified ``t`` draws per image) and its Monte Carlo standard error ``(B,)``
        (the draws' standard deviation over ``sqrt(K)``: conservative for stratified draws)."""
        x = self._flat(x)
        y = check_labels(self, y, x.shape[0])
        K = int(k or self.config.bound_t_samples)
        if K < 1:
            raise DataError(f"k must be a positive number of t draws, not {K}")
        B = x.shape[0]
        strat = self.config.t_sampling == "stratified"
        draws = torch.stack([_stratified(K, strat, x.device) for _ in range(B)], 1)  # (K, B)
        terms = torch.stack(
            [-self.nelbo_draws(x, y, draws[k], self.config.bound_estimator) for k in range(K)]
        )  # (K, B)
        if K == 1:
            return terms[0], torch.full_like(terms[0], math.inf)
        return terms.mean(0), terms.std(0) / math.sqrt(K)

    def elbo(self, x: Tensor, y: Tensor | None = None, k: int | None = None) -> Tensor:
        """A stochastic estimate of the ELBO, the lower bound on ``log p(x)``, from ``k`` draws
        of ``t`` per image (default ``bound_t_samples``), nats ``(B,)``."""
        return self.elbo_stats(x, y, k)[0]

    def likelihood_info(self, **bound_options: Any) -> Likelihood:
        """The ELBO from ``k`` Monte Carlo ``t`` draws per image: a stochastic (unbiased)
        estimate of a lower bound, so its standard error (:meth:`elbo_stats`) matters."""
        self._check_bound_options(bound_options)
        c = self.config
        k = int(bound_options.get("k") or c.bound_t_samples)
        what = "masked count" if c.bound_estimator == "count" else "time"
        detail = f"{k} {c.t_sampling} {what} draws per image, {c.schedule} schedule"
        return Likelihood("bound_estimate", f"elbo(k={k})", detail)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def unmask(
        self,
        z: Tensor,
        masked: Tensor,
        y: Tensor | None = None,
        steps: int = 0,
        order: str = "random",
    ) -> Tensor:
        """Fill the ``masked`` (B, D) pixels of tokens ``z`` (B, D) in ``steps`` network passes
        (module docstring); the other pixels are returned unchanged. ``(B, D)`` long."""
        z, masked = z.clone(), masked.clone()
        B, D = z.shape
        T = int(steps) or D
        if not 1 <= T <= D:
            raise ConfigError(f"steps must lie in 1..{D} (the number of pixels), not {T}")
        counts = self.schedule.masked_counts(masked.sum(1), T)  # (T + 1, B)
        for k in range(T):
            todo = counts[k] - counts[k + 1]  # (B,) pixels to unmask at this step
            if not bool((todo > 0).any()):
                continue
            t = self.schedule.time_of(masked.sum(1).double() / D)  # (B,)
            probs = torch.softmax(self.logits(z, t, y).double(), -1)  # (B, D, L)
            u = torch.rand(B, D, 1, dtype=torch.float64, device=z.device)
            draw = (probs.cumsum(-1) < u).sum(-1).clamp(max=self.levels - 1)  # (B, D)
            if order == "confidence":
                score = probs.gather(-1, draw[..., None]).squeeze(-1)  # (B, D)
            elif order == "raster":  # first flat index first
                score = -torch.arange(D, dtype=torch.float64, device=z.device).expand(B, D)
            else:
                score = torch.rand(B, D, dtype=torch.float64, device=z.device)
            score = score.masked_fill(~masked, -math.inf)
            rank = score.argsort(1, descending=True).argsort(1)  # (B, D)
            pick = (rank < todo[:, None]) & masked
            z = torch.where(pick, draw, z)
            masked = masked & ~pick
        return z

    def sample_batch(self) -> int:
        """The spec's inference batch (41 MNIST images), as the diffusion family: every unmasking
        step runs the network over the whole batch (400 MNIST samples of an untrained network,
        32 steps, 2 threads: 12.9 s in calls of 41 against 14.4 s in one call;
        ``benchmarks/results/scoring_sampling.json``)."""
        return self.spec.inference_batch()

    @torch.no_grad()
    def sample(
        self, n: int, y: Tensor | None = None, steps: int | None = None, order: str | None = None
    ) -> Tensor:
        """``n`` samples ``(n, *event_shape)`` from all-masked in ``steps`` passes."""
        given = {"steps": steps, "order": order}
        o = self.sample_config({k: v for k, v in given.items() if v is not None})
        y = check_labels(self, y, n)
        z = torch.full((n, self.num_dims), self.mask_token, dtype=torch.long, device=self.device)
        out = self.unmask(z, torch.ones_like(z, dtype=torch.bool), y, o.steps, o.order)
        return out.to(self.dtype).view(n, *self.event_shape)

    @torch.no_grad()
    def complete(
        self,
        x: Tensor,
        observed: Tensor,
        y: Tensor | None = None,
        steps: int | None = None,
        order: str | None = None,
    ) -> Tensor:
        """Completions ``(B, *event_shape)`` of ``x`` where ``observed`` (bool, same shape, or one
        event's shape broadcast) is true: those pixels are returned unchanged, the others drawn by
        the model's conditionals (``steps=0``: one pixel per step, the any-order chain rule).
        Values of ``x`` at unobserved pixels are ignored (they must still be valid levels)."""
        given = {"steps": steps, "order": order}
        o = self.sample_config({k: v for k, v in given.items() if v is not None})
        flat = self._flat(x)  # (B, D)
        obs = completion_mask(self, x, observed)  # (B, D)
        y = check_labels(self, y, flat.shape[0])
        z = torch.where(obs, flat, torch.full_like(flat, self.mask_token))
        steps_ = min(o.steps or self.num_dims, self.num_dims)
        out = self.unmask(z, ~obs, y, steps_, o.order)
        return out.to(x.dtype if x.is_floating_point() else self.dtype).view(x.shape)
