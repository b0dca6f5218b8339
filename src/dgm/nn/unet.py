r"""A small U-Net with a time input for images (Ronneberger et al. 2015, as used by Ho et al. 2020).

``UNet(x (B, C, H, W), t (B,)) -> (B, C, H, W)``. The layout follows DDPM's network without its
attention layers (kept out for CPU speed): a 3x3 input convolution, then per resolution level
``blocks`` residual blocks and a stride-2 downsampling convolution, two residual blocks in the
middle, and the mirror image upwards with every feature map of the way down concatenated back in
(the skip connections). A residual block is

.. math::

    h = \mathrm{conv}(\mathrm{silu}(\mathrm{GN}(x))) + W e(t), \qquad
    \mathrm{out} = \mathrm{skip}(x) + \mathrm{conv}(\mathrm{silu}(\mathrm{GN}(h))),

with ``e(t)`` the embedded time (:class:`dgm.nn.embeddings.TimeEmbedding`) and GN group norm.
Upsampling is nearest-neighbour to the size of the matching skip (odd sizes such as 7 work), then
a 3x3 convolution. ``channels=32, mults=(1, 2)`` gives 0.63M parameters (diffusers'
``UNet2DModel`` with the same widths and one layer per block: 0.65M).

With ``num_classes = K > 0`` a class embedding (:class:`dgm.nn.embeddings.LabelEmbedding`, with
a null class ``K``) is added to the time embedding, and ``forward`` takes labels ``y``.

The feature maps are channels-last (``UNet.channels_last``, on by default; not under autocast):
oneDNN's convolutions then reorder no maps. The values are the same either way; the output is
channels-first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgm.nn.embeddings import LabelEmbedding, TimeEmbedding
from dgm.nn.pixel import channels_last

__all__ = ["ResBlock", "UNet"]


def _norm(channels: int) -> nn.GroupNorm:
    groups = 8 if channels % 8 == 0 else 1
    return nn.GroupNorm(groups, channels)


class ResBlock(nn.Module):
    """Residual block with a time embedding added between its two convolutions."""

    def __init__(self, in_ch: int, out_ch: int, time_dim: int) -> None:
        super().__init__()
        self.norm1 = _norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time = nn.Linear(time_dim, out_ch)
        self.norm2 = _norm(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, out, H, W)
        h = h + self.time(temb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class UNet(nn.Module):
    """Small U-Net for diffusion on images (see the module docstring).

    Args:
        in_channels: image channels ``C`` (input and output).
        channels: width of the first level; level ``i`` has ``channels * mults[i]``.
        mults: channel multipliers, one per resolution level (``len(mults) - 1`` downsamplings).
        blocks: residual blocks per level on the way down (one more on the way up).
        time_dim: width of the time embedding.
        num_classes: ``K``; with ``K > 0`` a label embedding joins the time embedding.
        out_channels: channels of the output (default ``in_channels``: a noise prediction of
            the input's shape); a head that maps features to logits asks for more.
    """

    #: lay the feature maps out channels-last (the values are the same; a test compares)
    channels_last: bool = True

    def __init__(
        self,
        in_channels: int = 1,
        channels: int = 32,
        mults: tuple[int, ...] = (1, 2),
        blocks: int = 1,
        time_dim: int = 128,
        num_classes: int = 0,
        out_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.embed = TimeEmbedding(channels, time_dim)
        self.label = LabelEmbedding(num_classes, time_dim) if num_classes > 0 else None
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.down = nn.ModuleList()
        skips = [channels]
        ch = channels
        for i, m in enumerate(mults):
            for _ in range(blocks):
                self.down.append(ResBlock(ch, channels * m, time_dim))
                ch = channels * m
                skips.append(ch)
            if i < len(mults) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid = nn.ModuleList([ResBlock(ch, ch, time_dim), ResBlock(ch, ch, time_dim)])
        self.up = nn.ModuleList()
        for i, m in reversed(list(enumerate(mults))):
            for _ in range(blocks + 1):
                self.up.append(ResBlock(ch + skips.pop(), channels * m, time_dim))
                ch = channels * m
            if i > 0:
                self.up.append(nn.Conv2d(ch, ch, 3, padding=1))  # after nearest upsampling
        self.norm_out = _norm(ch)
        self.conv_out = nn.Conv2d(ch, out_channels or in_channels, 3, padding=1)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        temb = self.embed(t.expand(x.shape[0]) if t.dim() == 0 else t)  # (B, time_dim)
        if self.label is not None:
            temb = temb + self.label(y, x.shape[0])  # y None: the null class
        # channels-last, except under autocast (on any device; measured on CPU only): torch's
        # CPU group norm of bfloat16 maps laid out channels-last is 17x slower (5.2 against
        # 0.3 ms at 64x32x28x28), more than the layout gains
        cl = self.channels_last and not torch.is_autocast_enabled(x.device.type)
        h = self.conv_in(channels_last(x) if cl else x)  # (B, c, H, W)
        hs = [h]
        for layer in self.down:
            h = layer(h, temb) if isinstance(layer, ResBlock) else layer(h)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, temb)
        for layer in self.up:
            if isinstance(layer, ResBlock):
                h = layer(torch.cat([h, hs.pop()], dim=1), temb)  # (B, ch, h, w)
            else:
                h = layer(F.interpolate(h, size=hs[-1].shape[-2:], mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h))).contiguous()  # (B, C, H, W)
