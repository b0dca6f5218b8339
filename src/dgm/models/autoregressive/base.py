r"""What PixelCNN, Gated PixelCNN, the causal Transformer and the LSTM share: one chain rule.

For discrete data ``x in {0..L-1}^D`` flattened in raster order, each model outputs the logits of
every conditional in one teacher-forced pass, ``logits(x) -> (B, D, L)``, where row ``d`` depends
on ``x_{<d}`` only (and on a class label ``y`` when ``conditional=True``), so

.. math::

    \log p(x \mid y) = \sum_{d=0}^{D-1} \log \mathrm{softmax}(\ell_d(x_{<d}, y))_{x_d}

is exact. Sampling and entropy decoding go one dimension at a time through a *decoder*: an object
with ``logits() -> (n, L)`` (the conditional of the next dimension) and ``feed(values (n,))``.
The naive decoder re-runs ``logits`` on the whole partially filled input for every dimension; the
fast decoder of each model reuses what it computed before (cached activations, a key/value cache,
a recurrent state). Both follow the same loop :meth:`AutoregressiveModel.autoregress`, which turns
the logits into float64 probabilities and lets a ``pick`` function choose the value: inverse-CDF
sampling with uniforms drawn up front (so fast and naive draw the same samples from the same seed),
or the true data (entropy encoding), or the entropy decoder's symbol.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from dgm.core.errors import ConfigError
from dgm.core.model import Model, check_labels
from dgm.core.spec import DataSpec

__all__ = ["AutoregressiveModel", "Decoder", "NaiveDecoder", "SampleOptions", "image_shape"]


@dataclass
class SampleOptions:
    """Options of ``sample(n, **options)`` for the autoregressive image/sequence models.

    Attributes:
        sampler: ``"fast"`` reuses cached activations / keys and values / the recurrent state;
            ``"naive"`` re-runs the whole network once per dimension. Both draw the same samples
            from the same seed.
    """

    sampler: Literal["fast", "naive"] = "fast"

    def __post_init__(self) -> None:
        if self.sampler not in ("fast", "naive"):
            raise ConfigError(f"sampler must be 'fast' or 'naive', not {self.sampler!r}")


class Decoder(Protocol):
    """One dimension at a time: the logits of the next dimension, then its value."""

    def logits(self) -> Tensor:
        """Logits ``(n, L)`` of the next dimension given the values fed so far."""
        ...

    def feed(self, values: Tensor) -> None:
        """Values ``(n,)`` (integers) of the dimension whose logits were just returned."""
        ...


class NaiveDecoder:
    """Re-runs ``model.logits`` on the partially filled input for every dimension."""

    def __init__(self, model: AutoregressiveModel, n: int, y: Tensor | None) -> None:
        self.model, self.y, self.d = model, y, 0
        self.x = torch.zeros(n, model.num_dims, device=model.device, dtype=model.dtype)  # (n, D)

    def logits(self) -> Tensor:
        x = self.x.view(-1, *self.model.event_shape)
        return self.model.logits(x, self.y)[:, self.d]  # (n, L)

    def feed(self, values: Tensor) -> None:
        self.x[:, self.d] = values.to(self.x.dtype)
        self.d += 1


def image_shape(spec: DataSpec, who: str) -> tuple[int, int]:
    """``(H, W)`` of single-channel image data ``(1, H, W)``, else a one-sentence error."""
    if len(spec.event_shape) != 3 or spec.event_shape[0] != 1:
        raise ConfigError(
            f"{who} takes single-channel images of shape (1, H, W), not {spec.event_shape}; "
            "use transformer or rnn for other shapes"
        )
    return spec.event_shape[1], spec.event_shape[2]


class AutoregressiveModel(Model):
    """Base of the models that give every conditional's logits in one pass (module docstring).

    Subclasses define ``logits(x, y) -> (B, D, L)`` and ``fast_decoder(n, y) -> Decoder``; ``y``
    reaches them as ``None`` or long labels ``(n,)`` already checked.
    """

    family = "autoregressive"
    exact_likelihood = True
    data_kinds = frozenset({"discrete"})
    SampleOptions = SampleOptions

    def __init__(self, spec: DataSpec, config: Any | None = None) -> None:
        super().__init__(spec, config)
        self.levels = int(spec.levels)  # type: ignore[arg-type]
        if self.conditional and not spec.num_classes:
            raise ConfigError(
                f"{self.name} with conditional=True needs labelled data (num_classes in the spec)"
            )
        self.num_classes = int(spec.num_classes) if self.conditional else 0

    # ------------------------------------------------------------------ for subclasses
    def logits(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Logits ``(B, D, L)`` of every conditional; row ``d`` depends on ``x_{<d}`` only."""
        raise NotImplementedError

    def fast_decoder(self, n: int, y: Tensor | None) -> Decoder:
        """A decoder that reuses earlier computation (see the module docstring)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers
    def labels(self, y: Tensor | None, n: int) -> Tensor | None:
        """Checked long labels ``(n,)``, or ``None`` for an unconditional model."""
        return check_labels(self, y, n)

    def decoder(self, n: int, y: Tensor | None, sampler: str = "fast") -> Decoder:
        """The fast or naive decoder for ``n`` sequences with checked labels ``y``."""
        SampleOptions(sampler)  # type: ignore[arg-type]  # checks the name
        return self.fast_decoder(n, y) if sampler == "fast" else NaiveDecoder(self, n, y)

    # ------------------------------------------------------------------ the contract
    def log_prob(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Exact ``log p(x | y)`` in nats, ``(B,)``: a sum of categorical log-probabilities."""
        x = self.check_input(x)
        logits = self.logits(x, self.labels(y, x.shape[0]))  # (B, D, L)
        target = x.reshape(x.shape[0], -1).long()  # (B, D)
        logp = -F.cross_entropy(logits.transpose(1, 2), target, reduction="none")  # (B, D)
        return logp.sum(-1)

    def autoregress(
        self,
        n: int,
        pick: Callable[[int, Tensor], Tensor],
        y: Tensor | None = None,
        sampler: str = "fast",
    ) -> Tensor:
        """Run the chain rule one dimension at a time, ``(n, D)`` values.

        For each dimension ``d`` in raster order, ``pick(d, probs)`` gets the float64
        probabilities ``(n, L)`` of its conditional given the values chosen so far and returns
        the values ``(n,)`` to condition on next.
        """
        with self.inference():
            dec = self.decoder(n, self.labels(y, n), sampler)
            out = torch.zeros(n, self.num_dims, dtype=torch.long, device=self.device)  # (n, D)
            for d in range(self.num_dims):
                probs = torch.softmax(dec.logits().to(torch.float64), dim=-1)  # (n, L)
                values = pick(d, probs).long()  # (n,)
                out[:, d] = values
                dec.feed(values)
        return out

    def sample(self, n: int, y: Tensor | None = None, sampler: str = "fast") -> Tensor:
        """Ancestral samples ``(n, *event_shape)`` by inverse-CDF sampling.

        All uniforms ``u (n, D)`` are drawn up front from the torch RNG, and dimension ``d`` takes
        the value ``#{k : F_d(k) < u_d}`` (``F_d`` the conditional CDF): the fast and naive
        samplers, which compute the same conditionals, draw the same samples from the same seed.
        """
        u = torch.rand(n, self.num_dims, dtype=torch.float64, device=self.device)  # (n, D)
        top = self.levels - 1

        def inverse_cdf(d: int, probs: Tensor) -> Tensor:
            cdf = probs.cumsum(-1)  # (n, L)
            return (cdf < u[:, d : d + 1]).sum(-1).clamp(max=top)  # (n,)

        x = self.autoregress(n, inverse_cdf, y, sampler)
        return x.to(self.dtype).view(n, *self.event_shape)
