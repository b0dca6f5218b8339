r"""Monotonic rational-quadratic splines with linear tails (Durkan et al. 2019).

Durkan, Bekasov, Murray & Papamakarios, "Neural Spline Flows", NeurIPS 2019, arXiv:1906.04032.

On ``[-B, B]`` the map is made of ``K`` bins with knots ``(x^k, y^k)``, ``k = 0..K``, running from
``(-B, -B)`` to ``(B, B)``, and positive derivatives ``delta^k`` at the knots. In bin ``k``, with
``w = x^{k+1} - x^k``, ``h = y^{k+1} - y^k``, ``s = h / w`` and ``theta = (x - x^k) / w in [0, 1]``,

.. math::

    g(x) = y^k + \frac{h\,[s \theta^2 + \delta^k \theta (1 - \theta)]}
                      {s + (\delta^{k+1} + \delta^k - 2 s)\, \theta (1 - \theta)},

    g'(x) = \frac{s^2 [\delta^{k+1} \theta^2 + 2 s \theta (1 - \theta) + \delta^k (1 - \theta)^2]}
                 {[s + (\delta^{k+1} + \delta^k - 2 s)\, \theta (1 - \theta)]^2}.

The boundary derivatives are fixed to 1 and the map is the identity outside ``[-B, B]`` (linear
tails), so ``g`` is monotonic, continuously differentiable and defined on all of R. The inverse
solves ``a theta^2 + b theta + c = 0`` for the root ``theta = 2c / (-b - sqrt(b^2 - 4ac))``
(Durkan et al., appendix A.3), computed as ``(-b + sqrt(b^2 - 4ac)) / (2a)`` when ``b < 0`` so
that neither form suffers cancellation.

Numerics: widths and heights are softmax-normalised with a floor (``min_bin_width``,
``min_bin_height``), derivatives are ``min_derivative + softplus(.)``; the outermost knots are set
to exactly ``-B`` and ``B`` so the spline meets the tails without a gap; inputs are clamped into
``[-B, B]`` before the spline is evaluated, so the branch not taken by ``torch.where`` never makes
NaNs (whose gradients would leak through). Everything runs in the dtype of the inputs.

Speed: the forward map (``log_prob`` and training) runs as one :class:`torch.autograd.Function`
whose backward is derived by hand: through the rational function, the bin gather (a scatter),
the cumulative sum and the softmax. When a differentiable gradient is asked for
(``create_graph=True``, e.g. a gradient penalty), the backward recomputes the spline with plain
autograd instead, so higher derivatives stay correct. The inverse (sampling) keeps plain autograd.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from dgm.core.transforms import Univariate

__all__ = ["RQSpline", "rational_quadratic_spline"]

MIN_BIN_WIDTH = 1e-3
MIN_BIN_HEIGHT = 1e-3
MIN_DERIVATIVE = 1e-3


def _knots(unnormalized: Tensor, bound: float, minimum: float) -> Tensor:
    """Knot positions ``(..., K + 1)`` from ``-bound`` to ``bound`` with bins at least
    ``minimum * 2 * bound`` wide."""
    k = unnormalized.shape[-1]
    # softmax written out: torch.softmax over a short last dim is ~3x slower on CPU; the shift
    # by the (detached) max cancels exactly, so values and gradients are the softmax's
    e = torch.exp(unnormalized - unnormalized.detach().amax(dim=-1, keepdim=True))  # (..., K)
    frac = minimum + (1 - minimum * k) * (e / e.sum(dim=-1, keepdim=True))  # (..., K)
    inner = 2 * bound * torch.cumsum(frac[..., :-1], dim=-1) - bound  # (..., K - 1)
    ends = inner.new_full((*inner.shape[:-1], 1), bound)  # (..., 1)
    return torch.cat([-ends, inner, ends], dim=-1)  # (..., K + 1)


def _gather(t: Tensor, idx: Tensor) -> Tensor:
    return torch.gather(t, -1, idx[..., None]).squeeze(-1)


def _clamp01(theta: Tensor) -> Tensor:
    """Clamp into [0, 1] in value but not in gradient: rounding can put theta one ulp outside
    its bin, where a plain clamp would zero the derivative (and the log-det would disagree with
    autograd); far outside, the rational function could make a negative derivative."""
    return theta + (theta.clamp(0, 1) - theta).detach()


def _spline_autograd(
    inputs: Tensor,
    unnormalized_widths: Tensor,
    unnormalized_heights: Tensor,
    unnormalized_derivatives: Tensor,
    inverse: bool,
    tail_bound: float,
    min_bin_width: float,
    min_bin_height: float,
    min_derivative: float,
) -> tuple[Tensor, Tensor]:
    """The spline written as plain tensor operations (autograd differentiates it): the inverse
    map, and the reference the hand-written forward backward is tested against."""
    bound = float(tail_bound)
    inside = (inputs >= -bound) & (inputs <= bound)  # (...)
    v = inputs.clamp(-bound, bound)  # (...)

    xk_all = _knots(unnormalized_widths, bound, min_bin_width)  # (..., K + 1)
    yk_all = _knots(unnormalized_heights, bound, min_bin_height)  # (..., K + 1)
    shift = math.log(math.expm1(1 - min_derivative))  # softplus(shift) + min_derivative == 1
    inner = min_derivative + F.softplus(unnormalized_derivatives + shift)  # (..., K - 1)
    one = inner.new_ones((*inner.shape[:-1], 1))
    deriv = torch.cat([one, inner, one], dim=-1)  # (..., K + 1)

    knots = yk_all if inverse else xk_all
    idx = (v[..., None] >= knots[..., 1:-1]).sum(-1)  # (...) bin index in 0..K-1

    x0, x1 = _gather(xk_all, idx), _gather(xk_all, idx + 1)
    y0, y1 = _gather(yk_all, idx), _gather(yk_all, idx + 1)
    d0, d1 = _gather(deriv, idx), _gather(deriv, idx + 1)
    w, h = x1 - x0, y1 - y0  # (...)
    s = h / w  # (...)
    c0 = d1 + d0 - 2 * s  # (...)

    if inverse:
        r = v - y0  # (...)
        a = h * (s - d0) + r * c0
        b = h * d0 - r * c0
        c = -s * r
        sq = torch.sqrt((b.square() - 4 * a * c).clamp_min(0))
        # The root in [0, 1] is 2c / (-b - sq) = (-b + sq) / (2a). Use the first when b >= 0 and
        # the second when b < 0, so the sum in the denominator never cancels (float32 near a
        # knot of a flat bin loses ~1e-5 otherwise). Safe denominators keep the unused branch
        # finite. For a valid input with b < 0, a >= -b / 2 > 0.
        neg = b < 0
        theta = torch.where(
            neg,
            (-b + sq) / torch.where(neg, 2 * a, torch.ones_like(a)),
            2 * c / torch.where(neg, -torch.ones_like(b), -b - sq),
        )
        theta = _clamp01(theta)  # (...)
        out = x0 + theta * w
    else:
        theta = _clamp01((v - x0) / w)  # (...)
        t1 = theta * (1 - theta)
        out = y0 + h * (s * theta.square() + d0 * t1) / (s + c0 * t1)

    t1 = theta * (1 - theta)
    den = s + c0 * t1
    num = s.square() * (d1 * theta.square() + 2 * s * t1 + d0 * (1 - theta).square())
    ladj = torch.log(num) - 2 * torch.log(den)  # (...) log g'(x)
    if inverse:
        ladj = -ladj
    out = torch.where(inside, out, inputs)
    ladj = torch.where(inside, ladj, torch.zeros_like(ladj))
    return out, ladj


class _RQSplineForward(torch.autograd.Function):
    """The forward spline ``(inputs (...), wh (..., 2, K), ud (..., K - 1)) -> (out, ladj)`` with a
    hand-derived backward: the same maths as :func:`_spline_autograd` (checked against it in
    float64), about a third fewer tensor operations and no autograd graph inside. Not twice
    differentiable."""

    @staticmethod
    def forward(ctx, inputs, wh, ud, bound, min_w, min_h, min_d):
        k = wh.shape[-1]
        inside = (inputs >= -bound) & (inputs <= bound)  # (...)
        v = inputs.clamp(-bound, bound)  # (...)
        e = torch.exp(wh - wh.amax(dim=-1, keepdim=True))  # (..., 2, K)
        prob = e / e.sum(dim=-1, keepdim=True)  # (..., 2, K)
        if min_w == min_h:
            m = min_w
            scale = 1 - min_w * k
        else:
            m = wh.new_tensor([[min_w], [min_h]])  # (2, 1)
            scale = 1 - m * k
        frac = m + scale * prob  # (..., 2, K)
        knots = torch.empty((*wh.shape[:-1], k + 1), dtype=wh.dtype, device=wh.device)
        knots[..., 0] = -bound
        knots[..., k] = bound
        torch.cumsum(frac[..., :-1], dim=-1, out=knots[..., 1:k])
        knots[..., 1:k].mul_(2 * bound).sub_(bound)  # (..., 2, K + 1)
        shift = math.log(math.expm1(1 - min_d))
        z = ud + shift
        deriv = torch.ones((*ud.shape[:-1], k + 1), dtype=wh.dtype, device=wh.device)
        deriv[..., 1:k] = F.softplus(z) + min_d  # (..., K + 1)
        idx = (v.unsqueeze(-1) >= knots[..., 0, 1:k]).sum(-1, keepdim=True)  # (..., 1)
        ix = idx.unsqueeze(-2)  # (..., 1, 1)
        lo = knots.gather(-1, ix.expand(*idx.shape[:-1], 2, 1)).squeeze(-1)  # (..., 2)
        hi = knots.gather(-1, ix.expand(*idx.shape[:-1], 2, 1) + 1).squeeze(-1)  # (..., 2)
        x0, y0 = lo.unbind(-1)
        w, h = (hi - lo).unbind(-1)
        d0 = deriv.gather(-1, idx).squeeze(-1)
        d1 = deriv.gather(-1, idx + 1).squeeze(-1)
        s = h / w
        raw = (v - x0) / w
        theta = raw.clamp(0, 1)
        phi = 1 - theta
        t = theta * phi
        th2 = theta * theta
        den = s + (d1 + d0 - 2 * s) * t
        n = s * th2 + d0 * t
        out = y0 + h * n / den
        mm = d1 * th2 + 2 * s * t + d0 * phi * phi
        ladj = torch.log(s * s * mm / (den * den))
        out = torch.where(inside, out, inputs)
        ladj = torch.where(inside, ladj, torch.zeros_like(ladj))
        ctx.save_for_backward(inside, idx, raw, w, h, s, d0, d1, den, n, mm, prob, z)
        ctx.originals = (inputs, wh, ud)  # for the create_graph fallback (references, no copies)
        ctx.mins = (min_w, min_h, min_d)
        ctx.scale = scale
        ctx.bound = bound
        return out, ladj

    @staticmethod
    def backward(ctx, gout, gladj):
        if torch.is_grad_enabled():  # create_graph=True: differentiate the reference formulas
            return _RQSplineForward._backward_autograd(ctx, gout, gladj)
        inside, idx, raw, w, h, s, d0, d1, den, n, mm, prob, z = ctx.saved_tensors
        k = prob.shape[-1]
        theta = raw.clamp(0, 1)
        phi = 1 - theta
        t = theta * phi
        one2 = 1 - 2 * theta
        c0 = d1 + d0 - 2 * s
        rden = 1 / den
        rden2 = rden * rden
        rm = 1 / mm
        zero = torch.zeros((), dtype=gout.dtype, device=gout.device)
        go = torch.where(inside, gout, zero)
        gl = torch.where(inside, gladj, zero)
        dden = c0 * one2
        g_th = go * (h * ((2 * s * theta + d0 * one2) * den - n * dden) * rden2) + gl * (
            (2 * d1 * theta + 2 * s * one2 - 2 * d0 * phi) * rm - 2 * dden * rden
        )
        g_s = go * (h * (theta * theta * den - n * (1 - 2 * t)) * rden2) + gl * (
            2 / s + 2 * t * rm - 2 * (1 - 2 * t) * rden
        )
        rw = 1 / w
        g_v = g_th * rw
        g_h = go * n * rden + g_s * rw
        g_w = -(g_th * raw + g_s * s) * rw
        g_d0 = go * (h * t * (den - n) * rden2) + gl * (phi * phi * rm - 2 * t * rden)
        g_d1 = -go * (h * n * t * rden2) + gl * (theta * theta * rm - 2 * t * rden)
        g_in = torch.where(inside, g_v, gout)
        # scatter the per-element gradients into the bins: (..., 2, K) for lo (x0, y0) and
        # size (w, h); (..., K + 1) for the derivatives
        shape = (*idx.shape[:-1], 2, k + 1)
        gk = torch.zeros(shape, dtype=gout.dtype, device=gout.device)  # (..., 2, K + 1) knots
        ix = idx.unsqueeze(-2).expand(*idx.shape[:-1], 2, 1)
        g_lo = torch.stack([-g_v, go], -1)  # d/dx0 = -g_v, d/dy0 = go  (..., 2)
        g_sz = torch.stack([g_w, g_h], -1)  # (..., 2)
        gk.scatter_(-1, ix, (g_lo - g_sz).unsqueeze(-1))  # knot k: x0 - size
        gk.scatter_add_(-1, ix + 1, g_sz.unsqueeze(-1))  # knot k + 1: + size
        g_inner = gk[..., 1:k]  # (..., 2, K - 1); end knots are constants
        # inner = 2B cumsum(frac[:-1]) - B
        g_frac = (2 * ctx.bound) * g_inner.flip(-1).cumsum(-1).flip(-1)  # (..., 2, K - 1)
        g_p = torch.zeros_like(prob)
        g_p[..., :-1] = g_frac * ctx.scale
        g_wh = prob * (g_p - (prob * g_p).sum(-1, keepdim=True))  # softmax backward
        gd = torch.zeros((*idx.shape[:-1], k + 1), dtype=gout.dtype, device=gout.device)
        gd.scatter_(-1, idx, g_d0.unsqueeze(-1))
        gd.scatter_add_(-1, idx + 1, g_d1.unsqueeze(-1))
        g_ud = gd[..., 1:k] * torch.sigmoid(z)
        return g_in, g_wh, g_ud, None, None, None, None

    @staticmethod
    def _backward_autograd(ctx, gout, gladj):
        inputs, wh, ud = ctx.originals
        wanted = [t for t, need in zip((inputs, wh, ud), ctx.needs_input_grad[:3]) if need]
        out, ladj = _spline_autograd(
            inputs, wh[..., 0, :], wh[..., 1, :], ud, False, ctx.bound, *ctx.mins
        )
        grads = iter(torch.autograd.grad((out, ladj), wanted, (gout, gladj), create_graph=True))
        g = [next(grads) if need else None for need in ctx.needs_input_grad[:3]]
        return g[0], g[1], g[2], None, None, None, None


def rational_quadratic_spline(
    inputs: Tensor,
    unnormalized_widths: Tensor,
    unnormalized_heights: Tensor,
    unnormalized_derivatives: Tensor,
    *,
    inverse: bool = False,
    tail_bound: float = 3.0,
    min_bin_width: float = MIN_BIN_WIDTH,
    min_bin_height: float = MIN_BIN_HEIGHT,
    min_derivative: float = MIN_DERIVATIVE,
) -> tuple[Tensor, Tensor]:
    """Elementwise RQ spline with identity tails outside ``[-tail_bound, tail_bound]``.

    Args:
        inputs: ``(...)`` values to transform (``x`` forward, ``y`` when ``inverse``).
        unnormalized_widths, unnormalized_heights: ``(..., K)`` logits of the bin sizes.
        unnormalized_derivatives: ``(..., K - 1)`` pre-softplus derivatives at the interior
            knots, offset so that 0 gives derivative 1: all-zero parameters give the identity.
        inverse: compute ``g^{-1}`` instead of ``g``.

    Returns:
        ``(outputs (...), log |d outputs / d inputs| (...))``.
    """
    k = unnormalized_widths.shape[-1]
    if unnormalized_heights.shape[-1] != k or unnormalized_derivatives.shape[-1] != k - 1:
        raise ValueError(
            f"a {k}-bin spline needs {k} widths, {k} heights and {k - 1} derivatives, got "
            f"{unnormalized_heights.shape[-1]} heights and {unnormalized_derivatives.shape[-1]} "
            "derivatives"
        )
    if min_bin_width * k >= 1 or min_bin_height * k >= 1:
        raise ValueError(f"min_bin_width and min_bin_height must be below 1 / bins = {1 / k}")
    if inverse:
        return _spline_autograd(
            inputs,
            unnormalized_widths,
            unnormalized_heights,
            unnormalized_derivatives,
            True,
            tail_bound,
            min_bin_width,
            min_bin_height,
            min_derivative,
        )
    wh = torch.stack([unnormalized_widths, unnormalized_heights], dim=-2)  # (..., 2, K)
    return _RQSplineForward.apply(
        inputs,
        wh,
        unnormalized_derivatives,
        float(tail_bound),
        min_bin_width,
        min_bin_height,
        min_derivative,
    )


class RQSpline(Univariate):
    """The RQ spline as a :class:`Univariate` with ``3 K - 1`` parameters per element:
    ``K`` width logits, ``K`` height logits, ``K - 1`` interior derivatives."""

    def __init__(self, bins: int = 8, tail_bound: float = 3.0) -> None:
        if bins < 1:
            raise ValueError(f"bins must be at least 1, not {bins}")
        if tail_bound <= 0:
            raise ValueError(f"tail_bound must be positive, not {tail_bound}")
        self.bins = int(bins)
        self.tail_bound = float(tail_bound)
        self.num_params = 3 * self.bins - 1

    def __call__(self, x: Tensor, params: Tensor, inverse: bool = False) -> tuple[Tensor, Tensor]:
        k = self.bins
        if inverse:
            return rational_quadratic_spline(
                x,  # (B, D)
                params[..., :k],  # (B, D, K)
                params[..., k : 2 * k],  # (B, D, K)
                params[..., 2 * k :],  # (B, D, K - 1)
                inverse=True,
                tail_bound=self.tail_bound,
            )
        return _RQSplineForward.apply(
            x,  # (B, D)
            params[..., : 2 * k].unflatten(-1, (2, k)),  # (B, D, 2, K) width, height logits
            params[..., 2 * k :],  # (B, D, K - 1)
            self.tail_bound,
            MIN_BIN_WIDTH,
            MIN_BIN_HEIGHT,
            MIN_DERIVATIVE,
        )
