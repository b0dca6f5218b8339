r"""Energy networks ``E_\theta: (B, *event) -> (B,)`` for :mod:`dgm.models.ebm`.

The model density is :math:`p_\theta(x) = e^{-E_\theta(x)} / Z_\theta`. Score-based objectives need
:math:`\nabla_x E` and (exact score matching) its Hessian, so the networks use smooth activations
(SiLU by default): a ReLU network has a zero Hessian almost everywhere and exact score matching
would see no curvature.

* :class:`MLPEnergy`: any event shape, flattened;
* :class:`ConvEnergy`: images ``(C, H, W)``, strided convolutions then global average pooling;
* :class:`QuadraticEnergy`: :math:`E(x) = \tfrac12 (x - \mu)^\top P (x - \mu)` with precision
  :math:`P = L L^\top` (``L`` lower triangular, positive diagonal): a Gaussian energy whose
  parameters every objective should recover, used by the tests.

No network has an output bias: an additive constant in ``E`` only rescales ``Z``, no objective
identifies it (its gradient is zero for cd and the score-matching losses), and ``nce``/``fce``
learn ``log Z`` separately. With ``outputs = K > 1`` (a class-conditional EBM) the networks give
``K`` values per input, the class energies ``E(x, y)``, *with* a bias: a per-class constant is not
absorbed into ``Z`` (it sets the class weights).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dgm.core.errors import ConfigError
from dgm.nn.embeddings import fourier_frequencies, fourier_inputs
from dgm.nn.mlp import activation, mlp

__all__ = ["SMOOTH_ACTIVATIONS", "ConvEnergy", "MLPEnergy", "QuadraticEnergy"]

#: the activations an energy may use: score matching needs second derivatives
SMOOTH_ACTIVATIONS = ("silu", "softplus", "elu", "tanh")


class MLPEnergy(nn.Module):
    """A fully connected energy on flattened events: ``D -> hidden... -> 1``.

    With ``fourier_features = F > 0`` the network reads ``[x, sin(x W), cos(x W)]`` instead of
    ``x``, with a fixed random ``W`` of shape ``(D, F)`` whose entries, angular frequencies, are
    drawn from ``N(0, fourier_scale^2)`` (random Fourier features, Tancik et al. 2020,
    arXiv:2006.10739).
    An MLP on raw coordinates learns sharp, thin structures (a ring of width 0.08) slowly;
    the features give it those frequencies from the start. ``W`` is a buffer drawn from a fixed
    seed and saved with the weights; the energy stays smooth (sin, cos and SiLU), so every
    objective, score matching included, applies unchanged.
    """

    W: Tensor

    def __init__(
        self,
        event_shape: tuple[int, ...],
        hidden: tuple[int, ...],
        act: str,
        fourier_features: int = 0,
        fourier_scale: float = 1.0,
        outputs: int = 1,
    ) -> None:
        super().__init__()
        d = math.prod(event_shape)
        self.fourier = fourier_features > 0
        if self.fourier:
            self.register_buffer("W", fourier_frequencies(d, fourier_features, fourier_scale))
            d = d + 2 * fourier_features
        activation(act, SMOOTH_ACTIVATIONS)  # the check: a smooth activation
        # no output bias for one energy: a constant energy is absorbed into Z
        self.net = mlp(d, hidden, outputs, act, last_bias=outputs > 1)
        self.outputs = outputs

    def forward(self, x: Tensor) -> Tensor:
        h = x.reshape(x.shape[0], -1)  # (B, D)
        if self.fourier:
            h = fourier_inputs(h, self.W)  # (B, D + 2F)
        out = self.net(h)  # (B, outputs)
        return out.squeeze(-1) if self.outputs == 1 else out  # (B,) or (B, K)


class ConvEnergy(nn.Module):
    """A convolutional energy on images ``(C, H, W)``: a 3x3 convolution, then one stride-2 4x4
    convolution per entry of ``channels``, global average pooling and a linear read-out."""

    def __init__(
        self, event_shape: tuple[int, ...], channels: tuple[int, ...], act: str, outputs: int = 1
    ) -> None:
        super().__init__()
        if len(event_shape) != 3:
            raise ConfigError(
                f"energy='conv' needs image data (C, H, W), not event shape {event_shape}; "
                "use energy='mlp'"
            )
        c = event_shape[0]
        layers: list[nn.Module] = [
            nn.Conv2d(c, channels[0], 3, padding=1),
            activation(act, SMOOTH_ACTIVATIONS),
        ]
        prev = channels[0]
        for ch in channels:
            layers += [
                nn.Conv2d(prev, ch, 4, stride=2, padding=1),
                activation(act, SMOOTH_ACTIVATIONS),
            ]
            prev = ch
        self.features = nn.Sequential(*layers)
        # no bias for one energy: a constant energy is absorbed into Z
        self.head = nn.Linear(prev, outputs, bias=outputs > 1)
        self.outputs = outputs

    def forward(self, x: Tensor) -> Tensor:
        h = self.features(x)  # (B, C', H', W')
        out = self.head(h.mean(dim=(2, 3)))  # (B, outputs)
        return out.squeeze(-1) if self.outputs == 1 else out  # (B,) or (B, K)


class QuadraticEnergy(nn.Module):
    r"""Gaussian energy :math:`\tfrac12 (x-\mu)^\top L L^\top (x-\mu)`; ``p = N(mu, (L L^T)^{-1})``
    and :math:`\log Z = \tfrac D2 \log 2\pi - \log\det L`."""

    def __init__(self, event_shape: tuple[int, ...]) -> None:
        super().__init__()
        d = math.prod(event_shape)
        self.mean = nn.Parameter(torch.zeros(d))
        self.raw_chol = nn.Parameter(torch.zeros(d, d))  # lower part + log of the diagonal

    def chol(self) -> Tensor:
        """``L`` with ``P = L L^T``: strictly lower part of ``raw_chol`` and ``exp`` diagonal."""
        r = self.raw_chol
        return torch.tril(r, -1) + torch.diag_embed(r.diagonal().exp())  # (D, D)

    def precision(self) -> Tensor:
        lo = self.chol()
        return lo @ lo.T  # (D, D)

    def log_z(self) -> Tensor:
        d = self.mean.shape[0]
        return 0.5 * d * math.log(2 * math.pi) - self.raw_chol.diagonal().sum()

    def forward(self, x: Tensor) -> Tensor:
        u = (x.reshape(x.shape[0], -1) - self.mean) @ self.chol()  # (B, D)
        return 0.5 * (u**2).sum(-1)  # (B,)
