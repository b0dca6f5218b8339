"""Transforms: invertibility and log-determinants against autograd Jacobians, in float64."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor
from torch.autograd.functional import jacobian

from dgm.core.distributions import NormalizingFlow, StandardNormal
from dgm.core.transforms import (
    Composite,
    Inverse,
    MonotonicAffine,
    Permutation,
    Reverse,
    Transform,
)

D64 = torch.float64


class Linear(Transform):
    """A dense invertible linear map, only for tests: log|det| = slogdet(W)."""

    def __init__(self, w: Tensor) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x, context=None):
        return x @ self.w.T, torch.linalg.slogdet(self.w)[1].expand(x.shape[0])

    def inverse(self, y, context=None):
        return torch.linalg.solve(self.w, y.T).T, -torch.linalg.slogdet(self.w)[1].expand(
            y.shape[0]
        )


class Affine(Transform):
    """An elementwise affine layer whose parameters depend on nothing: wraps MonotonicAffine."""

    def __init__(self, params: Tensor) -> None:
        super().__init__()
        self.params = torch.nn.Parameter(params)  # (D, 2)
        self.g = MonotonicAffine(log_scale_bound=2.0)

    def forward(self, x, context=None):
        y, ladj = self.g(x, self.params.expand(x.shape[0], -1, -1))
        return y, ladj.sum(-1)

    def inverse(self, y, context=None):
        x, ladj = self.g(y, self.params.expand(y.shape[0], -1, -1), inverse=True)
        return x, ladj.sum(-1)


def check_transform(t: Transform, x: Tensor, atol: float = 1e-10) -> None:
    """Round trip, log-determinant of both directions against autograd + slogdet, per example."""
    y, ladj = t(x)
    assert y.shape == x.shape and ladj.shape == (x.shape[0],)
    x2, ladj_inv = t.inverse(y)
    torch.testing.assert_close(x2, x, atol=atol, rtol=0)
    torch.testing.assert_close(ladj_inv, -ladj, atol=atol, rtol=0)
    for b in range(x.shape[0]):
        jf = jacobian(lambda v: t(v[None])[0][0], x[b])  # (D, D)
        torch.testing.assert_close(ladj[b], torch.linalg.slogdet(jf)[1], atol=atol, rtol=0)
        ji = jacobian(lambda v: t.inverse(v[None])[0][0], y[b])  # (D, D)
        torch.testing.assert_close(ladj_inv[b], torch.linalg.slogdet(ji)[1], atol=atol, rtol=0)


def test_reverse():
    x = torch.randn(4, 5, dtype=D64)
    y, ladj = Reverse()(x)
    assert torch.equal(y[:, 0], x[:, 4]) and torch.equal(ladj, torch.zeros(4, dtype=D64))
    check_transform(Reverse(), x)


def test_permutation():
    perm = torch.tensor([2, 0, 3, 1])
    x = torch.randn(3, 4, dtype=D64)
    y, _ = Permutation(perm)(x)
    assert torch.equal(y, x[:, [2, 0, 3, 1]])
    check_transform(Permutation(perm), x)
    p = Permutation.random(6, seed=1)
    assert torch.equal(p.perm, Permutation.random(6, seed=1).perm)
    assert {"perm", "inv_perm"} <= set(p.state_dict())
    check_transform(p, torch.randn(3, 6, dtype=D64))
    with pytest.raises(ValueError, match="permutation"):
        Permutation(torch.tensor([0, 0, 1]))


def test_monotonic_affine_against_closed_form():
    torch.manual_seed(0)
    g = MonotonicAffine(log_scale_bound=1.5)
    x = torch.randn(5, 3, dtype=D64)
    params = 4 * torch.randn(5, 3, 2, dtype=D64)
    y, ladj = g(x, params)
    s = 1.5 * torch.tanh(params[..., 1] / 1.5)
    torch.testing.assert_close(y, x * s.exp() + params[..., 0])
    torch.testing.assert_close(ladj, s)
    assert ladj.abs().max() < 1.5
    x2, ladj_inv = g(y, params, inverse=True)
    torch.testing.assert_close(x2, x)
    torch.testing.assert_close(ladj_inv, -ladj)
    y0, l0 = g(x, torch.zeros_like(params))
    assert torch.equal(y0, x) and (l0 == 0).all()


def test_composite_and_inverse():
    torch.manual_seed(0)
    d = 4
    w = torch.randn(d, d, dtype=D64) + 2 * torch.eye(d, dtype=D64)
    t = Composite(
        [
            Linear(w),
            Reverse(),
            Affine(torch.randn(d, 2, dtype=D64)),
            Permutation(torch.tensor([1, 3, 0, 2])),
            Linear(torch.randn(d, d, dtype=D64) + 2 * torch.eye(d, dtype=D64)),
        ]
    )
    assert len(t) == 5
    x = torch.randn(3, d, dtype=D64)
    check_transform(t, x)
    check_transform(Inverse(t), x)
    # composition order: forward applies the first transform first
    y, _ = t(x)
    z = x
    for s in t.transforms:
        z, _ = s(z)
    torch.testing.assert_close(y, z)
    # the log-determinant of a composite is the sum of its parts
    _, ladj = t(x)
    parts, z = torch.zeros(3, dtype=D64), x
    for s in t.transforms:
        z, l = s(z)
        parts = parts + l
    torch.testing.assert_close(ladj, parts)


def test_standard_normal():
    base = StandardNormal((2, 3))
    x = torch.randn(4, 2, 3, dtype=D64)
    ref = torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(dim=(1, 2))
    torch.testing.assert_close(base.log_prob(x), ref)
    s = base.sample(5, dtype=D64)
    assert s.shape == (5, 2, 3) and s.dtype == D64
    assert math.isclose(base.entropy(), 6 * 0.5 * math.log(2 * math.pi * math.e))


def test_normalizing_flow_change_of_variables():
    # A linear flow z = W x: log p(x) is the Gaussian N(0, (W^T W)^{-1}), known in closed form.
    torch.manual_seed(0)
    w = torch.randn(2, 2, dtype=D64) + 2 * torch.eye(2, dtype=D64)
    flow = NormalizingFlow(Linear(w), (2,))
    x = torch.randn(6, 2, dtype=D64)
    cov = torch.linalg.inv(w.T @ w)
    ref = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=D64), cov).log_prob(x)
    torch.testing.assert_close(flow.log_prob(x), ref)
    s = flow.sample(20000)
    assert s.dtype == D64
    torch.testing.assert_close(torch.cov(s.T), cov, atol=0.05, rtol=0.05)
    z, ladj = flow(x)
    x2, ladj_inv = flow.inverse(z)
    torch.testing.assert_close(x2, x)
    torch.testing.assert_close(ladj + ladj_inv, torch.zeros(6, dtype=D64))
