r"""Squeeze and multi-scale factor-out: the architecture of image flows.

Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017, arXiv:1605.08803,
section 3.6; Kingma & Dhariwal, "Glow", NeurIPS 2018, arXiv:1807.03039, figure 2.

*Squeeze* trades space for channels: every ``2 x 2`` block of a ``(C, H, W)`` image becomes four
channels of a ``(4C, H/2, W/2)`` image. It is a permutation of the elements (log-determinant 0).

*Factor-out*: after each level but the last, half of the channels leave the flow and go straight
to the base distribution; the rest continue to the next, coarser level. With levels
``f_1, ..., f_L`` and a split after each,

.. math::

    (z_1, h_1) = \operatorname{split}(f_1(x)), \quad (z_2, h_2) = \operatorname{split}(f_2(h_1)),
    \quad \dots, \quad z_L = f_L(h_{L-1}), \qquad z = (z_1, \dots, z_L),

    \log |\det J| = \textstyle\sum_l \log |\det J_{f_l}|,

because a split is a mere relabelling of the elements. ``z`` is flat ``(B, D)`` and the base is
``N(0, I)`` over all of it, as in RealNVP. Glow's learned prior on a factored-out half is itself a
transform (an affine coupling of ``z_l`` conditioned on ``h_l``) placed at the end of ``f_l``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from dgm.core.transforms import Transform

__all__ = ["MultiScale", "Squeeze"]


class Squeeze(Transform):
    """``(B, C, H, W) -> (B, 4C, H/2, W/2)``: each 2x2 spatial block becomes 4 channels.

    Output channel ``4c + 2i + j`` holds input channel ``c`` at offset ``(i, j)`` of the block.
    """

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        c, h, w = shape
        if h % 2 or w % 2:
            raise ValueError(f"squeeze needs an even height and width, not {h} x {w}")
        return (4 * c, h // 2, w // 2)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        b, c, h, w = x.shape
        y = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)  # (B, C, 2, 2, h, w)
        return y.reshape(b, 4 * c, h // 2, w // 2), x.new_zeros(b)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        b, c4, h, w = y.shape
        x = y.reshape(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)  # (B, C, h, 2, w, 2)
        return x.reshape(b, c4 // 4, 2 * h, 2 * w), y.new_zeros(b)


class MultiScale(Transform):
    """Levels ``f_1..f_L`` on ``(B, C, H, W)`` with half of the channels factored out after
    each level but the last; the output is the flat ``(B, D)`` concatenation of the parts.

    Args:
        levels: one transform per level (each may squeeze, see :class:`Squeeze`).
        in_shape: event shape ``(C, H, W)`` of the input.

    The factored-out part of level ``l`` is the first ``C_l // 2`` channels of its output.
    """

    def __init__(self, levels: Sequence[Transform], in_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.levels = nn.ModuleList(levels)
        self.in_shape = tuple(in_shape)
        self.parts: list[tuple[int, ...]] = []  # shapes of z_1..z_L
        self.rests: list[tuple[int, ...]] = []  # shapes of h_1..h_{L-1}
        shape = self.in_shape
        for i, level in enumerate(self.levels):
            c, h, w = level.output_shape(shape)
            if i == len(self.levels) - 1:
                self.parts.append((c, h, w))
            else:
                if c < 2:
                    raise ValueError(f"level {i + 1} outputs {c} channel(s); cannot factor out")
                self.parts.append((c // 2, h, w))
                shape = (c - c // 2, h, w)
                self.rests.append(shape)

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (sum(c * h * w for c, h, w in self.parts),)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = x.new_zeros(x.shape[0])  # (B,)
        zs = []
        for i, level in enumerate(self.levels):
            x, ladj = level(x, context)  # (B, C_l, H_l, W_l)
            total = total + ladj
            if i < len(self.levels) - 1:
                k = self.parts[i][0]
                zs.append(x[:, :k].flatten(1))  # (B, k H_l W_l)
                x = x[:, k:]
        zs.append(x.flatten(1))
        return torch.cat(zs, dim=1), total  # (B, D), (B,)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        b = z.shape[0]
        sizes = [c * h * w for c, h, w in self.parts]
        chunks = torch.split(z, sizes, dim=1)
        total = z.new_zeros(b)  # (B,)
        x = chunks[-1].reshape(b, *self.parts[-1])
        for i in reversed(range(len(self.levels))):
            if i < len(self.levels) - 1:
                x = torch.cat([chunks[i].reshape(b, *self.parts[i]), x], dim=1)
            x, ladj = self.levels[i].inverse(x, context)
            total = total + ladj
        return x, total  # (B, C, H, W), (B,)
