"""Metrics against an analytic 2-D density: KL divergence and the grid integral of the model.

Both are pure functions of a log-density callable and tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["grid", "grid_integral", "kl_divergence"]

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
