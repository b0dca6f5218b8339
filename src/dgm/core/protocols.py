"""Optional abilities of a model, beyond the core contract of :class:`dgm.core.model.Model`.

Each ability is a :class:`typing.Protocol` marked ``@runtime_checkable``: a model has it when it
defines the members below, with no registration and no flag. Generic code (plots, ``dgm eval``,
the entropy coder) asks ``isinstance(model, LatentVariableModel)``, never
``getattr(model, "latent_map", None)``, so the names an ability needs are written down once, here.

``isinstance`` checks that the members exist, not their signatures; the docstrings below are the
contract for those.

>>> import dgm.models
>>> from dgm.core.protocols import FastAutoregressive, LatentVariableModel
>>> isinstance(dgm.models.build("vae"), LatentVariableModel)
True
>>> isinstance(dgm.models.build("nsf"), LatentVariableModel)
False
>>> isinstance(dgm.models.build("pixelcnn"), FastAutoregressive)
True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

__all__ = [
    "Completer",
    "HasValidationMetrics",
    "ConditionalModel",
    "FastAutoregressive",
    "LatentVariableModel",
    "LikelihoodEstimator",
]


@runtime_checkable
class LatentVariableModel(Protocol):
    """A model with an encoder into a latent space (the VAE): the figures of reconstructions and
    of the latent space use these."""

    def encode(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Mean and log standard deviation ``(B, L)`` each of the posterior ``q(z | x)``."""
        ...

    def reconstructions(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Inputs above their reconstructions, ``(2, B, *event_shape)``."""
        ...

    def latent_map(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """``codes (B, 2)``, ``directions (L, 2)``, ``grid_values (G, 2)`` and decoded
        ``grid (G, G, *event_shape)``: a 2-D picture of the latent space."""
        ...


@runtime_checkable
class FastAutoregressive(Protocol):
    """A model of discrete data that factorises by the chain rule in raster order and offers the
    one-dimension-at-a-time loop that sampling and the entropy coder
    (:mod:`dgm.models.autoregressive.coding`) drive."""

    def autoregress(
        self,
        n: int,
        pick: Callable[[int, Tensor], Tensor],
        y: Tensor | None = None,
        sampler: str = "fast",
    ) -> Tensor:
        """For each dimension ``d``, ``pick(d, probs)`` gets the float64 probabilities ``(n, L)``
        of its conditional given the values chosen so far and returns the values ``(n,)`` to
        condition on next; returns all chosen values ``(n, D)``. ``sampler="fast"`` reuses
        earlier computation (caches, recurrent state), ``"naive"`` reruns the network."""
        ...


@runtime_checkable
class ConditionalModel(Protocol):
    """A model that can be conditioned on class labels: ``log_prob(x, y)``, ``sample(n, y)``.

    ``conditional`` says whether this instance was built with labels (``conditional=True`` in its
    config); ``num_classes`` is then the number of classes of the data spec (0 otherwise)."""

    num_classes: int

    @property
    def conditional(self) -> bool: ...


@runtime_checkable
class Completer(Protocol):
    """A model that completes partly observed data (inpainting): it samples the unobserved
    entries given the observed ones.

    ``complete(x, mask, y=None, **options)`` takes ``x`` in model space, shape
    ``(B, *event_shape)``, and a boolean ``mask`` of the same shape (True: observed); it returns a
    tensor of ``x``'s shape whose observed entries equal ``x``'s exactly and whose others are drawn
    from the model's conditional (exactly where the model can, e.g. an autoregressive model given
    a prefix of its ordering; a documented approximation otherwise, e.g. RePaint's replacement
    for diffusion). ``options`` are sampling options, as for ``sample``. A model that can only
    complete some masks (a prefix) raises a :class:`~dgm.core.errors.DataError` naming what it
    can complete."""

    def complete(
        self, x: Tensor, mask: Tensor, y: Tensor | None = None, **options: Any
    ) -> Tensor: ...


@runtime_checkable
class LikelihoodEstimator(Protocol):
    """A model whose normalising constant is intractable but can be estimated by annealed
    importance sampling (an energy-based model on images): ``dgm eval`` then reports an estimate
    of the NLL, not a bound (:func:`dgm.eval.ais.ebm_log_likelihood`)."""

    config: Any
    noise: Any  # a normalised start distribution with ``sample(n)`` and ``log_prob(x)``

    def unnormalized_log_prob(self, x: Tensor) -> Tensor:
        """``log p(x) + log Z``, shape ``(B,)``."""
        ...


@runtime_checkable
class HasValidationMetrics(Protocol):
    """A model with held-out statistics of its own (a GAN's discriminator used as a two-sample
    test), logged by the engine as ``val_<key>`` every ``eval_every`` steps on at most
    ``eval_size`` validation examples in model space ``x`` (labels ``y`` for a conditional model),
    with the evaluation weights. They do not drive early stopping, which uses the validation NLL
    of models with a likelihood."""

    def validation_metrics(self, x: Tensor, y: Tensor | None = None) -> dict[str, float]: ...
