r"""Elementwise maps between bounded and unbounded data: logit and sigmoid.

Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017, section 4.1: image
values in ``[0, 1]`` are moved to the real line before the flow, through

.. math::

    p = \alpha + (1 - 2\alpha)\, x, \qquad y = \operatorname{logit}(p) = \log p - \log(1 - p),

    \log \left|\frac{dy}{dx}\right| = \log(1 - 2\alpha) - \log p - \log(1 - p),

summed over every element. ``alpha > 0`` keeps ``p`` away from 0 and 1, where the logit and its
derivative blow up. The map is a bijection from ``[0, 1]`` onto ``[logit(alpha), logit(1 - alpha)]``
and its log-determinant is part of the flow's density, so likelihoods stay those of ``x``.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

from dgm.core.transforms import Transform

__all__ = ["Logit", "Sigmoid"]


def _sum(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1).sum(-1)  # (B,)


class Logit(Transform):
    """``y = logit(alpha + (1 - 2 alpha) x)`` elementwise, for data in ``[0, 1]`` (any shape).

    The input must lie in ``[0, 1]`` (a model that uses this transform checks its data). The map
    is a bijection of ``(-a, 1 + a)``, ``a = alpha / (1 - 2 alpha)``, onto the real line, so a
    flow's density lives on that slightly larger box and samples may leave ``[0, 1]`` by up to
    ``a``; the mass on ``[0, 1]`` is at most 1, so dequantization bounds stay true bounds.
    """

    def __init__(self, alpha: float = 0.05) -> None:
        super().__init__()
        if not 0 <= alpha < 0.5:
            raise ValueError(f"alpha must lie in [0, 0.5), not {alpha}")
        self.alpha = float(alpha)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        p = self.alpha + (1 - 2 * self.alpha) * x  # (B, ...)
        log_p, log_q = p.log(), (-p).log1p()
        ladj = math.log(1 - 2 * self.alpha) - log_p - log_q  # (B, ...)
        return log_p - log_q, _sum(ladj)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        log_p, log_q = F.logsigmoid(y), F.logsigmoid(-y)  # (B, ...)
        x = (log_p.exp() - self.alpha) / (1 - 2 * self.alpha)
        return x, _sum(log_p + log_q - math.log(1 - 2 * self.alpha))


class Sigmoid(Transform):
    """``y = sigmoid(x)`` elementwise, from the real line onto ``(0, 1)``:
    ``log |dy/dx| = log sigmoid(x) + log sigmoid(-x)``. Used to bound the noise of variational
    dequantization; the inverse is the logit."""

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        log_p, log_q = F.logsigmoid(x), F.logsigmoid(-x)  # (B, ...)
        return log_p.exp(), _sum(log_p + log_q)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        log_p, log_q = y.log(), (-y).log1p()  # (B, ...)
        return log_p - log_q, _sum(-log_p - log_q)
