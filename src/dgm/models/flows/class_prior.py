r"""A learned class-conditional prior as the last step of a flow (Kingma & Dhariwal 2018, Glow,
section 5 and its code's ``ycond``: the top prior's mean and log-scale are linear in the one-hot
label).

The flow maps ``x`` to ``u``; the prior on ``u`` given the class ``y`` is
``N(m_y, diag(exp(2 s_y)))``. Written as one more invertible map, ``z = (u - m_y) exp(-s_y)``
with ``log |det dz/du| = -sum_i s_{y,i}``, the base stays ``N(0, I)`` and the model's density is
unchanged in form:

.. math::

    \log p(x \mid y) = \log \mathcal{N}(z; 0, I) - \sum_i s_{y,i} + \log |\det J_f(x; y)|.

``m`` and ``s`` start at zero (the standard normal prior of an unconditional flow), so the flow's
other layers meet the same initial data; training moves each class's mass to its own region of
``u``. Without a label (``context`` ``None``) the map is the identity.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dgm.core.transforms import Transform

__all__ = ["ClassPrior"]


class ClassPrior(Transform):
    """``z = (u - m_y) exp(-s_y)`` on flat ``(B, D)`` data; ``m, s (K, D)`` learned per class.

    Args:
        features: ``D``.
        num_classes: ``K``; the context is the one-hot label ``(B, K)``.
    """

    def __init__(self, features: int, num_classes: int) -> None:
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(num_classes, features))
        self.log_scale = nn.Parameter(torch.zeros(num_classes, features))

    def _params(self, context: Tensor | None, like: Tensor) -> tuple[Tensor, Tensor]:
        if context is None:
            zero = like.new_zeros(like.shape[0], like.shape[1])
            return zero, zero
        onehot = context.to(like.dtype)  # (B, K)
        return onehot @ self.mean, onehot @ self.log_scale  # (B, D), (B, D)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        m, s = self._params(context, x)
        return (x - m) * torch.exp(-s), -s.sum(-1)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        m, s = self._params(context, y)
        return y * torch.exp(s) + m, s.sum(-1)
