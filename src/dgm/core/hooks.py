"""Optional abilities the training engine looks for, as ``typing.Protocol``s.

Generic code checks them with ``isinstance``; a model gains one by defining the method.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

__all__ = ["HasValidationMetrics"]


@runtime_checkable
class HasValidationMetrics(Protocol):
    """A model with held-out statistics of its own (a GAN's discriminator used as a two-sample
    test), logged by the engine as ``val_<key>`` every ``eval_every`` steps on at most
    ``eval_size`` validation examples in model space ``x`` (labels ``y`` for a conditional model),
    with the evaluation weights. They do not drive early stopping, which uses the validation NLL
    of models with a likelihood."""

    def validation_metrics(self, x: Tensor, y: Tensor | None = None) -> dict[str, float]: ...
