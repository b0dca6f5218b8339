r"""What every flow model shares: exact ``log_prob`` and ``sample`` through ``self.flow``,
class-label conditioning, the logit front end for bounded data, ActNorm initialisation and
variational dequantization.

* **Conditioning** (``conditional=True``): the label ``y`` becomes a one-hot context ``c`` that
  every conditioner sees, so ``log p(x | y) = log N(f(x; c)) + log |det J_f(x; c)|``.
* **Bounded data** (``logit_alpha > 0``): a :class:`~dgm.models.flows.elementwise.Logit` first
  maps ``[0, 1]`` to the real line; its log-determinant is part of ``log_prob``.
* **Variational dequantization** (``dequantization="variational"``, images only): the model's
  likelihood is the bound of :mod:`dgm.models.flows.dequantization`, a stochastic lower bound,
  so the instance reports ``exact_likelihood = False`` and ``likelihood_bound =
  "dequantization_bound"``; ``log_prob`` then raises.
* **Reduced-temperature sampling** (``sample(n, temperature=T)``, Kingma & Dhariwal 2018, Sec.
  5): the base noise is drawn from ``N(0, T^2 I)`` instead of ``N(0, I)``; ``T < 1`` gives
  samples nearer the modes. They are not samples of the model's ``p(x)`` (which ``log_prob``
  keeps scoring); ``T = 1``, the default, is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from dgm.core.distributions import NormalizingFlow
from dgm.core.errors import ConfigError, DataError, DgmError
from dgm.core.likelihood import Likelihood
from dgm.core.model import Batch, Model, check_labels, unpack
from dgm.core.transforms import Composite, Reshape, Transform
from dgm.models.flows.actnorm import ActNorm
from dgm.models.flows.dequantization import VariationalDequantizer, dequantize_bins
from dgm.models.flows.elementwise import Logit

__all__ = [
    "ConditionalOptions",
    "FlowModel",
    "FlowSampleOptions",
    "ImageOptions",
    "check_temperature",
]

#: examples of the first batch used for ActNorm's data-dependent initialisation
INIT_EXAMPLES = 512


def check_temperature(temperature: float) -> float:
    """``temperature`` if it is a finite number ``>= 0``, else a one-sentence ConfigError."""
    if isinstance(temperature, bool) or not (
        isinstance(temperature, (int, float)) and 0 <= temperature < float("inf")
    ):
        raise ConfigError(
            f"temperature must be a finite number >= 0 (1: the model's p(x)), not {temperature!r}"
        )
    return float(temperature)


@dataclass
class FlowSampleOptions:
    """Options of :meth:`FlowModel.sample`.

    Attributes:
        temperature: ``T``; the base noise is ``N(0, T^2 I)``. 1: samples of the model's
            ``p(x)``; below 1 reduced-temperature samples (Kingma & Dhariwal 2018), sharper and
            not of ``p(x)``.
    """

    temperature: float = 1.0

    def __post_init__(self) -> None:
        check_temperature(self.temperature)


@dataclass
class ConditionalOptions:
    """Config fields of a flow that can be conditioned on class labels.

    Attributes:
        conditional: condition on class labels (a one-hot context fed to every conditioner;
            needs ``num_classes`` in the data spec).
    """

    conditional: bool = False


def check_coupling_config(cfg: Any, counts: tuple[str, ...]) -> None:
    """The checks the coupling flows' configs share: the ``counts`` fields (layers, scales, ...)
    are at least 1, and ``width``, ``hidden`` and ``log_scale_bound`` are positive."""
    for key in counts:
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{key} must be at least 1, not {getattr(cfg, key)}")
    if cfg.width < 1:
        raise ConfigError(f"width must be positive, not {cfg.width}")
    if not cfg.log_scale_bound > 0:
        raise ConfigError(f"log_scale_bound must be positive, not {cfg.log_scale_bound}")
    hidden = cfg.hidden
    if len(hidden) == 0 or min(hidden) < 1:
        raise ConfigError(f"hidden must list one or more positive widths, not {hidden}")


@dataclass
class ImageOptions(ConditionalOptions):
    """Config fields of flows that model (dequantized) images.

    Attributes:
        logit_alpha: ``alpha`` of the logit front end for data in ``[0, 1]``; ``None`` (auto)
            uses 0.05 for images and 0 (no logit) for vectors; 0 turns it off.
        dequantization: ``"uniform"`` (the preprocessor's noise, exact ``log_prob`` of the
            dequantized data) or ``"variational"`` (a learned noise flow, images only; the
            likelihood becomes the bound ``dequantization_bound``).
        dequantization_levels: ``L``, pixel levels of the raw data (256 for MNIST, 17 for
            digits), used by variational dequantization to find each value's bin. A wrong value
            keeps the figure a true bound but loosens it.
        dequantization_layers: coupling layers of the variational noise flow.
    """

    logit_alpha: float | None = None
    dequantization: Literal["uniform", "variational"] = "uniform"
    dequantization_levels: int = 256
    dequantization_layers: int = 4

    def __post_init__(self) -> None:
        if self.logit_alpha is not None and not 0 <= self.logit_alpha < 0.5:
            raise ConfigError(f"logit_alpha must lie in [0, 0.5), not {self.logit_alpha}")
        if self.dequantization_levels < 2:
            raise ConfigError(
                f"dequantization_levels must be at least 2, not {self.dequantization_levels}"
            )
        if self.dequantization_layers < 1:
            raise ConfigError(
                f"dequantization_layers must be at least 1, not {self.dequantization_layers}"
            )


class FlowModel(Model):
    """A :class:`Model` whose subclass builds its transform and calls :meth:`_make_flow`.

    Config fields read when present: ``conditional``, ``logit_alpha``, ``dequantization``,
    ``dequantization_levels``, ``dequantization_layers``.
    """

    family = "flows"
    SampleOptions = FlowSampleOptions
    data_kinds = frozenset({"continuous"})

    def __init__(self, spec: Any, config: Any | None = None) -> None:
        super().__init__(spec, config)
        self.num_classes = 0
        if self.conditional:
            if not spec.num_classes:
                raise ConfigError(
                    f"{self.name} with conditional=True needs labelled data "
                    "(num_classes in the data spec)"
                )
            self.num_classes = int(spec.num_classes)
        self.dequantizer: VariationalDequantizer | None = None
        self.logit_alpha = 0.0

    @property
    def exact_likelihood(self) -> bool:  # type: ignore[override]
        """Exact unless variational dequantization makes the likelihood a bound."""
        return self.dequantizer is None

    @property
    def likelihood_bound(self) -> str | None:  # type: ignore[override]
        """``"dequantization_bound"`` with variational dequantization, else ``None``."""
        return None if self.dequantizer is None else "dequantization_bound"

    def likelihood_info(self, **bound_options: Any) -> Likelihood:
        """Exact, or with variational dequantization a lower bound on the discrete data's
        log-likelihood."""
        info = super().likelihood_info(**bound_options)
        if self.dequantizer is None:
            return info
        return Likelihood("bound", "dequantization_bound", "variational", discrete=True)

    # ------------------------------------------------------------------ construction
    def _make_flow(self, transform: Transform, *, on_event_shape: bool = False) -> None:
        """Set ``self.flow`` from ``transform``, which acts on flat ``(B, D)`` data, or on
        event-shaped ``(B, *event_shape)`` data when ``on_event_shape`` (image flows)."""
        c = self.config
        d = self.num_dims
        parts: list[Transform] = []
        if on_event_shape and len(self.event_shape) > 1:
            parts.append(Reshape((d,), self.event_shape))
        alpha = getattr(c, "logit_alpha", 0.0)
        if alpha is None:  # auto: images are bounded, vectors are not
            alpha = 0.05 if self.spec.is_image else 0.0
        if not 0 <= alpha < 0.5:
            raise ConfigError(f"logit_alpha must lie in [0, 0.5), not {alpha}")
        self.logit_alpha = float(alpha)
        if alpha > 0:
            parts.append(Logit(alpha))
        parts.append(transform)
        out = Composite(parts).output_shape((d,))
        if tuple(out) != (d,):
            parts.append(Reshape(out, (d,)))
        transform = parts[0] if len(parts) == 1 else Composite(parts)
        self.flow = NormalizingFlow(transform, self.event_shape)
        if getattr(c, "dequantization", "uniform") == "variational":
            self.dequantizer = VariationalDequantizer(
                self.event_shape, c.dequantization_levels, c.dequantization_layers
            )

    # ------------------------------------------------------------------ inputs
    def _context(self, y: Tensor | None, n: int) -> Tensor | None:
        y = check_labels(self, y, n)
        return None if y is None else F.one_hot(y, self.num_classes).to(self.dtype)  # (n, K)

    def check_input(self, x: Tensor, what: str = "input") -> Tensor:
        x = super().check_input(x, what)
        if self.logit_alpha > 0 and what == "input" and ((x < 0) | (x > 1)).any():
            raise DataError(
                f"model {self.name!r} applies a logit to data in [0, 1] (dequantized images), but "
                f"the {what} lies in [{x.min().item():.3g}, {x.max().item():.3g}]; rescale it or "
                "set logit_alpha=0 for unbounded data"
            )
        return x

    # ------------------------------------------------------------------ the contract
    def log_prob(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        if self.dequantizer is not None:
            raise DgmError(
                f"model {self.name!r} with dequantization='variational' has no exact likelihood; "
                "use its lower bound dequantization_bound(x)"
            )
        x = self.check_input(x)
        return self.flow.log_prob(x, self._context(y, x.shape[0]))  # (B,)

    def dequantization_bound(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """``log p((b + u) / L) - log q(u | b)`` with ``b = floor(L x)`` and one draw
        ``u ~ q(. | b)``: a stochastic lower bound on ``log p_bar(x)``, the density that spreads
        each bin's mass uniformly over it. Plus the preprocessor's ``-D log L`` its mean is a
        lower bound on the discrete log-likelihood (:mod:`dgm.models.flows.dequantization`)."""
        if self.dequantizer is None:
            raise DgmError(f"model {self.name!r} uses uniform dequantization; use log_prob(x)")
        x = self.check_input(x)
        levels = self.dequantizer.levels
        bins = dequantize_bins(x, levels)  # (B, *event)
        u, log_q = self.dequantizer(bins)  # (B, *event), (B,)
        v = (bins + u) / levels
        log_p = self.flow.log_prob(v, self._context(y, x.shape[0]))  # (B,)
        return log_p - log_q

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        x, y = unpack(batch)
        y = y if self.conditional else None
        if self.dequantizer is None:
            nll = -self.log_prob(x, y)
        else:
            nll = -self.dequantization_bound(x, y)
        return {"loss": nll.mean(), "nll": nll.mean().detach()}

    def sample(self, n: int, y: Tensor | None = None, temperature: float = 1.0) -> Tensor:
        """``n`` samples ``(n, *event_shape)``. A conditional flow called without labels draws
        them uniformly (a sample of the class mixture with a uniform prior). With variational
        dequantization, a flow sample is moved to a uniform point of its bin (a sample of the
        density that bound is about). ``temperature`` scales the base noise (module docstring:
        ``T != 1`` is not a sample of ``p(x)``)."""
        temperature = check_temperature(temperature)
        if self.conditional and y is None:
            y = torch.randint(0, self.num_classes, (n,), device=self.device)
        ctx = self._context(y, n)
        v = self.flow.sample(n, ctx, temperature=temperature)  # (n, *event)
        if self.dequantizer is None:
            return v
        levels = self.dequantizer.levels
        return (dequantize_bins(v, levels) + torch.rand_like(v)) / levels

    def on_train_start(self, train_data: Tensor, labels: Tensor | None = None) -> None:
        """Data-dependent initialisation of every :class:`ActNorm` from the first examples, with
        their labels for a conditional flow (label 0 where none are given)."""
        if not any(isinstance(m, ActNorm) for m in self.modules()):
            return
        x = train_data[:INIT_EXAMPLES].to(self.device, self.dtype)
        y = None
        if self.conditional:
            y = (
                torch.zeros(x.shape[0], dtype=torch.long, device=self.device)
                if labels is None
                else labels[: x.shape[0]].to(self.device, torch.long)
            )
        was_training = self.training
        self.train()
        with torch.no_grad():
            if self.dequantizer is None:
                self.log_prob(x, y)
            else:
                self.dequantization_bound(x, y)
        self.train(was_training)

    def forward_transform(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Data to noise: ``(z (B, *event_shape), log|det dz/dx| (B,))``."""
        x = self.check_input(x)
        return self.flow(x, self._context(y, x.shape[0]))

    def inverse_transform(self, z: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Noise to data: ``(x (B, *event_shape), log|det dx/dz| (B,))``."""
        z = self.check_input(z, "z")
        return self.flow.inverse(z, self._context(y, z.shape[0]))
