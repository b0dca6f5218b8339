r"""Networks of masked diffusion: a partly masked image in, a categorical per pixel out.

Every network maps ``z`` (B, D) of long tokens in ``0..L`` (``L`` is the mask token), the time
``t`` (B,) and optional class labels ``y`` (B,) to logits ``(B, D, L)`` over the ``L`` levels of
every pixel. Nothing is causal: each pixel's prediction sees the whole visible image, which is
what lets the model complete any subset of pixels and unmask many pixels per pass.

* :class:`ResNetDenoiser`: a full-resolution stack of the residual blocks of
  :class:`dgm.nn.unet.ResBlock` (3x3 convolutions, group norm), for small images such as 8x8
  digits, where downsampling loses too much;
* :class:`UNetDenoiser`: :class:`dgm.nn.unet.UNet` with a one-hot input and a 1x1 output head,
  for 28x28 images;
* :class:`TransformerDenoiser`: a small bidirectional transformer (pre-norm encoder, learned
  position embeddings) over the ``D`` pixels of any event shape.

``t`` enters through a sinusoidal embedding (:class:`dgm.nn.embeddings.TimeEmbedding`) when
``time_input`` is on; MD4 (Shi et al. 2024, section 3) notes the number of masked pixels already
tells the network about ``t``, so it may be off, and a learned constant vector takes its place.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgm.nn.embeddings import TimeEmbedding
from dgm.nn.unet import ResBlock, UNet

__all__ = ["ResNetDenoiser", "TransformerDenoiser", "UNetDenoiser"]


class _Conditioning(nn.Module):
    """A vector per example from ``t`` (or a learned constant) plus a class embedding."""

    def __init__(self, dim: int, time_input: bool, num_classes: int) -> None:
        super().__init__()
        self.time = TimeEmbedding(max(16, dim // 2), dim) if time_input else None
        self.const = None if time_input else nn.Parameter(torch.zeros(dim))
        self.label = nn.Embedding(num_classes, dim) if num_classes else None

    def forward(self, t: Tensor, y: Tensor | None) -> Tensor:
        if self.time is not None:
            c = self.time(1000.0 * t)  # (B, dim); the sinusoids are tuned for t in 0..1000
        else:
            c = self.const.expand(t.shape[0], -1)  # (B, dim)
        if self.label is not None and y is not None:
            c = c + self.label(y)
        return c


def _onehot_image(z: Tensor, shape: tuple[int, int, int], levels: int) -> Tensor:
    """Tokens (B, D) as one-hot channels (B, C * (L + 1), H, W)."""
    C, H, W = shape
    oh = F.one_hot(z.view(-1, C, H, W), levels + 1)  # (B, C, H, W, L+1)
    return oh.permute(0, 1, 4, 2, 3).reshape(-1, C * (levels + 1), H, W)


def _image_logits(out: Tensor, shape: tuple[int, int, int], levels: int) -> Tensor:
    """Output channels (B, C * L, H, W) as logits (B, D, L) in the raster order of the tokens."""
    C, H, W = shape
    out = out.view(-1, C, levels, H, W).permute(0, 1, 3, 4, 2)  # (B, C, H, W, L)
    return out.reshape(-1, C * H * W, levels)


class ResNetDenoiser(nn.Module):
    """``depth`` residual blocks of ``width`` channels at full resolution (module docstring)."""

    def __init__(
        self,
        shape: tuple[int, int, int],
        levels: int,
        width: int = 64,
        depth: int = 6,
        time_input: bool = True,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.shape, self.levels = shape, levels
        C = shape[0]
        cond = 4 * width
        self.cond = _Conditioning(cond, time_input, num_classes)
        self.conv_in = nn.Conv2d(C * (levels + 1), width, 3, padding=1)
        self.blocks = nn.ModuleList([ResBlock(width, width, cond) for _ in range(depth)])
        self.norm_out = nn.GroupNorm(8 if width % 8 == 0 else 1, width)
        self.conv_out = nn.Conv2d(width, C * levels, 3, padding=1)

    def forward(self, z: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        x = _onehot_image(z, self.shape, self.levels).to(self.conv_in.weight.dtype)
        c = self.cond(t, y)  # (B, cond)
        h = self.conv_in(x)  # (B, width, H, W)
        for block in self.blocks:
            h = block(h, c)
        out = self.conv_out(F.silu(self.norm_out(h)))  # (B, C * L, H, W)
        return _image_logits(out, self.shape, self.levels)  # (B, D, L)


class UNetDenoiser(nn.Module):
    """:class:`~dgm.nn.unet.UNet` over one-hot tokens (and one-hot labels as constant channels)."""

    def __init__(
        self,
        shape: tuple[int, int, int],
        levels: int,
        width: int = 32,
        mults: tuple[int, ...] = (1, 2),
        depth: int = 1,
        num_classes: int = 0,
        wide_head: bool = True,
    ) -> None:
        super().__init__()
        self.shape, self.levels, self.num_classes = shape, levels, num_classes
        C = shape[0]
        in_ch = C * (levels + 1) + num_classes
        # wide_head: the U-Net ends in `width` feature maps that the 1x1 head maps to logits;
        # without it (runs saved before it) the U-Net ends in `in_ch` maps, C * (L + 1) + K: for
        # binary data three, a bottleneck before the logits
        out_ch = width if wide_head else in_ch
        self.unet = UNet(in_ch, channels=width, mults=mults, blocks=depth, time_dim=4 * width,
                         out_channels=out_ch)  # fmt: skip
        self.head = nn.Conv2d(out_ch, C * levels, 1)

    def forward(self, z: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        x = _onehot_image(z, self.shape, self.levels).to(self.head.weight.dtype)
        if self.num_classes and y is not None:
            lab = F.one_hot(y, self.num_classes).to(x.dtype)[:, :, None, None]
            x = torch.cat([x, lab.expand(-1, -1, *x.shape[-2:])], dim=1)
        out = self.head(F.silu(self.unet(x, 1000.0 * t)))  # (B, C * L, H, W)
        return _image_logits(out, self.shape, self.levels)


class TransformerDenoiser(nn.Module):
    """A bidirectional pre-norm transformer encoder over the ``D`` tokens (module docstring)."""

    def __init__(
        self,
        num_dims: int,
        levels: int,
        width: int = 128,
        depth: int = 4,
        heads: int = 4,
        time_input: bool = True,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.levels = levels
        self.token = nn.Embedding(levels + 1, width)
        self.pos = nn.Parameter(torch.randn(num_dims, width) / math.sqrt(width))
        self.cond = _Conditioning(width, time_input, num_classes)
        layer = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True,
            norm_first=True,
        )  # fmt: skip
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, levels)

    def forward(self, z: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.token(z) + self.pos + self.cond(t, y)[:, None, :]  # (B, D, width)
        return self.head(self.norm(self.encoder(h)))  # (B, D, L)
