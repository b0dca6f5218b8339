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

**Temperature and top-k.** ``sample(n, temperature=T, top_k=k)`` draws every dimension from its
conditional reshaped by :func:`tempered`: ``softmax(logits / T)`` restricted to the ``k`` most
probable values (``k = 0``: all). ``T < 1`` sharpens each conditional and ``T -> 0`` (or ``k = 1``)
is greedy decoding, the argmax at every step given the earlier choices. These are samples of a
different distribution than the model's ``p(x)`` (which ``log_prob`` keeps scoring); ``T = 1,
k = 0``, the defaults, sample ``p(x)`` itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from dgm.core.errors import ConfigError, DataError
from dgm.core.model import Model, check_labels
from dgm.core.spec import DataSpec

__all__ = [
    "AutoregressiveModel",
    "Decoder",
    "NaiveDecoder",
    "SampleOptions",
    "image_shape",
    "inverse_cdf",
    "tempered",
]


@dataclass
class SampleOptions:
    """Options of ``sample(n, **options)`` for the autoregressive models.

    Attributes:
        sampler: ``"fast"`` reuses earlier computation (cached activations, keys and values, the
            recurrent state, MADE's first layer); ``"naive"`` re-runs the whole network once per
            dimension. Both draw the same samples from the same seed.
        temperature: ``T`` of every conditional ``softmax(logits / T)``; 1: the model's own
            ``p(x)``; below 1 sharper, 0 the argmax (greedy decoding).
        top_k: sample among the ``k`` most probable values of each conditional only; 0: all.
    """

    sampler: Literal["fast", "naive"] = "fast"
    temperature: float = 1.0
    top_k: int = 0

    def __post_init__(self) -> None:
        if self.sampler not in ("fast", "naive"):
            raise ConfigError(f"sampler must be 'fast' or 'naive', not {self.sampler!r}")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise ConfigError(
                f"temperature must be a finite number >= 0 (1: the model's p(x)), not "
                f"{self.temperature}"
            )
        if isinstance(self.top_k, bool) or self.top_k < 0:
            raise ConfigError(f"top_k must be an integer >= 0 (0: every value), not {self.top_k}")


def tempered(probs: Tensor, temperature: float = 1.0, top_k: int = 0) -> Tensor:
    """Probabilities ``(n, L)`` reshaped for sampling: the ``top_k`` largest kept (0: all), then
    raised to ``1 / temperature`` and renormalised, i.e. ``softmax(logits / T)`` over the kept
    values; ``temperature = 0`` puts all mass on the most probable value (the first on ties).
    """
    if temperature == 1.0 and top_k == 0:
        return probs
    if temperature == 0 or top_k == 1:
        return F.one_hot(probs.argmax(-1), probs.shape[-1]).to(probs.dtype)  # (n, L)
    logp = probs.log()  # (n, L); -inf where a value has no mass
    if top_k and top_k < probs.shape[-1]:
        kth = probs.topk(top_k, dim=-1).values[:, -1:]  # (n, 1)
        logp = logp.masked_fill(probs < kth, -math.inf)
    return torch.softmax(logp / temperature, dim=-1)


def inverse_cdf(probs: Tensor, u: Tensor) -> Tensor:
    """Values ``(n,)`` with ``#{k : F(k) < u}`` for probabilities ``(n, L)`` and uniforms ``(n,)``."""
    cdf = probs.cumsum(-1)  # (n, L)
    return (cdf < u[:, None]).sum(-1).clamp(max=probs.shape[-1] - 1)


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

    def sample(
        self,
        n: int,
        y: Tensor | None = None,
        sampler: str = "fast",
        temperature: float = 1.0,
        top_k: int = 0,
    ) -> Tensor:
        """Ancestral samples ``(n, *event_shape)`` by inverse-CDF sampling.

        All uniforms ``u (n, D)`` are drawn up front from the torch RNG, and dimension ``d`` takes
        the value ``#{k : F_d(k) < u_d}`` (``F_d`` the CDF of the conditional, reshaped by
        :func:`tempered` when ``temperature != 1`` or ``top_k > 0``): the fast and naive
        samplers, which compute the same conditionals, draw the same samples from the same seed.
        """
        SampleOptions(sampler, temperature, top_k)  # type: ignore[arg-type]  # checks them
        u = torch.rand(n, self.num_dims, dtype=torch.float64, device=self.device)  # (n, D)

        def pick(d: int, probs: Tensor) -> Tensor:
            return inverse_cdf(tempered(probs, temperature, top_k), u[:, d])  # (n,)

        x = self.autoregress(n, pick, y, sampler)
        return x.to(self.dtype).view(n, *self.event_shape)

    # ------------------------------------------------------------------ completion
    def complete(
        self,
        x: Tensor,
        mask: Tensor,
        y: Tensor | None = None,
        sampler: str = "fast",
        temperature: float = 1.0,
        top_k: int = 0,
    ) -> Tensor:
        """Complete ``x`` ``(B, *event_shape)`` given an observed *prefix* of the raster order
        (:class:`~dgm.core.protocols.Completer`): in each row ``mask`` is True on the first
        ``m_b`` dimensions (flattened, row by row) and False after them.

        Exact: the chain rule runs as in :meth:`sample`, the observed values fed in place of
        draws, so every missing dimension is drawn from ``p(x_d | x_{<d}, y)`` with all of
        ``x_{<d}`` known or drawn: the result is a draw of ``p(x_missing | x_prefix, y)``.
        ``temperature`` and ``top_k`` reshape the drawn conditionals as in :meth:`sample`. Any
        other mask is a :class:`~dgm.core.errors.DataError`: conditioning on an entry later in
        the order would need the marginal over the entries before it.
        """
        SampleOptions(sampler, temperature, top_k)  # type: ignore[arg-type]  # checks them
        x = self.check_input(x)
        n = x.shape[0]
        flat = x.reshape(n, -1)  # (n, D)
        m = torch.as_tensor(mask, device=flat.device).reshape(n, -1).bool()  # (n, D)
        if m.shape != flat.shape:
            raise DataError(f"mask has {m.shape[1]} entries per row, x has {flat.shape[1]}")
        late = m[:, 1:] & ~m[:, :-1]  # (n, D-1): observed right after a missing entry
        if late.any():
            row = int(late.any(1).nonzero()[0])
            raise DataError(
                f"{self.name} completes an observed prefix of its raster order only (the first "
                f"entries of each row, top rows of an image first); row {row} of the mask "
                "observes an entry after a missing one (made completes any mask)"
            )
        u = torch.rand(n, self.num_dims, dtype=torch.float64, device=self.device)  # (n, D)
        known = flat.long()

        def pick(d: int, probs: Tensor) -> Tensor:
            drawn = inverse_cdf(tempered(probs, temperature, top_k), u[:, d])  # (n,)
            return torch.where(m[:, d], known[:, d], drawn)

        out = self.autoregress(n, pick, y, sampler).to(self.dtype)  # (n, D)
        return torch.where(m, flat.to(self.dtype), out).view(n, *self.event_shape)
