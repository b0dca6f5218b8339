r"""Masked autoregressive transforms (MAF style) with any elementwise map.

Papamakarios, Pavlakou & Murray, "Masked Autoregressive Flow for Density Estimation", NeurIPS 2017,
arXiv:1705.07057; Durkan et al., "Neural Spline Flows", NeurIPS 2019 (the RQ-spline variant).

A MADE network (:class:`dgm.nn.masked.MADENet`) gives the parameters of dimension ``i`` from the
dimensions before it in the ordering:

.. math::

    y_i = g(x_i;\ \theta_i(x_{<i}, c)), \qquad \log |\det J| = \sum_i \log g'(x_i;\ \theta_i),

since the Jacobian is triangular once the dimensions are sorted by rank. The forward (data to
noise, used by ``log_prob``) takes one network pass; the inverse (sampling) takes ``D`` passes,
each fixing the dimension of the next rank.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from dgm.core.transforms import Transform, Univariate
from dgm.nn.masked import MADENet

__all__ = ["MaskedAutoregressive"]


class MaskedAutoregressive(Transform):
    """``y_i = g(x_i; MADE(x_{<i}, context)_i)``.

    Args:
        order: ranks ``(D,)`` of the dimensions (:func:`dgm.nn.masked.made_order`).
        univariate: the elementwise map (affine for MAF, RQ spline for the autoregressive NSF).
        hidden: hidden widths of the MADE conditioner.
        context_features: size of an optional unmasked context.
        activation: activation of the conditioner.
        connectivity, seed: hidden-degree assignment of the MADE (see :func:`dgm.nn.masked.hidden_degrees`).

    The MADE output layer starts at zero, so the transform starts as the identity.
    """

    def __init__(
        self,
        order: Tensor,
        univariate: Univariate,
        hidden: Sequence[int] = (64, 64),
        *,
        context_features: int = 0,
        activation: str = "relu",
        connectivity: Literal["cyclic", "random"] = "cyclic",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.univariate = univariate
        self.net = MADENet(
            order,
            hidden,
            out_features=univariate.num_params,
            context_features=context_features,
            activation=activation,
            connectivity=connectivity,
            seed=seed,
            zero_last=True,
        )

    @property
    def num_dims(self) -> int:
        return self.net.num_dims

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        params = self.net(x, context)  # (B, D, P)
        y, ladj = self.univariate(x, params)  # (B, D), (B, D)
        return y, ladj.sum(-1)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        # After pass r the dimensions of rank <= r are exact; the last pass used exact parameters
        # for every dimension, so its log-derivatives are the inverse's.
        x = torch.zeros_like(y)  # (B, D)
        ladj = y.new_zeros(y.shape)  # (B, D)
        for _ in range(self.num_dims):
            x, ladj = self.univariate(y, self.net(x, context), inverse=True)
        return x, ladj.sum(-1)
