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

**Label dropout and guidance** (conditional models with ``label_dropout = p > 0``): training
replaces each label by a *null* class ``K`` with probability ``p`` (its own embedding row, or
start token; MADE's all-zero one-hot), so the same network gives ``log p(x | y)`` and an
unconditional ``log p(x)``: ``log_prob(x)`` and ``sample(n)`` without labels use the null class.
``sample(n, y, guidance=w)`` draws every dimension from the mixed logits

.. math::

    \ell = \ell_\varnothing + (1 + w)(\ell_y - \ell_\varnothing),

classifier-free guidance on logits (Ho & Salimans 2022, arXiv:2207.12598, applied per
conditional; both chains fed the same values): ``w = 0`` is exactly the conditional sampler,
``w = -1`` exactly the unconditional one. A guided sampler draws from no distribution the model
scores: there is no likelihood of guided samples.
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
from dgm.core.model import Batch, Model, check_labels, completion_mask, unpack
from dgm.core.spec import DataSpec

__all__ = [
    "AutoregressiveModel",
    "check_guided",
    "check_label_dropout",
    "drop_labels",
    "guided_logits",
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
        guidance: classifier-free guidance weight ``w`` on the logits (conditional models
            trained with ``label_dropout``): ``l_null + (1 + w)(l_y - l_null)``; 0: the
            conditional sampler, -1: the unconditional one. Guided samples have no likelihood.
    """

    sampler: Literal["fast", "naive"] = "fast"
    temperature: float = 1.0
    top_k: int = 0
    guidance: float = 0.0

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
        if isinstance(self.guidance, bool) or not (
            math.isfinite(self.guidance) and self.guidance >= -1
        ):
            raise ConfigError(
                f"guidance must be a finite number >= -1 (0: the conditional sampler, -1: the "
                f"unconditional one), not {self.guidance!r}"
            )


def check_label_dropout(model: Model, p: float) -> float:
    """``p`` if it is a probability in ``[0, 1)``, else a one-sentence ConfigError."""
    if not 0 <= p < 1:
        raise ConfigError(f"label_dropout of {model.name!r} must lie in [0, 1), not {p}")
    return float(p)


def drop_labels(y: Tensor, p: float, null: int) -> Tensor:
    """Labels ``y (n,)`` with each replaced by the ``null`` class with probability ``p``."""
    if p <= 0:
        return y
    drop = torch.rand(y.shape[0], device=y.device) < p
    return torch.where(drop, torch.full_like(y, null), y)


def guided_logits(cond: Tensor, uncond: Tensor, guidance: float) -> Tensor:
    """Classifier-free guidance on logits: ``uncond + (1 + w)(cond - uncond)``."""
    return uncond + (1 + guidance) * (cond - uncond)


def check_guided(model: Model, y: Tensor | None, n: int, guidance: float) -> None:
    """Guidance ``w != 0`` needs a conditional model with a null class and labels ``y``."""
    if guidance == 0:
        return
    if not model.conditional:
        raise ConfigError(
            f"guidance needs a conditional model; {model.name!r} was built without conditional=True"
        )
    if not model.config.label_dropout:
        raise ConfigError(
            f"guidance needs an unconditional branch, but {model.name!r} was trained with "
            "label_dropout=0"
        )
    if y is None:
        raise DataError(f"guidance needs class labels y of shape ({n},)")


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
        self.label_dropout = check_label_dropout(self, self.config.label_dropout)
        #: rows of the class embedding: the classes, and the null class with label dropout
        self.label_rows = self.num_classes + int(self.conditional and self.label_dropout > 0)

    # ------------------------------------------------------------------ for subclasses
    def logits(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Logits ``(B, D, L)`` of every conditional; row ``d`` depends on ``x_{<d}`` only."""
        raise NotImplementedError

    def fast_decoder(self, n: int, y: Tensor | None) -> Decoder:
        """A decoder that reuses earlier computation (see the module docstring)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers
    def labels(self, y: Tensor | None, n: int) -> Tensor | None:
        """Checked long labels ``(n,)``, or ``None`` for an unconditional model; for a
        conditional model with label dropout called without labels, the null class ``K``."""
        if self.conditional and y is None and self.label_dropout > 0:
            return torch.full((n,), self.num_classes, dtype=torch.long, device=self.device)
        return check_labels(self, y, n)

    def decoder(self, n: int, y: Tensor | None, sampler: str = "fast") -> Decoder:
        """The fast or naive decoder for ``n`` sequences with checked labels ``y``."""
        SampleOptions(sampler)  # type: ignore[arg-type]  # checks the name
        return self.fast_decoder(n, y) if sampler == "fast" else NaiveDecoder(self, n, y)

    # ------------------------------------------------------------------ the contract
    def log_prob(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Exact ``log p(x | y)`` in nats, ``(B,)``: a sum of categorical log-probabilities."""
        x = self.check_input(x)
        return self._chain_log_prob(x, self.labels(y, x.shape[0]))

    def _chain_log_prob(self, x: Tensor, labels: Tensor | None) -> Tensor:
        logits = self.logits(x, labels)  # (B, D, L)
        target = x.reshape(x.shape[0], -1).long()  # (B, D)
        logp = -F.cross_entropy(logits.transpose(1, 2), target, reduction="none")  # (B, D)
        return logp.sum(-1)

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        """Mean NLL; for a conditional model in training, of labels dropped to the null class
        with probability ``label_dropout``."""
        x, y = unpack(batch)
        x = self.check_input(x)
        labels = check_labels(self, y, x.shape[0]) if self.conditional else None
        if labels is not None and self.training:
            labels = drop_labels(labels, self.label_dropout, self.num_classes)
        nll = -self._chain_log_prob(x, labels)
        return {"loss": nll.mean(), "nll": nll.mean().detach()}

    def autoregress(
        self,
        n: int,
        pick: Callable[[int, Tensor], Tensor],
        y: Tensor | None = None,
        sampler: str = "fast",
        guidance: float = 0.0,
    ) -> Tensor:
        """Run the chain rule one dimension at a time, ``(n, D)`` values.

        For each dimension ``d`` in raster order, ``pick(d, probs)`` gets the float64
        probabilities ``(n, L)`` of its conditional given the values chosen so far and returns
        the values ``(n,)`` to condition on next. With ``guidance = w != 0`` the probabilities
        are those of the guided logits (module docstring).
        """
        check_guided(self, y, n, guidance)
        with self.inference():
            dec = self.decoder(n, self.labels(y, n), sampler)
            null = None
            if guidance != 0:  # the unconditional branch, fed the same values
                null = self.decoder(n, self.labels(None, n), sampler)
            out = torch.zeros(n, self.num_dims, dtype=torch.long, device=self.device)  # (n, D)
            for d in range(self.num_dims):
                logits = dec.logits().to(torch.float64)  # (n, L)
                if null is not None:
                    logits = guided_logits(logits, null.logits().to(torch.float64), guidance)
                probs = torch.softmax(logits, dim=-1)  # (n, L)
                values = pick(d, probs).long()  # (n,)
                out[:, d] = values
                dec.feed(values)
                if null is not None:
                    null.feed(values)
        return out

    def sample(
        self,
        n: int,
        y: Tensor | None = None,
        sampler: str = "fast",
        temperature: float = 1.0,
        top_k: int = 0,
        guidance: float = 0.0,
    ) -> Tensor:
        """Ancestral samples ``(n, *event_shape)`` by inverse-CDF sampling (with ``guidance``:
        of the guided logits, see the module docstring).

        All uniforms ``u (n, D)`` are drawn up front from the torch RNG, and dimension ``d`` takes
        the value ``#{k : F_d(k) < u_d}`` (``F_d`` the CDF of the conditional, reshaped by
        :func:`tempered` when ``temperature != 1`` or ``top_k > 0``): the fast and naive
        samplers, which compute the same conditionals, draw the same samples from the same seed.
        """
        SampleOptions(sampler, temperature, top_k, guidance)  # type: ignore[arg-type]  # checks
        u = torch.rand(n, self.num_dims, dtype=torch.float64, device=self.device)  # (n, D)

        def pick(d: int, probs: Tensor) -> Tensor:
            return inverse_cdf(tempered(probs, temperature, top_k), u[:, d])  # (n,)

        x = self.autoregress(n, pick, y, sampler, guidance)
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
        m = completion_mask(self, x, mask)  # (n, D)
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
