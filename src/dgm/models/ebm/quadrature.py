r"""log Z of a 2-D energy by the midpoint rule on a grid.

.. math::

    \log Z \approx \log \sum_{ij} e^{-E(c_{ij})} + \log(h_x h_y),

over the midpoints :math:`c_{ij}` of an ``n x n`` grid on a box :math:`[a, b] \times [c, d]`. For a
smooth energy the error is :math:`O(h^2)` (the midpoint rule), and the mass outside the box is
ignored. :func:`grid_log_z` also returns the difference with the same rule on an ``n/2`` grid, a
practical (Richardson-style) indicator of the discretisation error. (Models never import
``dgm.eval``; this mirrors ``dgm.eval.density.grid`` for the one use a model needs.)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["grid_log_z"]


def _midpoints(box: Tensor, n: int) -> tuple[Tensor, float]:
    xmin, xmax, ymin, ymax = (float(v) for v in box)
    hx, hy = (xmax - xmin) / n, (ymax - ymin) / n
    k = torch.arange(n, dtype=box.dtype, device=box.device) + 0.5  # (n,)
    yy, xx = torch.meshgrid(ymin + hy * k, xmin + hx * k, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], 1), hx * hy  # (n*n, 2)


def _log_z(energy: Callable[[Tensor], Tensor], box: Tensor, n: int, batch: int) -> Tensor:
    pts, area = _midpoints(box, n)
    parts = [-energy(pts[i : i + batch]) for i in range(0, pts.shape[0], batch)]  # (b,) each
    return torch.logsumexp(torch.cat(parts), 0) + math.log(area)


@torch.no_grad()
def grid_log_z(
    energy: Callable[[Tensor], Tensor], box: Tensor, n: int = 256, batch: int = 16384
) -> tuple[Tensor, Tensor]:
    """``(log Z on an n x n grid, |log Z(n) - log Z(n/2)|)``, scalars in the dtype of ``box``.

    ``box`` is ``(xmin, xmax, ymin, ymax)``; ``energy`` maps ``(B, 2)`` to ``(B,)``.
    """
    fine = _log_z(energy, box, n, batch)
    coarse = _log_z(energy, box, max(n // 2, 1), batch)
    return fine, (fine - coarse).abs()
