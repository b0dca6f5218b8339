r"""Activation normalisation with data-dependent initialisation (Kingma & Dhariwal 2018).

Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS 2018,
arXiv:1807.03039, section 3.1. A per-channel affine map

.. math::

    y_{c,h,w} = x_{c,h,w}\, e^{s_c} + b_c, \qquad \log |\det J| = H W \sum_c s_c,

on ``(B, C, H, W)`` images (``H W = 1`` for ``(B, D)`` vectors, one scale per feature). The first
batch it sees in training mode sets ``s`` and ``b`` so that its output has zero mean and unit
variance per channel; afterwards they are ordinary parameters. The ``initialized`` flag is a
buffer, so a saved model is never initialised again when loaded or resumed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dgm.core.transforms import Transform

__all__ = ["ActNorm"]


class ActNorm(Transform):
    """Per-channel (dimension 1) affine normalisation, initialised from the first training batch.

    Args:
        num_features: channels ``C`` of an image or features ``D`` of a vector.
        eps: added to the standard deviation at initialisation.

    Call :meth:`initialize` explicitly, or let the first forward pass in training mode do it
    (the engine runs one in :meth:`~dgm.core.model.Model.on_train_start`).
    """

    initialized: Tensor

    def __init__(self, num_features: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.shift = nn.Parameter(torch.zeros(num_features))
        self.log_scale = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("initialized", torch.tensor(False))
        self.eps = eps

    def _view(self, t: Tensor, x: Tensor) -> Tensor:
        return t.view(1, -1, *([1] * (x.dim() - 2)))  # (1, C, 1, 1) or (1, D)

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set ``s, b`` so that ``forward(x)`` has zero mean and unit variance per channel."""
        flat = x.transpose(0, 1).reshape(x.shape[1], -1)  # (C, B * H * W)
        mean, std = flat.mean(-1), flat.std(-1, unbiased=False)  # (C,)
        self.log_scale.copy_(-torch.log(std + self.eps))
        self.shift.copy_(-mean * self.log_scale.exp())
        self.initialized.fill_(True)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.training and not bool(self.initialized):
            self.initialize(x)
        y = x * self._view(self.log_scale, x).exp() + self._view(self.shift, x)  # (B, C, ...)
        spatial = math.prod(x.shape[2:])
        return y, (spatial * self.log_scale.sum()).expand(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = (y - self._view(self.shift, y)) * self._view(-self.log_scale, y).exp()  # (B, C, ...)
        spatial = math.prod(y.shape[2:])
        return x, (-spatial * self.log_scale.sum()).expand(y.shape[0])
