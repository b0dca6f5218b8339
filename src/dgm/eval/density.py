"""Metrics against an analytic 2-D density: forward and reverse KL, total variation, grid integrals.

All are pure functions of log-density callables and tensors. With ``p`` the true density and ``q``
the model:

* forward ``KL(p || q) = E_p[log p - log q]`` (:func:`kl_divergence` on exact data samples): the
  model's NLL minus the data entropy, large when the model misses mass of the data (mode dropping);
* reverse ``KL(q || p) = E_q[log q - log p]`` (:func:`reverse_kl` on model samples): large when the
  model puts mass where the data has little (blurry or spurious samples); infinite when ``p`` is 0
  somewhere the model samples (e.g. between the squares of ``checkerboard``);
* total variation ``TV(p, q) = 1/2 int |p - q|`` (:func:`total_variation`, midpoint rule on a grid),
  bounded by 1 and symmetric.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["grid", "grid_integral", "kl_divergence", "reverse_kl", "total_variation"]

LogDensity = Callable[[Tensor], Tensor]


def grid(
    bounds: tuple[float, float, float, float], n: int = 200, dtype: torch.dtype = torch.float64
) -> tuple[Tensor, float]:
    """Midpoints of an ``n x n`` grid over ``bounds = (xmin, xmax, ymin, ymax)`` and the cell area.

    Returns ``(points (n*n, 2), cell_area)``; points are in row-major order over (y, x).
    """
    xmin, xmax, ymin, ymax = bounds
    hx, hy = (xmax - xmin) / n, (ymax - ymin) / n
    xs = xmin + hx * (torch.arange(n, dtype=dtype) + 0.5)  # (n,)
    ys = ymin + hy * (torch.arange(n, dtype=dtype) + 0.5)  # (n,)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1), hx * hy  # (n*n, 2)


def grid_integral(
    log_prob: LogDensity,
    bounds: tuple[float, float, float, float],
    n: int = 200,
    batch_size: int = 10_000,
) -> float:
    """Midpoint-rule integral of ``exp(log_prob)`` over ``bounds``; about 1 for a normalised
    density whose mass lies inside the box."""
    pts, area = grid(bounds, n)
    total = 0.0
    for start in range(0, pts.shape[0], batch_size):
        total += float(torch.exp(log_prob(pts[start : start + batch_size]).double()).sum())
    return total * area


def kl_divergence(log_p: LogDensity, log_q: LogDensity, samples_p: Tensor) -> dict[str, float]:
    """Monte Carlo estimate of KL(p || q) = E_p[log p(x) - log q(x)] from exact samples of p.

    Returns ``{"kl": estimate, "kl_sem": standard error, "n": samples}`` in nats. With ``p`` the
    true density and ``q`` the model, this is the model's NLL minus the data entropy (the "KL gap").
    """
    diff = log_p(samples_p).double() - log_q(samples_p).double()  # (N,)
    n = diff.numel()
    return {
        "kl": float(diff.mean()),
        "kl_sem": float(diff.std() / math.sqrt(n)) if n > 1 else float("nan"),
        "n": n,
    }


def reverse_kl(log_p: LogDensity, log_q: LogDensity, samples_q: Tensor) -> dict[str, float]:
    """Monte Carlo estimate of the reverse KL(q || p) = E_q[log q(x) - log p(x)] from samples of
    the model ``q``, scored by the model's own ``log_q`` and the true ``log_p``.

    Returns ``{"kl": estimate, "kl_sem": standard error, "n": samples, "outside": fraction of
    samples where p = 0}``; ``kl`` is ``inf`` when ``outside > 0``. The estimate needs exact model
    samples and an exact model ``log_q`` (a bound would bias it).
    """
    lp = log_p(samples_q).double()  # (N,)
    out = kl_divergence(log_q, log_p, samples_q)
    outside = float((lp == -math.inf).double().mean()) if lp.numel() else 0.0
    if outside > 0:
        out.update(kl=math.inf, kl_sem=math.nan)
    return out | {"outside": outside}


def total_variation(
    log_p: LogDensity,
    log_q: LogDensity,
    bounds: tuple[float, float, float, float],
    n: int = 200,
    batch_size: int = 10_000,
) -> float:
    """Total variation distance ``1/2 int |p(x) - q(x)| dx`` by the midpoint rule on an ``n x n``
    grid over ``bounds``.

    Mass outside the box is ignored (choose a box that holds both densities); the grid must
    resolve the narrowest feature of either density (``ring8``'s modes have std 0.02: use a box
    close to the data and ``n`` of several hundred).
    """
    pts, area = grid(bounds, n)
    total = 0.0
    for start in range(0, pts.shape[0], batch_size):
        chunk = pts[start : start + batch_size]  # (b, 2)
        p = torch.exp(log_p(chunk).double())  # (b,)
        q = torch.exp(log_q(chunk).double())  # (b,)
        total += float((p - q).abs().sum())
    return 0.5 * total * area
