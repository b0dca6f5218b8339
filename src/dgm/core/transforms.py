"""Invertible transforms with log-Jacobian determinants: the language normalizing flows speak.

A :class:`Transform` maps ``x (B, *shape)`` to ``y (B, *shape')`` and reports ``log |det dy/dx|``
per example, in one call, in both directions: vector transforms take ``(B, D)``, image transforms
``(B, C, H, W)``, and shape-changing ones (:class:`Reshape`, squeeze, multi-scale factor-out) say
how they change the shape through :meth:`Transform.output_shape`. Flows in dgm run their transforms in the *normalizing* direction, data to noise, so that the
change of variables gives the density in one pass:

    log p(x) = log p_base(f(x)) + log |det J_f(x)|.

Both directions return the log-determinant of the map they compute, so
``inverse(y)[1] == -forward(x)[1]`` at ``y = forward(x)[0]``.

Univariate maps (:class:`MonotonicAffine` here, the rational-quadratic spline in
:mod:`dgm.models.flows.splines`) are elementwise monotonic functions whose parameters come from a
conditioner; coupling and autoregressive layers plug any of them in (compose, don't re-implement).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

__all__ = [
    "Composite",
    "Inverse",
    "MonotonicAffine",
    "Permutation",
    "Reshape",
    "Reverse",
    "Transform",
    "Univariate",
]


class Transform(nn.Module):
    """An invertible map of ``(B, *shape)`` tensors with a tractable log-Jacobian determinant.

    Subclasses implement :meth:`forward` and :meth:`inverse`; ``context`` is an optional
    conditioning tensor, ``(B, K)`` (e.g. a one-hot label) or ``(B, K, H, W)`` for image
    conditioners (ignored by unconditional transforms). A shape-changing transform also
    overrides :meth:`output_shape`.
    """

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The event shape of ``forward``'s output for an input of event shape ``shape``."""
        return tuple(shape)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(y (B, D), log|det dy/dx| (B,))``."""
        raise NotImplementedError

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(x (B, D), log|det dx/dy| (B,))``, the inverse map and its own log-determinant."""
        raise NotImplementedError


class Composite(Transform):
    """``f = f_n o ... o f_1``: forward applies the transforms in the given order, inverse in the
    reverse order; log-determinants add up (chain rule)."""

    def __init__(self, transforms: Iterable[Transform]) -> None:
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = x.new_zeros(x.shape[0])  # (B,)
        for t in self.transforms:
            x, ladj = t(x, context)
            total = total + ladj
        return x, total

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = y.new_zeros(y.shape[0])  # (B,)
        for t in reversed(self.transforms):
            y, ladj = t.inverse(y, context)
            total = total + ladj
        return y, total

    def __len__(self) -> int:
        return len(self.transforms)

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        for t in self.transforms:
            shape = t.output_shape(shape)
        return tuple(shape)


class Inverse(Transform):
    """The inverse of a transform: swaps ``forward`` and ``inverse`` (e.g. MAF -> IAF)."""

    def __init__(self, transform: Transform) -> None:
        super().__init__()
        self.transform = transform

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform.inverse(x, context)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform(y, context)

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if tuple(self.transform.output_shape(shape)) != tuple(shape):
            raise NotImplementedError("the inverse of a shape-changing transform has no shape rule")
        return tuple(shape)


class Reshape(Transform):
    """``(B, *in_shape) -> (B, *out_shape)`` with the same number of elements; log-det 0.

    Lets an image flow (which works on ``(B, C, H, W)``) sit in a
    :class:`~dgm.core.distributions.NormalizingFlow`, which hands transforms flat ``(B, D)``.
    """

    def __init__(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        if math.prod(self.in_shape) != math.prod(self.out_shape):
            raise ValueError(f"cannot reshape {self.in_shape} into {self.out_shape}")

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return self.out_shape

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x.reshape(x.shape[0], *self.out_shape), x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return y.reshape(y.shape[0], *self.in_shape), y.new_zeros(y.shape[0])


class Permutation(Transform):
    """``y[:, i] = x[:, perm[i]]``; volume-preserving (log-determinant 0).

    Acts on dimension 1: the features of ``(B, D)`` vectors or the channels of ``(B, C, H, W)``
    images (Glow's fixed channel shuffle).
    The permutation is a buffer, saved with the weights.
    """

    perm: Tensor
    inv_perm: Tensor

    def __init__(self, perm: Tensor) -> None:
        super().__init__()
        perm = torch.as_tensor(perm).long()
        if perm.dim() != 1 or not torch.equal(perm.sort().values, torch.arange(perm.numel())):
            raise ValueError(f"perm must be a permutation of 0..D-1, got {perm.tolist()}")
        self.register_buffer("perm", perm.clone())
        self.register_buffer("inv_perm", torch.argsort(perm))

    @classmethod
    def random(cls, num_dims: int, seed: int = 0) -> Permutation:
        g = torch.Generator()
        g.manual_seed(int(seed))
        return cls(torch.randperm(num_dims, generator=g))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x[:, self.perm], x.new_zeros(x.shape[0])  # (B, D), (B,)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return y[:, self.inv_perm], y.new_zeros(y.shape[0])  # (B, D), (B,)


class Reverse(Transform):
    """``y[:, i] = x[:, D - 1 - i]``: the permutation used between autoregressive layers (on
    dimension 1, so it reverses the channels of an image)."""

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x.flip(1), x.new_zeros(x.shape[0])  # (B, D), (B,)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return y.flip(1), y.new_zeros(y.shape[0])  # (B, D), (B,)


class Univariate:
    """An elementwise monotonic map ``y_i = g(x_i; theta_i)`` with ``num_params`` parameters per
    element, supplied by a conditioner (coupling or autoregressive network).

    ``__call__(x (B, D), params (B, D, P), inverse)`` returns ``(y (B, D), log|g'| (B, D))``; the
    inverse returns the log-derivative of the inverse map. All-zero parameters give the identity,
    so a conditioner whose last layer is zero-initialised starts the flow at the identity.
    """

    num_params: int = 0

    def __call__(self, x: Tensor, params: Tensor, inverse: bool = False) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class MonotonicAffine(Univariate):
    """``y = x * exp(s) + t`` with a soft-clamped log-scale ``s = c * tanh(raw / c)``.

    Bounding ``|s| < c`` keeps a stack of affine layers from blowing up early in training
    (Dinh et al. 2017 also bound the scale with a tanh). ``params[..., 0] = t``,
    ``params[..., 1] = raw``; zeros give the identity.
    """

    num_params = 2

    def __init__(self, log_scale_bound: float = 3.0) -> None:
        if log_scale_bound <= 0:
            raise ValueError(f"log_scale_bound must be positive, not {log_scale_bound}")
        self.log_scale_bound = float(log_scale_bound)

    def __call__(self, x: Tensor, params: Tensor, inverse: bool = False) -> tuple[Tensor, Tensor]:
        shift, raw = params[..., 0], params[..., 1]  # (B, D) each
        c = self.log_scale_bound
        log_scale = c * torch.tanh(raw / c)  # (B, D)
        if inverse:
            return (x - shift) * torch.exp(-log_scale), -log_scale
        return x * torch.exp(log_scale) + shift, log_scale
