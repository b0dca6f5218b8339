r"""Time (noise-level) embeddings and an MLP that takes a time input, for diffusion on vectors.

The sinusoidal embedding of Vaswani et al. ("Attention is all you need", 2017), used for diffusion
time steps by Ho et al. (2020):

.. math::

    e(t)_{k} = \cos(t\, \omega_k), \quad e(t)_{k + d/2} = \sin(t\, \omega_k), \qquad
    \omega_k = \text{max\_period}^{-k / (d/2)}, \quad k = 0 .. d/2 - 1.

:class:`TimeMLP` maps ``(x (B, D), t (B,))`` to ``(B, D)`` with residual blocks
``h <- h + W_2 silu(W_1 silu(h) + A_b e(t))``, the vector analogue of the U-Net's residual blocks.

**Class labels** (``num_classes = K > 0``; :class:`LabelEmbedding`): a learned vector ``c_y`` is
added to the time embedding, ``e(t) + c_y``, with an extra *null* class ``y = K`` standing for "no
label" (the unconditional branch of classifier-free guidance, Ho & Salimans 2022,
arXiv:2207.12598); ``y = None`` means the null class for every row.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dgm.nn.mlp import mlp

__all__ = [
    "LabelEmbedding",
    "TimeEmbedding",
    "TimeMLP",
    "fourier_frequencies",
    "fourier_inputs",
    "sinusoidal_embedding",
]


def fourier_frequencies(features: int, count: int, scale: float) -> Tensor:
    """``W (features, count)``: fixed angular frequencies drawn from ``N(0, scale^2)`` for random
    Fourier features (Tancik et al. 2020, arXiv:2006.10739), from seed 0, so every machine and
    every rebuild of a saved network draws the same ones (networks keep them as a buffer)."""
    g = torch.Generator().manual_seed(0)
    return scale * torch.randn(features, count, generator=g)


def fourier_inputs(x: Tensor, w: Tensor) -> Tensor:
    """``[x, sin(x W), cos(x W)]`` ``(B, D + 2F)`` for inputs ``x (B, D)`` and frequencies
    ``w (D, F)`` (:func:`fourier_frequencies`)."""
    p = x @ w.to(x.dtype)  # (B, F)
    return torch.cat([x, torch.sin(p), torch.cos(p)], dim=-1)


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """``(B,)`` times (any real values) to ``(B, dim)`` features ``[cos(t w), sin(t w)]``."""
    if dim < 2 or dim % 2:
        raise ValueError(f"the embedding dimension must be an even number >= 2, not {dim}")
    half = dim // 2
    k = torch.arange(half, device=t.device, dtype=torch.float64)
    freqs = torch.exp(-math.log(max_period) * k / half).to(
        t.dtype if t.is_floating_point() else torch.float32
    )  # (half,)
    args = t.reshape(-1, 1).to(freqs.dtype) * freqs  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, dim)


class TimeEmbedding(nn.Module):
    """Sinusoidal features of ``t`` followed by a two-layer MLP: ``(B,)`` to ``(B, out_dim)``."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.mlp = mlp(dim, [out_dim], out_dim, "silu")

    def forward(self, t: Tensor) -> Tensor:
        dtype = self.mlp[0].weight.dtype
        return self.mlp(sinusoidal_embedding(t.to(dtype), self.dim))  # (B, out_dim)


class LabelEmbedding(nn.Module):
    """Class labels ``y (B,)`` in ``0..K`` (``K``: the null class) to vectors ``(B, dim)``."""

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)

    def forward(self, y: Tensor | None, n: int) -> Tensor:
        if y is None:  # the null class for every row
            y = torch.full(
                (n,), self.num_classes, dtype=torch.long, device=self.table.weight.device
            )
        return self.table(y.long())  # (n, dim)


class _Block(nn.Module):
    def __init__(self, hidden: int, time_dim: int) -> None:
        super().__init__()
        self.lin1 = nn.Linear(hidden, hidden)
        self.time = nn.Linear(time_dim, hidden)
        self.lin2 = nn.Linear(hidden, hidden)
        self.act = nn.SiLU()

    def forward(self, h: Tensor, temb: Tensor) -> Tensor:
        return h + self.lin2(self.act(self.lin1(self.act(h)) + self.time(temb)))  # (B, H)


class TimeMLP(nn.Module):
    """A residual MLP with a time input: ``forward(x (B, D), t (B,)) -> (B, D)``.

    Args:
        features: ``D``, the size of input and output.
        hidden: width of the residual stream.
        blocks: number of residual blocks, each fed the time embedding.
        time_dim: size of the sinusoidal embedding (and of the embedding MLP).
        num_classes: ``K``; with ``K > 0`` a label embedding (``K + 1`` rows, the last the null
            class) is added to the time embedding and ``forward`` takes labels ``y``.
        fourier_features: ``F``; with ``F > 0`` the network reads ``[x, sin(x W), cos(x W)]``
            instead of ``x``, ``W (D, F)`` fixed angular frequencies drawn from
            ``N(0, fourier_scale^2)`` (random Fourier features, Tancik et al. 2020,
            arXiv:2006.10739): an MLP on raw coordinates learns thin structures slowly.
        fourier_scale: the frequencies' standard deviation.
    """

    W: Tensor

    def __init__(
        self,
        features: int,
        hidden: int = 256,
        blocks: int = 3,
        time_dim: int = 64,
        num_classes: int = 0,
        fourier_features: int = 0,
        fourier_scale: float = 1.0,
    ):
        super().__init__()
        self.embed = TimeEmbedding(time_dim, time_dim)
        self.label = LabelEmbedding(num_classes, time_dim) if num_classes > 0 else None
        self.fourier = fourier_features > 0
        if self.fourier:
            self.register_buffer(
                "W", fourier_frequencies(features, fourier_features, fourier_scale)
            )
        self.inp = nn.Linear(features + 2 * fourier_features, hidden)
        self.blocks = nn.ModuleList(_Block(hidden, time_dim) for _ in range(blocks))
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, features))

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        temb = self.embed(t.expand(x.shape[0]) if t.dim() == 0 else t)  # (B, T)
        if self.label is not None:
            temb = temb + self.label(y, x.shape[0])  # (B, T); y None: the null class
        if self.fourier:
            x = fourier_inputs(x, self.W)  # (B, D + 2F)
        h = self.inp(x)  # (B, H)
        for block in self.blocks:
            h = block(h, temb)
        return self.out(h)  # (B, D)
