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


@pytest.mark.parametrize("batch", [(7,), (2, 3, 4)])
def test_any_batch_shape_and_strided_parameters_match_the_reference(batch):
    # the fast path flattens the elements and transposes the parameters: other batch shapes
    # and a non-contiguous parameter tensor must give the reference's values and gradients
    g = torch.Generator().manual_seed(11)
    k = 5
    x = 5 * torch.rand(*batch, generator=g, dtype=D64) - 2.5  # inside and in the tails
    wide = 2 * torch.randn(*batch, 3 * k + 3, generator=g, dtype=D64)
    weights = torch.randn(2, *batch, dtype=D64)

    def run(fast: bool):
        xx, ww = x.clone().requires_grad_(), wide.clone().requires_grad_()
        pp = ww[..., 2 : 3 * k + 1]  # (..., 3K - 1), not contiguous
        assert not pp.is_contiguous()
        if fast:
            out, ladj = RQSpline(k, 2.0)(xx, pp)
        else:
            w, h, d = pp[..., :k], pp[..., k : 2 * k], pp[..., 2 * k :]
            out, ladj = _spline_autograd(xx, w, h, d, False, 2.0, MIN_BIN_WIDTH, MIN_BIN_HEIGHT,
                                         MIN_DERIVATIVE)  # fmt: skip
        loss = (weights[0] * out + weights[1] * ladj).sum()
        return (out, ladj, *torch.autograd.grad(loss, (xx, ww)))

    for a, b in zip(run(True), run(False), strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_tails_bounds_and_nan_pass_through():
    k, bound = 4, 3.0
    params = torch.randn(5, 3 * k - 1, dtype=D64, generator=torch.Generator().manual_seed(3))
    x = torch.tensor([-7.0, -bound, 0.5, bound, float("nan")], dtype=D64)
    out, ladj = RQSpline(k, bound)(x, params)
    assert out[0] == -7.0 and ladj[0] == 0  # left tail: identity
    torch.testing.assert_close(out[[1, 3]], torch.tensor([-bound, bound], dtype=D64))  # knots
    assert ladj[2] != 0
    assert out[4].isnan()  # bad input stays visible instead of becoming a number


def test_constants_first_built_in_inference_mode_still_train():
    # the constant cache is filled on first use; tensors made under inference_mode could not be
    # used by autograd later, so the cache must build plain tensors
    k, bound = 3, 1.7  # a setting no other test uses: the cache starts empty for it
    params = torch.randn(6, 2, 3 * k - 1, dtype=D64)
    x = torch.randn(6, 2, dtype=D64)
    with torch.inference_mode():
        RQSpline(k, bound)(x, params)
    pp = params.clone().requires_grad_()
    out, ladj = RQSpline(k, bound)(x, pp)
    (g,) = torch.autograd.grad((out + ladj).sum(), pp)
    assert g.isfinite().all() and g.abs().sum() > 0
