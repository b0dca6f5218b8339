"""Preprocessing: from raw data to what a model sees, with the change of variables accounted for.

A :class:`Preprocessor` maps raw data ``x`` (as a :class:`~dgm.data.Dataset` holds it) to model
data ``x_model`` and returns ``log_det`` such that, per example,

    ``log p_raw(x) >= log p_model(x_model) + log_det``

with equality for a deterministic bijection and in expectation (a lower bound) for stochastic
dequantization. Likelihood metrics add ``log_det`` to the model's log-likelihood, so every
figure is reported in the units of the raw data and bits per dimension are comparable across
families.

>>> deq = Dequantize(levels=256)
>>> x = torch.tensor([[0.0, 255.0]])
>>> xm, log_det = deq(x, generator=torch.Generator().manual_seed(0))
>>> bool(((xm >= 0) & (xm < 1)).all()), torch.equal(deq.inverse(xm), x)
(True, True)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from dgm.core.errors import ConfigError, DataError
from dgm.core.spec import DataSpec

__all__ = [
    "Binarize",
    "Dequantize",
    "Identity",
    "Preprocessor",
    "default_preprocessor",
    "preprocessor_from_config",
]


class Preprocessor:
    """Base class: ``__call__(x, generator) -> (x_model, log_det)``, ``spec``, ``inverse`` and a
    JSON-able config.

    Attributes:
        name: the config name.
        stochastic: each call draws fresh noise from ``generator`` (the output is random).
        likelihood_note: what a likelihood through this preprocessor is, for reports
            (``None`` when it is the exact likelihood of the raw data).
    """

    name: ClassVar[str] = ""
    stochastic: ClassVar[bool] = False
    likelihood_note: ClassVar[str | None] = None

    def __call__(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Map raw ``x`` of shape ``(B, *event)`` to ``(x_model (B, *event), log_det (B,))``."""
        raise NotImplementedError

    def spec(self, raw_spec: DataSpec) -> DataSpec:
        """The spec of the data the model sees, given the raw data's spec."""
        return raw_spec

    def inverse(self, x_model: Tensor) -> Tensor:
        """Map model-space data (e.g. samples) back to raw data space."""
        return x_model

    def to_config(self) -> dict[str, Any]:
        """A JSON-able dict that :func:`preprocessor_from_config` turns back into this object."""
        return {"name": self.name}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Preprocessor) and self.to_config() == other.to_config()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.to_config().items())))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


def _zeros(x: Tensor) -> Tensor:
    return torch.zeros(
        x.shape[0], dtype=x.dtype if x.is_floating_point() else torch.float32, device=x.device
    )


def _check_levels(x: Tensor, levels: int, who: str) -> None:
    if not x.is_floating_point():
        raise DataError(f"{who} needs a floating-point tensor, not {x.dtype}")
    bad = (x < 0) | (x > levels - 1) | (x != torch.round(x))
    if bad.any():
        raise DataError(
            f"{who} needs integer values 0..{levels - 1}, found {x[bad].flatten()[0].item()!r}; "
            "pass the raw data, not data that is already scaled"
        )


def _check_int(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{what} must be an integer >= {minimum}, not {value!r}")
    return value


class Identity(Preprocessor):
    """The model sees the raw data unchanged; ``log_det = 0``."""

    name = "identity"

    def __call__(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        return x, _zeros(x)


class Dequantize(Preprocessor):
    """Uniform dequantization: integer data ``x in {0, ..., L-1}^D`` to ``(x + u) / L in [0, 1)^D``
    with ``u ~ U[0, 1)^D``, and ``log_det = -D log L``.

    Why this is an honest bound (Theis, van den Oord & Bethge, "A note on the evaluation of
    generative models", ICLR 2016): let ``q`` be a continuous model density on ``[0, 1)^D``. It
    defines a discrete model ``P(x) = int_{[0,1)^D} q((x + u) / L) L^-D du``, the mass of the bin
    of ``x``. By Jensen's inequality,

        ``log P(x) >= E_u[log q((x + u) / L)] - D log L``,

    so ``-(log q(x_model) + log_det)`` averaged over ``u`` is an upper bound on the discrete
    negative log-likelihood, and bits per dimension computed from it are a true upper bound on
    the discrete bits per dimension. The bound is tight when ``q`` is constant on every bin.
    Training on ``E_u[log q]`` maximises this bound, which is what keeps a continuous model from
    collapsing onto the integers. Variational dequantization (Ho et al., "Flow++", ICML 2019)
    learns the noise to tighten the bound; being learned, it is part of the model, not of this
    preprocessor (``kind="uniform"`` is the only one here): a flow built with
    ``dequantization="variational"`` (:mod:`dgm.models.flows.dequantization`) takes this
    preprocessor's output, recovers the bin ``floor(L y) = x``, draws its own noise and reports a
    named lower bound, to which this ``log_det`` is added as usual.

    ``inverse`` maps model samples back with ``clamp(floor(L y), 0, L-1)``. A value that float
    rounding would push into the next bin (probability about 2^-24 per element in float32) is
    moved to its bin centre, so ``inverse(forward(x)) == x`` holds exactly.
    """

    name = "dequantize"
    stochastic = True
    likelihood_note = "dequantization bound"

    def __init__(self, levels: int, kind: str = "uniform") -> None:
        self.levels = _check_int(levels, "dequantize levels", 2)
        if kind != "uniform":
            raise ConfigError(
                f"dequantization kind {kind!r} is not available; the only kind is 'uniform'"
            )
        self.kind = kind

    def __call__(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        _check_levels(x, self.levels, "dequantize")
        L = self.levels
        u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        y = (x + u) / L  # (B, *event) in [0, 1)
        y = torch.where(torch.floor(y * L) != x, (x + 0.5) / L, y)
        num_dims = math.prod(x.shape[1:])
        return y, torch.full((x.shape[0],), -num_dims * math.log(L), dtype=x.dtype, device=x.device)

    def spec(self, raw_spec: DataSpec) -> DataSpec:
        if raw_spec.kind != "discrete":
            raise DataError("dequantize needs discrete data; this data is already continuous")
        if raw_spec.levels != self.levels:
            raise DataError(
                f"dequantize was set up for {self.levels} levels but the data has "
                f"{raw_spec.levels}; use Dequantize(levels={raw_spec.levels})"
            )
        return DataSpec(raw_spec.event_shape, "continuous", num_classes=raw_spec.num_classes)

    def inverse(self, x_model: Tensor) -> Tensor:
        return torch.floor(x_model * self.levels).clamp(0, self.levels - 1)

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, "levels": self.levels, "kind": self.kind}


class Binarize(Preprocessor):
    """Binarize ``L``-level data: ``b ~ Bernoulli(x / (L-1))`` each call (``mode="dynamic"``) or
    ``b = [x / (L-1) > threshold]`` (``mode="static"``); ``log_det = 0``.

    The model then sees binary data, and its likelihood is that of the *binarized* data, not of the
    raw ``L``-level data: the figures measure a different problem. Dynamic binarization draws a new
    binary image every time (a standard augmentation for binary models); its test NLL is not
    comparable with results on the fixed binarization of Salakhutdinov & Murray (2008), the
    ``binarized-mnist`` dataset, which is the benchmark NADE, MADE and IWAE report on.
    ``inverse`` maps 0/1 back to ``0`` and ``L - 1``, for display.
    """

    name = "binarize"
    likelihood_note = "likelihood of the binarized data"

    def __init__(self, mode: str = "dynamic", threshold: float = 0.5, levels: int = 256) -> None:
        if mode not in ("dynamic", "static"):
            raise ConfigError(f"binarize mode must be 'dynamic' or 'static', not {mode!r}")
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, (int, float))
            or not 0 <= threshold < 1
        ):
            raise ConfigError(f"binarize threshold must be a number in [0, 1), not {threshold!r}")
        self.mode = mode
        self.threshold = float(threshold)
        self.levels = _check_int(levels, "binarize levels", 2)

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.mode == "dynamic"

    def __call__(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        _check_levels(x, self.levels, "binarize")
        p = x / (self.levels - 1)  # (B, *event) in [0, 1]
        if self.mode == "dynamic":
            b = torch.bernoulli(p, generator=generator)
        else:
            b = (p > self.threshold).to(x.dtype)
        return b, _zeros(x)

    def spec(self, raw_spec: DataSpec) -> DataSpec:
        if raw_spec.kind != "discrete":
            raise DataError(
                "binarize needs discrete data (integer levels); this data is continuous"
            )
        if raw_spec.levels != self.levels:
            raise DataError(
                f"binarize was set up for {self.levels} levels but the data has "
                f"{raw_spec.levels}; use Binarize(levels={raw_spec.levels})"
            )
        return DataSpec(
            raw_spec.event_shape, "discrete", levels=2, num_classes=raw_spec.num_classes
        )

    def inverse(self, x_model: Tensor) -> Tensor:
        return x_model * (self.levels - 1)

    def to_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mode": self.mode,
            "threshold": self.threshold,
            "levels": self.levels,
        }


_PREPROCESSORS: dict[str, type[Preprocessor]] = {
    cls.name: cls for cls in (Identity, Dequantize, Binarize)
}
_KEYS = {
    "identity": (),
    "dequantize": ("levels", "kind"),
    "binarize": ("mode", "threshold", "levels"),
}


def preprocessor_from_config(config: dict[str, Any]) -> Preprocessor:
    """Rebuild a preprocessor from :meth:`Preprocessor.to_config`, e.g.
    ``{"name": "dequantize", "levels": 256, "kind": "uniform"}``."""
    if not isinstance(config, dict) or "name" not in config:
        raise ConfigError(
            f"a preprocessor config is a mapping with a 'name' ({', '.join(_PREPROCESSORS)}), "
            f"not {config!r}"
        )
    name = config["name"]
    if name not in _PREPROCESSORS:
        raise ConfigError(
            f"unknown preprocessor {name!r}; the preprocessors are: {', '.join(_PREPROCESSORS)}"
        )
    kwargs = {k: v for k, v in config.items() if k != "name"}
    unknown = [k for k in kwargs if k not in _KEYS[name]]
    if unknown:
        valid = ", ".join(_KEYS[name]) or "none"
        raise ConfigError(
            f"unknown key {unknown[0]!r} for preprocessor {name!r}; valid keys are: {valid}"
        )
    try:
        return _PREPROCESSORS[name](**kwargs)
    except TypeError as e:  # a missing required key
        raise ConfigError(f"preprocessor {name!r} config {config!r} is incomplete ({e})") from None


def default_preprocessor(raw_spec: DataSpec, model_data_kinds: Iterable[str]) -> Preprocessor:
    """The preprocessing a model gets unless told otherwise.

    Discrete data goes unchanged to a model that takes discrete data and is dequantized
    (:class:`Dequantize`) for a continuous-only model; continuous data goes unchanged to a
    continuous model and is an error for a discrete-only one.
    """
    kinds = frozenset(model_data_kinds)
    if raw_spec.kind in kinds:
        return Identity()
    if raw_spec.kind == "discrete" and "continuous" in kinds:
        return Dequantize(raw_spec.levels)
    raise DataError(
        "this model needs discrete data but the data is continuous; use an integer-valued dataset "
        "(digits, mnist, binarized-mnist, or a file of integers 0..255) or a model for continuous data"
    )
