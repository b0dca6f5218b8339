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
        return rational_quadratic_spline(
            x,  # (B, D)
            params[..., :k],  # (B, D, K)
            params[..., k : 2 * k],  # (B, D, K)
            params[..., 2 * k :],  # (B, D, K - 1)
            inverse=inverse,
            tail_bound=self.tail_bound,
        )
