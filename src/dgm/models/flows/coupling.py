r"""Coupling transforms: half of the dimensions condition an elementwise map of the other half.

Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017, arXiv:1605.08803;
Durkan et al., "Neural Spline Flows", NeurIPS 2019, arXiv:1906.04032.

With a binary mask splitting ``x`` into a passed-through part ``x_A`` and a transformed part
``x_B``,

.. math::

    y_A = x_A, \qquad y_B = g(x_B;\ \theta(x_A, c)), \qquad
    \log |\det J| = \sum_{i \in B} \log g'(x_i;\ \theta_i),

because the Jacobian is block-triangular with identity on ``A``. The inverse is one pass too:
``theta`` depends only on ``y_A = x_A``.

With ``unconditional=True`` the passed-through half is also transformed, by the same kind of
elementwise map with parameters of its own that depend on nothing (Durkan et al. 2019, eqs. 4-6):
``y_A = g(x_A; phi)``, while the conditioner still reads the untransformed ``x_A``. The Jacobian
stays block-triangular, now with a diagonal block on ``A``, and ``log |det J|`` gains
``sum_{i in A} log g'(x_i; phi_i)``; the inverse first undoes ``g(.; phi)`` on ``A``, then the
conditional map on ``B``. Every dimension is then transformed in every layer.

``g`` is any :class:`~dgm.core.transforms.Univariate`: :class:`~dgm.core.transforms.MonotonicAffine`
gives RealNVP, :class:`~dgm.models.flows.splines.RQSpline` gives the coupling NSF.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from dgm.core.errors import ConfigError
from dgm.core.transforms import Transform, Univariate
from dgm.nn.mlp import mlp

__all__ = ["Coupling", "alternating_mask", "half_mask"]


def alternating_mask(num_dims: int, parity: int) -> Tensor:
    """Boolean ``(D,)``: True (passed through) on dimensions ``i`` with ``i % 2 == parity % 2``.

    Alternating ``parity`` between layers lets every dimension be transformed."""
    return torch.arange(num_dims) % 2 == parity % 2


def half_mask(num_dims: int) -> Tensor:
    """Boolean ``(D,)``: True (passed through) on the first ``D // 2`` dimensions.

    Between two such layers, :class:`~dgm.core.transforms.Reverse` moves the transformed half
    onto the passed-through positions, for every ``D >= 2`` (an alternating mask would not,
    for odd ``D``)."""
    return torch.arange(num_dims) < num_dims // 2


class Coupling(Transform):
    """Coupling layer ``y_A = x_A``, ``y_B = g(x_B; MLP(x_A, context))``.

    Args:
        mask: boolean ``(D,)``, True for the passed-through (conditioning) dimensions.
        univariate: the elementwise map ``g`` and its number of parameters.
        hidden: hidden widths of the conditioner MLP.
        context_features: size of an optional context concatenated to ``x_A``.
        activation: activation of the conditioner.
        unconditional: also map ``x_A`` elementwise with learned parameters of its own (see the
            module docstring).

    The conditioner's last layer (and the unconditional parameters) start at zero, so the layer
    starts as the identity.
    """

    idx_a: Tensor
    idx_b: Tensor

    def __init__(
        self,
        mask: Tensor,
        univariate: Univariate,
        hidden: Sequence[int] = (64, 64),
        *,
        context_features: int = 0,
        activation: str = "relu",
        unconditional: bool = False,
    ) -> None:
        super().__init__()
        mask = torch.as_tensor(mask, dtype=torch.bool)
        idx_a, idx_b = torch.nonzero(mask).flatten(), torch.nonzero(~mask).flatten()
        if len(idx_a) == 0 or len(idx_b) == 0:
            raise ConfigError(
                f"a coupling layer needs dimensions on both sides of its mask, got {mask.tolist()}; "
                "coupling is impossible in 1-D (use an autoregressive transform)"
            )
        self.register_buffer("idx_a", idx_a)
        self.register_buffer("idx_b", idx_b)
        # where each dimension sits in [x_A, x_B] (not saved: derived from the mask)
        self.register_buffer("place", torch.argsort(torch.cat([idx_a, idx_b])), persistent=False)
        self.univariate = univariate
        self.context_features = context_features
        self.conditioner = mlp(
            len(idx_a) + context_features,
            hidden,
            len(idx_b) * univariate.num_params,
            activation,
            zero_last=True,
        )
        # (|A|, P) parameters of the unconditional map of x_A; zeros give the identity
        self.unconditional = (
            nn.Parameter(torch.zeros(len(idx_a), univariate.num_params)) if unconditional else None
        )

    def _params(self, x_a: Tensor, context: Tensor | None) -> Tensor:
        if (context is None) != (self.context_features == 0):
            raise ValueError(
                "pass a context exactly when the layer was built with context_features"
            )
        h = x_a if context is None else torch.cat([x_a, context], dim=-1)  # (B, |A| + C)
        p = self.conditioner(h)  # (B, |B| * P)
        return p.view(x_a.shape[0], len(self.idx_b), self.univariate.num_params)  # (B, |B|, P)

    def _couple(self, x: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        x_a, x_b = x[:, self.idx_a], x[:, self.idx_b]  # (B, |A|), (B, |B|)
        if self.unconditional is None:
            y_b, ladj = self.univariate(x_b, self._params(x_a, context), inverse=inverse)
            return x.index_copy(1, self.idx_b, y_b), ladj.sum(-1)  # (B, D), (B,)
        phi = self.unconditional.expand(x.shape[0], -1, -1)  # (B, |A|, P)
        if not inverse:
            # both halves in one spline call: [x_A, x_B] with [phi, theta(x_A, c)]
            params = torch.cat([phi, self._params(x_a, context)], dim=1)  # (B, D, P)
            y_ab, ladj = self.univariate(torch.cat([x_a, x_b], dim=1), params)  # (B, D)
            return y_ab[:, self.place], ladj.sum(-1)  # (B, D), (B,)
        # undo the unconditional map first: the conditioner read the untransformed x_A
        x_a, ladj_a = self.univariate(x_a, phi, inverse=True)  # (B, |A|)
        x_b, ladj_b = self.univariate(x_b, self._params(x_a, context), inverse=True)  # (B, |B|)
        y = torch.cat([x_a, x_b], dim=1)[:, self.place]  # (B, D)
        return y, ladj_a.sum(-1) + ladj_b.sum(-1)  # (B, D), (B,)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(x, context, inverse=False)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(y, context, inverse=True)
