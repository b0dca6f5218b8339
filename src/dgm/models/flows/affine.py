r"""Affine coupling for images: checkerboard and channel masks with a convolutional conditioner.

Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017, arXiv:1605.08803,
section 3.4 (masked convolutions); Kingma & Dhariwal, "Glow", NeurIPS 2018 (the ``3x3 -> 1x1 ->
3x3`` conditioner with a zero-initialised last layer).

A binary mask ``m`` over ``(C, H, W)`` picks the passed-through elements ``A``:

.. math::

    y = m \odot x + (1 - m) \odot g\big(x;\ \theta(m \odot x, c)\big), \qquad
    \log |\det J| = \textstyle\sum_{i \notin A} \log g'(x_i;\ \theta_i),

* ``"checkerboard"``: ``m_{c,h,w} = [(h + w) \bmod 2 = p]`` for every channel; the conditioner
  sees the masked image and the mask itself (convolutions are translation-equivariant, so
  without the mask they could not tell the two colours apart);
* ``"channel"``: ``A`` is one half of the channels, which alone feed the conditioner.

``g`` is any :class:`~dgm.core.transforms.Univariate` (affine with a bounded log-scale by
default). Vector coupling (any mask over ``D`` features) lives in :mod:`.coupling`.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from dgm.core.errors import ConfigError
from dgm.core.transforms import MonotonicAffine, Transform, Univariate
from dgm.nn.mlp import activation as make_activation

__all__ = ["ConvNet", "ImageCoupling", "checkerboard_mask"]


def checkerboard_mask(
    height: int, width: int, parity: int, *, device: torch.device | None = None
) -> Tensor:
    """Boolean ``(1, 1, H, W)``: True (passed through) where ``(h + w) % 2 == parity % 2``."""
    h = torch.arange(height, device=device)[:, None]
    w = torch.arange(width, device=device)[None, :]
    return ((h + w) % 2 == parity % 2)[None, None]  # (1, 1, H, W)


class ConvNet(nn.Sequential):
    """``conv 3x3 -> act -> conv 1x1 -> act -> conv 3x3`` (same padding), last layer zero."""

    def __init__(
        self, in_channels: int, out_channels: int, hidden: int, activation: str = "relu"
    ) -> None:
        last = nn.Conv2d(hidden, out_channels, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        super().__init__(
            nn.Conv2d(in_channels, hidden, 3, padding=1),
            make_activation(activation),
            nn.Conv2d(hidden, hidden, 1),
            make_activation(activation),
            last,
        )


def _context_map(context: Tensor, h: int, w: int) -> Tensor:
    if context.dim() == 2:  # (B, K) vector context, e.g. a one-hot label: broadcast over pixels
        return context[:, :, None, None].expand(-1, -1, h, w)  # (B, K, H, W)
    return context  # (B, K, H, W) image context


class ImageCoupling(Transform):
    """Coupling layer on ``(B, C, H, W)`` with a checkerboard or channel mask.

    Args:
        num_channels: ``C``.
        mask: ``"checkerboard"`` or ``"channel"``.
        parity: which colour / half passes through (0 or 1); alternate it between layers.
            For ``"channel"``, parity 0 passes the first ``C // 2`` channels, parity 1 the rest.
        hidden_channels: width of the conditioner.
        context_features: ``K`` channels of an optional context, ``(B, K)`` (broadcast over the
            pixels) or ``(B, K, H, W)``.
        univariate: the elementwise map (default: affine, log-scale bounded by 3).
    """

    idx_a: Tensor
    idx_b: Tensor

    def __init__(
        self,
        num_channels: int,
        mask: Literal["checkerboard", "channel"] = "checkerboard",
        parity: int = 0,
        hidden_channels: int = 64,
        *,
        context_features: int = 0,
        univariate: Univariate | None = None,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.univariate = univariate if univariate is not None else MonotonicAffine(3.0)
        self.mask_kind, self.parity = mask, int(parity) % 2
        self.context_features = int(context_features)
        c, p = int(num_channels), self.univariate.num_params
        if mask == "checkerboard":
            a, b = torch.arange(c), torch.arange(c)
            net_in, net_out = c + 1, c * p
        elif mask == "channel":
            if c < 2:
                raise ConfigError(f"a channel mask needs at least 2 channels, not {c}")
            half = torch.arange(c) < c // 2
            first = half if self.parity == 0 else ~half
            a, b = torch.nonzero(first).flatten(), torch.nonzero(~first).flatten()
            net_in, net_out = len(a), len(b) * p
        else:
            raise ConfigError(f"mask must be 'checkerboard' or 'channel', not {mask!r}")
        self.register_buffer("idx_a", a)
        self.register_buffer("idx_b", b)
        self.net = ConvNet(net_in + self.context_features, net_out, hidden_channels, activation)

    def _params(self, h: Tensor, context: Tensor | None, nb: int) -> Tensor:
        if (context is None) != (self.context_features == 0):
            raise ValueError(
                "pass a context exactly when the layer was built with context_features"
            )
        b, _, hh, ww = h.shape
        if context is not None:
            h = torch.cat([h, _context_map(context, hh, ww).to(h.dtype)], dim=1)
        out = self.net(h)  # (B, nb * P, H, W)
        p = self.univariate.num_params
        return out.view(b, nb, p, hh, ww).permute(0, 1, 3, 4, 2)  # (B, nb, H, W, P)

    def _couple(self, x: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        b, c, h, w = x.shape
        if self.mask_kind == "checkerboard":
            m = checkerboard_mask(h, w, self.parity, device=x.device)  # (1, 1, H, W)
            mf = m.to(x.dtype)
            net_in = torch.cat([x * mf, mf.expand(b, 1, h, w)], dim=1)  # (B, C + 1, H, W)
            y, ladj = self.univariate(x, self._params(net_in, context, c), inverse=inverse)
            y = torch.where(m, x, y)  # (B, C, H, W)
            return y, (ladj * (1 - mf)).flatten(1).sum(-1)
        x_a, x_b = x[:, self.idx_a], x[:, self.idx_b]  # (B, |A|, H, W), (B, |B|, H, W)
        params = self._params(x_a, context, len(self.idx_b))
        y_b, ladj = self.univariate(x_b, params, inverse=inverse)  # (B, |B|, H, W)
        return x.index_copy(1, self.idx_b, y_b), ladj.flatten(1).sum(-1)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(x, context, inverse=False)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(y, context, inverse=True)
