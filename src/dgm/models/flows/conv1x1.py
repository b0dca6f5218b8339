r"""Invertible 1x1 convolution in LU form (Kingma & Dhariwal 2018).

Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS 2018,
arXiv:1807.03039, section 3.2. A learned ``C x C`` matrix ``W`` mixes the channels of every pixel,
``y_{:,h,w} = W x_{:,h,w}``, a learned generalisation of a channel permutation. Parametrised as

.. math::

    W = P\, L\, (U + \operatorname{diag}(\sigma \odot e^{s})), \qquad
    \log |\det J| = H W \sum_c s_c,

with a fixed permutation ``P``, a unit lower-triangular ``L``, a strictly upper-triangular ``U``,
fixed signs ``sigma`` and log-magnitudes ``s``, the log-determinant costs ``O(C)`` instead of
``O(C^3)`` and the inverse is two triangular solves. ``W`` starts as a random rotation. On
``(B, D)`` vectors it is a dense invertible linear map (``H W = 1``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgm.core.transforms import Transform

__all__ = ["InvConv1x1"]


class InvConv1x1(Transform):
    """``y = W x`` over dimension 1 (channels of ``(B, C, H, W)`` or features of ``(B, D)``).

    Args:
        num_features: ``C``.
        seed: seed of the random rotation ``W`` starts from.
    """

    perm: Tensor
    sign: Tensor
    lower_mask: Tensor

    def __init__(self, num_features: int, seed: int = 0) -> None:
        super().__init__()
        c = int(num_features)
        g = torch.Generator().manual_seed(int(seed))
        q, _ = torch.linalg.qr(torch.randn(c, c, generator=g, dtype=torch.float64))
        p, lower, upper = torch.linalg.lu(q)
        diag = torch.diagonal(upper)
        self.register_buffer("perm", p.float())
        self.register_buffer("sign", torch.sign(diag).float())
        self.register_buffer("lower_mask", torch.tril(torch.ones(c, c), -1))
        self.log_s = nn.Parameter(diag.abs().log().float())
        lower, upper = torch.tril(lower, -1).float(), torch.triu(upper, 1).float()
        if c > 1:  # a 1x1 matrix has no off-diagonal entries to learn
            self.lower = nn.Parameter(lower)
            self.upper = nn.Parameter(upper)
        else:
            self.register_buffer("lower", lower)
            self.register_buffer("upper", upper)

    def _factors(self) -> tuple[Tensor, Tensor]:
        eye = torch.eye(self.log_s.shape[0], dtype=self.log_s.dtype, device=self.log_s.device)
        lower = self.lower * self.lower_mask + eye  # (C, C) unit lower-triangular
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign * self.log_s.exp())
        return lower, upper

    def weight(self) -> Tensor:
        """``W = P L (U + diag(sigma e^s))``, shape ``(C, C)``."""
        lower, upper = self._factors()
        return self.perm @ lower @ upper

    def inverse_weight(self) -> Tensor:
        """``W^{-1} = U'^{-1} L^{-1} P^T`` by two triangular solves, shape ``(C, C)``."""
        lower, upper = self._factors()
        t = torch.linalg.solve_triangular(lower, self.perm.T, upper=False, unitriangular=True)
        return torch.linalg.solve_triangular(upper, t, upper=True)

    @staticmethod
    def _mix(w: Tensor, x: Tensor) -> Tensor:
        if x.dim() == 4:
            return F.conv2d(x, w[:, :, None, None])  # (B, C, H, W)
        if x.dim() == 2:
            return F.linear(x, w)  # (B, D)
        return torch.einsum("ij,bj...->bi...", w, x)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        ladj = math.prod(x.shape[2:]) * self.log_s.sum()
        return self._mix(self.weight(), x), ladj.expand(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        ladj = -math.prod(y.shape[2:]) * self.log_s.sum()
        return self._mix(self.inverse_weight(), y), ladj.expand(y.shape[0])
