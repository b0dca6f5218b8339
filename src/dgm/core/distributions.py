"""Base distributions and the normalizing flow that pushes one through a transform.

A :class:`NormalizingFlow` with transform ``f`` (data to noise) and base ``p_z`` has density

    log p(x) = log p_z(f(x)) + log |det J_f(x)|

and samples ``x = f^{-1}(z)``, ``z ~ p_z`` (Rezende & Mohamed 2015; Papamakarios et al. 2021,
"Normalizing Flows for Probabilistic Modeling and Inference", arXiv:1912.02762).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dgm.core.transforms import Transform

__all__ = ["NormalizingFlow", "StandardNormal"]


class StandardNormal:
    """``N(0, I)`` over events of shape ``event_shape``; ``log_prob`` sums over the event."""

    def __init__(self, event_shape: tuple[int, ...]) -> None:
        self.event_shape = tuple(int(s) for s in event_shape)
        self.num_dims = math.prod(self.event_shape)

    def log_prob(self, x: Tensor) -> Tensor:
        """``-|x|^2 / 2 - D log(2 pi) / 2`` per example, shape ``(B,)``."""
        sq = x.reshape(x.shape[0], -1).square().sum(-1)  # (B,)
        return -0.5 * sq - 0.5 * self.num_dims * math.log(2 * math.pi)

    def sample(
        self, n: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Tensor:
        return torch.randn(n, *self.event_shape, device=device, dtype=dtype)  # (n, *event)

    def entropy(self) -> float:
        return 0.5 * self.num_dims * (1.0 + math.log(2 * math.pi))


class NormalizingFlow(nn.Module):
    """A standard-normal base pushed through ``transform^{-1}``, over events of shape
    ``event_shape`` (flattened to ``D`` dimensions for the transform).

    ``forward``/``inverse`` expose the transform on event-shaped tensors so invertibility can be
    checked directly.
    """

    def __init__(self, transform: Transform, event_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.transform = transform
        self.event_shape = tuple(event_shape)
        self.base = StandardNormal((math.prod(self.event_shape),))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Data to noise: ``(z (B, *event), log|det dz/dx| (B,))``."""
        z, ladj = self.transform(x.reshape(x.shape[0], -1), context)  # (B, D), (B,)
        return z.reshape(x.shape[0], *self.event_shape), ladj

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Noise to data: ``(x (B, *event), log|det dx/dz| (B,))``."""
        x, ladj = self.transform.inverse(z.reshape(z.shape[0], -1), context)  # (B, D), (B,)
        return x.reshape(z.shape[0], *self.event_shape), ladj

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        z, ladj = self.transform(x.reshape(x.shape[0], -1), context)  # (B, D), (B,)
        return self.base.log_prob(z) + ladj  # (B,)

    def sample(
        self,
        n: int,
        context: Tensor | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        temperature: float = 1.0,
    ) -> Tensor:
        """``n`` samples ``f^{-1}(T z)``, ``z ~ N(0, I)``: ``temperature`` ``T = 1`` samples the
        flow's density; ``T < 1`` is reduced-temperature sampling (Kingma & Dhariwal 2018), a
        sharper set that is *not* a sample of it."""
        ref = next(self.parameters(), None)  # follow the weights unless told otherwise
        if ref is not None:
            device = ref.device if device is None else device
            dtype = ref.dtype if dtype is None else dtype
        z = self.base.sample(n, device=device, dtype=dtype)  # (n, D)
        if temperature != 1.0:
            z = temperature * z
        return self.inverse(z, context)[0]  # (n, *event)
