r"""Dequantization inside the model: uniform and variational (Flow++).

Theis, van den Oord & Bethge, "A note on the evaluation of generative models", ICLR 2016;
Ho, Chen, Srinivas, Duan & Abbeel, "Flow++", ICML 2019, arXiv:1902.00275, section 3.1.

A continuous density ``p`` on ``[0, 1)^D`` defines a discrete model over ``L``-level data ``x``,
the mass of the bin of ``x``: ``P(x) = int p((x + u) / L) L^{-D} du`` over ``u in [0, 1)^D``. For any
noise distribution ``q(u | x)`` on ``[0, 1)^D``, Jensen's inequality gives

.. math::

    \log P(x) \ge \mathbb{E}_{u \sim q(\cdot | x)}
        \big[\log p\big(\tfrac{x + u}{L}\big) - \log q(u \mid x)\big] - D \log L.

Uniform ``q`` (``log q = 0``) is the standard dequantization bound; a learned ``q`` (a conditional
flow of Gaussian noise, squashed into ``(0, 1)`` by a sigmoid) tightens it, and training both
``p`` and ``q`` on the bound keeps it a true bound on the discrete NLL. Moreover
``E_q[exp(log p - log q)] = L^D P(x)`` exactly (importance sampling), which the tests check.

In dgm the engine's :class:`~dgm.data.preprocess.Dequantize` already turns ``x`` into
``v = (x + u_0) / L`` and accounts for ``-D log L``; a model with ``dequantization="variational"``
recovers the bin ``floor(L v) = x``, discards ``u_0`` and draws its own ``u ~ q(. | x)``, so the
figure it reports plus the preprocessor's ``-D log L`` is exactly the bound above.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dgm.core.distributions import StandardNormal
from dgm.core.errors import ConfigError
from dgm.core.transforms import Composite
from dgm.models.flows.affine import ImageCoupling
from dgm.models.flows.elementwise import Sigmoid

__all__ = ["VariationalDequantizer", "dequantize_bins"]


class VariationalDequantizer(nn.Module):
    """``u = sigmoid(T(eps; x))``, ``eps ~ N(0, I)``, with ``T`` a stack of checkerboard affine
    couplings conditioned on the (rescaled) integer image ``x``:

    .. math::

        \\log q(u \\mid x) = \\log \\mathcal{N}(\\epsilon) - \\log |\\det J_T(\\epsilon)|
            - \\textstyle\\sum \\log \\sigma'(T(\\epsilon)).

    Args:
        event_shape: ``(C, H, W)`` of the images.
        levels: ``L``, the number of values a pixel takes.
        num_layers: coupling layers of ``T``.
        hidden_channels: width of their conditioners.
    """

    def __init__(
        self,
        event_shape: tuple[int, ...],
        levels: int,
        num_layers: int = 4,
        hidden_channels: int = 32,
    ) -> None:
        super().__init__()
        if len(event_shape) != 3:
            raise ConfigError(
                f"variational dequantization needs image data (C, H, W), not shape {event_shape}; "
                "use dequantization='uniform'"
            )
        if levels < 2:
            raise ConfigError(f"dequantization levels must be at least 2, not {levels}")
        c = event_shape[0]
        self.levels = int(levels)
        self.base = StandardNormal(event_shape)
        self.transform = Composite(
            ImageCoupling(c, "checkerboard", i, hidden_channels, context_features=c)
            for i in range(num_layers)
        )
        self.squash = Sigmoid()

    def _condition(self, bins: Tensor) -> Tensor:
        return 2 * bins / (self.levels - 1) - 1  # (B, C, H, W) in [-1, 1]

    def forward(self, bins: Tensor) -> tuple[Tensor, Tensor]:
        """``(u (B, C, H, W) in (0, 1), log q(u | bins) (B,))``; ``bins`` holds ``0..L-1``."""
        eps = torch.randn_like(bins)  # (B, C, H, W)
        h, ladj = self.transform(eps, self._condition(bins))
        u, ladj_sig = self.squash(h)
        return u, self.base.log_prob(eps) - ladj - ladj_sig

    def log_prob(self, u: Tensor, bins: Tensor) -> Tensor:
        """``log q(u | bins)`` of given noise ``u (B, C, H, W)`` in ``(0, 1)``, shape ``(B,)``:
        the same density, evaluated through the inverse maps."""
        h, ladj_logit = self.squash.inverse(u)
        eps, ladj = self.transform.inverse(h, self._condition(bins))
        return self.base.log_prob(eps) + ladj + ladj_logit


def dequantize_bins(v: Tensor, levels: int) -> Tensor:
    """The bin ``floor(L v)`` of each value, clamped to ``0..L-1`` (``v = 1`` joins the top bin)."""
    return torch.floor(v * levels).clamp(0, levels - 1)
