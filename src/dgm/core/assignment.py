r"""The exact linear assignment problem, warm-started by staged Sinkhorn iterations.

For a square cost matrix :math:`C` the assignment :math:`\sigma` minimising
:math:`\sum_i C_{i \sigma(i)}` is unchanged when a constant :math:`f_i` is subtracted from each
row and :math:`g_j` from each column: every assignment uses each row and each column exactly
once, so every total drops by the same :math:`\sum_i f_i + \sum_j g_j`. A shortest augmenting
path solver (scipy's :func:`~scipy.optimize.linear_sum_assignment`, Crouse 2016, IEEE TAES 52(4),
which starts from zero dual variables) then does far less work when :math:`f, g` are already close
to optimal dual potentials: each row's search stops after the few columns whose reduced cost
:math:`C_{ij} - f_i - g_j` is near zero instead of growing a long alternating tree.

:func:`linear_assignment` gets such potentials cheaply from entropic optimal transport: Sinkhorn
iterations (Cuturi 2013, NeurIPS) in the kernel domain, two matrix-vector products each, whose
scalings :math:`\varepsilon \log u, \varepsilon \log v` converge to the entropic dual
potentials, within :math:`O(\varepsilon \log n)` of the exact ones. A small
:math:`\varepsilon` needs many iterations from a cold start, so the regularisation is lowered in
stages (epsilon scaling), each stage's potentials absorbed into the cost before the next
(Schmitzer 2019, SIAM J. Sci. Comput. 41(3), "Stabilized sparse scaling algorithms for entropy
regularized transport problems"): 4 stages of 10 iterations from 0.1 to 0.005 times the mean
reduced cost leave the optimal pairs within a few :math:`\varepsilon` of tight, where one stage
at 0.05 left the solver long searches. The potentials only steer the search: the answer is the
exact optimum of the shifted matrix, hence of :math:`C`, whatever their quality (up to float64
rounding of the shift; when they are not finite the shift is dropped). Rectangular problems
leave some columns unused, so there a column shift would change the optimum: they are solved
unshifted.

At batch 256 on the 2-D densities against :math:`N(0, I)`, one thread of the AVX2 host of
2026-12-07 (benchmarks/flow_matching_2d.py, its ``breakdown``): scipy on the raw cost 4.9-10.1
ms, warm-started 3.1-3.5 ms with building the cost (torchcfm's POT plan: 6.6-7.7 ms). Against
the one-stage warm start it replaces (one stage at 0.05, 20 iterations), dgm's OT-CFM training
step went from 1.32-1.34x to 1.62-1.64x torchcfm's (``benchmarks/peers.py --pairs fm``).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

__all__ = ["linear_assignment", "sinkhorn_potentials"]

#: the first and last regularisation of the warm start's Sinkhorn stages (times the mean reduced
#: cost), how many stages and iterations per stage (benchmarks/flow_matching_2d.py: the pieces)
EPS, STAGES, ITERS = (0.1, 0.005), 4, 10


def sinkhorn_potentials(
    cost: np.ndarray,
    eps: tuple[float, float] = EPS,
    stages: int = STAGES,
    iters: int = ITERS,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Approximate dual potentials ``(f, g)`` of the assignment problem on the square ``cost``:
    Sinkhorn iterations with uniform marginals, ``iters`` at each of ``stages`` regularisations
    from ``eps[0]`` down to ``eps[1]`` times the mean reduced cost (geometrically), each stage's
    scalings absorbed into the potentials before the next (the kernel is of the reduced cost
    ``C - f - g``, so it stays near 1 on the pairs that matter however small the
    regularisation). The kernel is float32, its exponent clipped at -60 (no denormals to slow
    the products); the potentials only steer the exact solver. ``None`` when they are not
    finite or the cost is constant."""
    c = np.asarray(cost, dtype=np.float32)
    f = c.min(axis=1)
    red = c - f[:, None]  # (n, n) >= 0, a zero in each row
    g = red.min(axis=0)
    red -= g[None, :]  # and in each column
    scale = float(red.mean())
    if not (np.isfinite(scale) and scale > 0):
        return None
    kernel = np.empty_like(red)
    red_t, kernel_t = torch.from_numpy(red), torch.from_numpy(kernel)  # the same memory
    n1 = red.shape[1]
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        for e in np.geomspace(eps[0], eps[1], stages) * scale:
            e32 = np.float32(e)
            # torch's fused passes: 1.7x numpy's multiply, maximum and exp here
            torch.mul(red_t, -1.0 / e, out=kernel_t).clamp_(min=-60.0).exp_()
            v = np.ones(n1, dtype=np.float32)
            for _ in range(iters):
                u = 1.0 / (kernel @ v)
                v = 1.0 / (u @ kernel)
            du, dv = e32 * np.log(u), e32 * np.log(v)
            if not (np.isfinite(du).all() and np.isfinite(dv).all()):
                return None
            f += du
            g += dv
            red -= du[:, None]
            red -= dv[None, :]
    return f.astype(np.float64), g.astype(np.float64)


def linear_assignment(cost: np.ndarray, warm_start: bool = True) -> np.ndarray:
    """The columns ``cols`` (one per row, distinct) minimising ``cost[i, cols[i]]`` summed over
    the rows, exactly, for a ``(n0, n1)`` cost with ``n0 <= n1``. ``warm_start`` shifts a square
    cost by :func:`sinkhorn_potentials` first (the same optimum, found faster)."""
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2 or cost.shape[0] > cost.shape[1]:
        raise ValueError(f"cost must be a (n0, n1) matrix with n0 <= n1, not shape {cost.shape}")
    if warm_start and cost.shape[0] == cost.shape[1] and cost.shape[0] > 1:
        potentials = sinkhorn_potentials(cost)
        if potentials is not None:
            f, g = potentials
            cost = cost - f[:, None] - g[None, :]
    rows, cols = linear_sum_assignment(cost)
    out = np.empty(cost.shape[0], dtype=np.int64)
    out[rows] = cols
    return out
