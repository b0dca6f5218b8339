r"""Pixel-by-pixel evaluation of masked convolutions: the caches behind fast PixelCNN sampling.

A masked convolution (:class:`dgm.nn.masked.MaskedConv2d`, :class:`StackConv2d`) with "same" padding
computes its output at pixel ``(i, j)`` from the ``k x k`` window of its input centred there.
When an autoregressive network samples pixel after pixel in raster order, the activations of
every layer at pixels already visited no longer change (they depend on earlier pixels only), so
the network needs to compute each layer **only at the new pixel** (or, for the vertical stack of
a Gated PixelCNN, only on the row just completed). This is the idea of Fast PixelCNN++
(Ramachandran, Le Paine, Khorrami, Babaeizadeh, Chang, Zhang, Hasegawa-Johnson, Campbell & Huang,
"Fast Generation for Convolutional Autoregressive Models", ICLR 2017 workshop, arXiv:1704.06001),
here without dilations, so a full cache of each layer's input replaces their queues:

* :class:`PixelCache` holds one layer's input ``(n, C, H + 2c, W + 2c)`` zero-padded by ``c``;
  the network writes each value once, when it is computed;
* :func:`conv_at` evaluates a masked convolution at one pixel from the cached window,
* :func:`conv_row` evaluates it along a whole row.

The masks keep unwritten (future) cache entries out of every sum, so the result equals the full
convolution at that pixel up to floating-point summation order.

:class:`StackConv2d` is a convolution with the vertical or horizontal mask of the Gated PixelCNN
(van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves & Kavukcuoglu, "Conditional Image
Generation with PixelCNN Decoders", NeurIPS 2016, arXiv:1606.05328): the vertical stack sees the
rows above and the current row (and is shifted down one row before the horizontal stack reads
it), the horizontal stack sees the pixels to the left on the current row (type ``"A"`` without
the centre, type ``"B"`` with it). Together they have no blind spot.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgm.core.errors import ConfigError

__all__ = [
    "PixelCache",
    "StackConv2d",
    "channels_last",
    "conv_at",
    "conv_row",
    "pointwise",
    "stack_mask",
]


def stack_mask(kernel_size: int, kind: Literal["vertical", "horizontal"], centre: bool) -> Tensor:
    """Spatial mask ``(k, k)`` of a Gated PixelCNN stack.

    ``"vertical"``: every row above the centre and the centre row itself (all columns).
    ``"horizontal"``: the centre row, columns left of the centre, and the centre when ``centre``.
    """
    k, c = kernel_size, kernel_size // 2
    mask = torch.zeros(k, k)
    if kind == "vertical":
        mask[: c + 1, :] = 1
    elif kind == "horizontal":
        mask[c, : c + (1 if centre else 0)] = 1
    else:
        raise ConfigError(f"stack kind must be 'vertical' or 'horizontal', not {kind!r}")
    return mask


class StackConv2d(nn.Conv2d):
    """A "same"-padded convolution with a fixed spatial mask from :func:`stack_mask`.

    The mask (``(C_out, C_in, k, k)``, a buffer) multiplies the weight in ``forward``, so masked
    weights stay exactly zero in the function whatever the optimizer does to them.
    """

    mask: Tensor

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        kind: Literal["vertical", "horizontal"],
        *,
        centre: bool = True,
    ) -> None:
        if kernel_size % 2 != 1:
            raise ConfigError(f"StackConv2d needs an odd kernel_size, not {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        m = stack_mask(kernel_size, kind, centre)  # (k, k)
        self.kind, self.centre = kind, centre
        self.register_buffer("mask", m.expand(out_channels, in_channels, -1, -1).clone())

    def forward(self, x: Tensor) -> Tensor:
        # Only the rectangle the mask keeps is convolved: the same function and gradients as the
        # masked k x k kernel, at 1/k (horizontal) or about 1/2 (vertical) of its cost.
        c = self.kernel_size[0] // 2
        if self.kind == "vertical":
            weight = self.weight[:, :, : c + 1, :]  # rows above and the centre row
            pad = (c, c, c, 0)
        else:
            cols = c + (1 if self.centre else 0)  # columns left of the centre (and the centre)
            if cols == 0:  # a 1 x 1 type-A kernel sees nothing
                return self._conv_forward(x, self.weight * self.mask, self.bias)
            weight = self.weight[:, :, c : c + 1, :cols]
            pad = (c, cols - 1 - c, 0, 0)  # a negative pad crops the last column
        return F.conv2d(F.pad(x, pad), weight, self.bias)  # (B, C_out, H, W)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, kind={self.kind!r}, centre={self.centre}"


def _masked_weight(conv: nn.Conv2d) -> Tensor:
    mask = getattr(conv, "mask", None)
    return conv.weight if mask is None else conv.weight * mask  # (C_out, C_in, k, k)


class PixelCache:
    """The input of one masked convolution, zero-padded by ``pad`` on every side.

    ``data`` has shape ``(n, C, H + 2 pad, W + 2 pad)``; pixel ``(i, j)`` lives at
    ``(i + pad, j + pad)``. Unwritten entries stay zero.
    """

    def __init__(
        self, n: int, channels: int, height: int, width: int, pad: int, like: Tensor
    ) -> None:
        self.pad = pad
        self.data = like.new_zeros(n, channels, height + 2 * pad, width + 2 * pad)

    def write(self, i: int, j: int, value: Tensor) -> None:
        """Store ``value (n, C)`` at pixel ``(i, j)``."""
        self.data[:, :, i + self.pad, j + self.pad] = value

    def write_row(self, i: int, value: Tensor) -> None:
        """Store ``value (n, C, W)`` on row ``i``."""
        p = self.pad
        self.data[:, :, i + p, p : self.data.shape[-1] - p] = value


def conv_at(conv: nn.Conv2d, cache: PixelCache, i: int, j: int) -> Tensor:
    """Output ``(n, C_out)`` of a "same"-padded (masked) convolution at pixel ``(i, j)``."""
    k = conv.kernel_size[0]
    if 2 * cache.pad != k - 1:
        raise ValueError(f"cache padding {cache.pad} does not fit kernel size {k}")
    window = cache.data[:, :, i : i + k, j : j + k].reshape(
        cache.data.shape[0], -1
    )  # (n, C_in k k)
    weight = _masked_weight(conv).flatten(1)  # (C_out, C_in k k)
    # a matrix product: F.conv2d on a strided window view is two orders of magnitude slower
    if conv.bias is None:
        return window @ weight.T  # (n, C_out)
    return torch.addmm(conv.bias, window, weight.T)  # (n, C_out)


def conv_row(conv: nn.Conv2d, cache: PixelCache, i: int) -> Tensor:
    """Output ``(n, C_out, W)`` of a "same"-padded (masked) convolution along row ``i``."""
    k = conv.kernel_size[0]
    if 2 * cache.pad != k - 1:
        raise ValueError(f"cache padding {cache.pad} does not fit kernel size {k}")
    band = cache.data[:, :, i : i + k, :].contiguous()  # (n, C_in, k, W + 2 pad)
    return F.conv2d(band, _masked_weight(conv), conv.bias)[:, :, 0, :]  # (n, C_out, W)


def channels_last(x: Tensor) -> Tensor:
    """A copy of the maps ``x (B, C, H, W)`` laid out channels-last, even with one channel.

    ``x.contiguous(memory_format=torch.channels_last)`` returns a one-channel map as it is (it
    counts as both layouts), so oneDNN would keep the whole network channels-first; a copy
    strided as channels-last makes every convolution after it channels-last.
    """
    return torch.empty_like(x, memory_format=torch.channels_last).copy_(x)


def pointwise(conv: nn.Conv2d, h: Tensor) -> Tensor:
    """A 1x1 convolution applied to per-pixel features ``(n, C_in, ...)`` with channels second."""
    if h.dim() == 4:  # a 1x1 convolution on whole maps: mkldnn, contiguous output
        return F.conv2d(h, conv.weight, conv.bias)  # (n, C_out, H, W)
    weight = conv.weight.flatten(1)  # (C_out, C_in)
    out = torch.einsum("oc,nc...->no...", weight, h)  # (n, C_out, ...)
    if conv.bias is not None:
        out = out + conv.bias.view(-1, *([1] * (h.dim() - 2)))
    return out
