"""The fast forward RQ spline (a hand-written backward) against autograd on the reference
formulas, in float64: values, input gradients and parameter gradients, at points inside bins, in
both tails, at +-B and at every knot."""

from __future__ import annotations

import pytest
import torch

from dgm.models.flows.splines import (
    MIN_BIN_HEIGHT,
    MIN_BIN_WIDTH,
    MIN_DERIVATIVE,
    RQSpline,
    _spline_autograd,
    rational_quadratic_spline,
)

D64 = torch.float64


def case(seed: int, bins: int, scale: float, bound: float = 4.0):
    g = torch.Generator().manual_seed(seed)
    b, d = 16, 3
    params = scale * torch.randn(b, d, 3 * bins - 1, generator=g, dtype=D64)
    x = (2.2 * torch.rand(b, d, generator=g, dtype=D64) - 1.1) * bound  # inside and in the tails
    x[0] = bound
    x[1] = -bound
    return x, params


@pytest.mark.parametrize("seed,bins,scale", [(0, 1, 1.0), (1, 2, 3.0), (2, 8, 2.0), (3, 11, 0.5)])
@pytest.mark.parametrize("mins", [(MIN_BIN_WIDTH, MIN_BIN_HEIGHT), (0.02, 0.005)])
def test_fast_forward_matches_autograd_of_the_reference(seed, bins, scale, mins):
    x, params = case(seed, bins, scale)
    k = bins
    weights = torch.randn(2, *x.shape, dtype=D64)  # a generic downstream loss

    def run(fast: bool):
        xx, pp = x.clone().requires_grad_(), params.clone().requires_grad_()
        w, h, d = pp[..., :k], pp[..., k : 2 * k], pp[..., 2 * k :]
        if fast:
            out, ladj = rational_quadratic_spline(
                xx, w, h, d, tail_bound=4.0, min_bin_width=mins[0], min_bin_height=mins[1]
            )
        else:
            out, ladj = _spline_autograd(xx, w, h, d, False, 4.0, *mins, MIN_DERIVATIVE)
        loss = (weights[0] * out.sin() + weights[1] * ladj * out).sum()
        return (out, ladj, *torch.autograd.grad(loss, (xx, pp)))

    for a, b in zip(run(True), run(False), strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_gradients_at_the_knots_match_too():
    # at a knot, theta is 0 or 1 up to rounding: the one-sided formulas must agree with autograd
    _, params = case(5, 6, 2.0)
    k = 6
    e = torch.softmax(params[..., :k], -1)
    frac = MIN_BIN_WIDTH + (1 - MIN_BIN_WIDTH * k) * e
    knots = torch.cumsum(frac, -1)[..., :-1] * 8.0 - 4.0  # interior x knots (16, 3, K - 1)
    x = knots[..., 2]  # (16, 3)
    spline = RQSpline(k, 4.0)
    xx, pp = x.clone().requires_grad_(), params.clone().requires_grad_()
    out, ladj = spline(xx, pp)
    g1 = torch.autograd.grad((out + ladj).sum(), (xx, pp))
    xx2, pp2 = x.clone().requires_grad_(), params.clone().requires_grad_()
    w, h, d = pp2[..., :k], pp2[..., k : 2 * k], pp2[..., 2 * k :]
    out2, ladj2 = _spline_autograd(xx2, w, h, d, False, 4.0, MIN_BIN_WIDTH, MIN_BIN_HEIGHT, 1e-3)
    g2 = torch.autograd.grad((out2 + ladj2).sum(), (xx2, pp2))
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=1e-8)


def test_gradcheck_of_the_fast_forward():
    x, params = case(7, 4, 1.0)
    x, params = x[:4, :2].clone(), params[:4, :2].clone()
    x = x.clamp(-3.9, 3.9)  # keep finite differences away from the kink at +-B
    spline = RQSpline(4, 4.0)
    assert torch.autograd.gradcheck(
        lambda a, p: spline(a, p), (x.requires_grad_(), params.requires_grad_())
    )


def test_second_derivatives_fall_back_to_autograd():
    x, params = case(8, 4, 1.0)
    k = 4
    xx, pp = x.clone().requires_grad_(), params.clone().requires_grad_()
    out, ladj = RQSpline(k, 4.0)(xx, pp)
    (g,) = torch.autograd.grad((out + ladj).sum(), xx, create_graph=True)
    h1 = torch.autograd.grad(g.square().sum(), (xx, pp))
    xx2, pp2 = x.clone().requires_grad_(), params.clone().requires_grad_()
    w, h, d = pp2[..., :k], pp2[..., k : 2 * k], pp2[..., 2 * k :]
    out2, ladj2 = _spline_autograd(xx2, w, h, d, False, 4.0, MIN_BIN_WIDTH, MIN_BIN_HEIGHT, 1e-3)
    (g2,) = torch.autograd.grad((out2 + ladj2).sum(), xx2, create_graph=True)
    h2 = torch.autograd.grad(g2.square().sum(), (xx2, pp2))
    torch.testing.assert_close(g, g2)
    for a, b in zip(h1, h2, strict=True):
        torch.testing.assert_close(a, b)
