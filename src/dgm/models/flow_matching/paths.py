r"""Probability paths and couplings of conditional flow matching.

A flow-matching model learns a velocity field :math:`v_\theta(x, t)` whose flow carries the
noise :math:`p_0 = N(0, I)` at ``t = 0`` to the data at ``t = 1`` (the convention of Lipman et
al. 2023, arXiv:2210.02747). Training regresses :math:`v_\theta` on the velocity of a
*conditional* path between a noise point :math:`x_0` and a data point :math:`x_1`; the marginal of
those conditional velocities is the field that carries :math:`p_0` to the data (Lipman et al.,
theorem 2; Tong et al. 2024, arXiv:2302.00482, proposition 3.2 for a general coupling
:math:`\pi(x_0, x_1)`).

**Paths** :math:`x_t = a_t x_1 + b_t x_0` with target :math:`u_t = \dot a_t x_1 + \dot b_t x_0`:

* ``"linear"``: :math:`a_t = t`, :math:`b_t = 1 - (1 - \sigma_{min}) t` -- the optimal-transport
  path of Lipman et al. (their eq. 20-23; with :math:`\sigma_{min} = 0` the straight line of
  rectified flow, Liu et al. 2023, arXiv:2209.03003); :math:`u_t = x_1 - (1 - \sigma_{min}) x_0`.
  At ``t = 1`` the path ends at :math:`N(x_1, \sigma_{min}^2 I)`, so the model's density is that
  of the data convolved with :math:`\sigma_{min}` noise.
* ``"vp"``: :math:`a_t = \sin(\pi t / 2)`, :math:`b_t = \cos(\pi t / 2)` -- the trigonometric,
  variance-preserving interpolant (:math:`a_t^2 + b_t^2 = 1`) of Albergo & Vanden-Eijnden 2023
  (arXiv:2209.15571).

**Couplings** of a batch of noise ``x0`` and data ``x1``:

* ``"independent"`` (I-CFM): the noise is drawn independently of the data;
* ``"ot"`` (OT-CFM, Tong et al.): the pairs are re-matched by the optimal transport plan for
  the squared Euclidean cost on the batch, exactly (``solver="exact"``: the assignment problem,
  :func:`scipy.optimize.linear_sum_assignment` warm-started by Sinkhorn potentials,
  :mod:`dgm.core.assignment`) or entropically (``"sinkhorn"``: the plan of
  Cuturi 2013, from which each data point draws its noise partner).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dgm.core.assignment import linear_assignment
from dgm.core.errors import ConfigError

__all__ = [
    "PATHS",
    "TIME_SAMPLINGS",
    "sample_times",
    "path_coefficients",
    "interpolate",
    "ot_pairs",
    "sinkhorn_plan",
    "sinkhorn_pairs",
]

PATHS = ("linear", "vp")
TIME_SAMPLINGS = ("uniform", "likelihood")
#: the smallest noise level ``1 - t`` that ``"likelihood"`` time sampling draws
SIGMA_FLOOR = 1e-3


def sample_times(
    n: int, scheme: str = "uniform", *, dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:  # fmt: skip
    r"""Training times ``t (n,)`` in ``[0, 1)``.

    * ``"uniform"``: :math:`t \sim U(0, 1)`, the flow-matching loss as Lipman et al. write it.
    * ``"likelihood"``: half the batch uniform, half at noise levels :math:`\sigma = 1 - t`
      log-uniform on ``[SIGMA_FLOOR, 1]``. For the linear path the likelihood (ELBO) weighting
      of the velocity error is :math:`t / (1 - t)`: half the rate at which the signal-to-noise
      ratio :math:`t^2 / (1 - t)^2` grows (the weighting of Kingma et al. 2021's VDM) times the
      :math:`(1 - t)^2` that turns a velocity error into an error of the predicted data; it
      piles up near the data; a density :math:`\propto 1/\sigma`
      follows it up to the factor ``t`` (the importance sampling of Song et al. 2021,
      "Maximum likelihood training of score-based diffusion models", transposed), and the
      uniform half keeps every time trained. Any positive time density has the same optimum
      (the marginal velocity): this one spends the network on the times the likelihood
      integral depends on most.
    """
    t = torch.rand(n, dtype=dtype, device=device)
    if scheme == "uniform":
        return t
    if scheme != "likelihood":
        raise ConfigError(
            f"time_sampling must be one of {', '.join(TIME_SAMPLINGS)}, not {scheme!r}"
        )
    u = torch.rand(n, dtype=dtype, device=device)
    low = 1 - SIGMA_FLOOR ** torch.rand(n, dtype=dtype, device=device)  # 1 - sigma
    return torch.where(u < 0.5, t, low)


def path_coefficients(
    path: str, t: Tensor, sigma_min: float = 0.0
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(a_t, b_t, da/dt, db/dt)`` at times ``t`` for ``x_t = a_t x_1 + b_t x_0``."""
    if path == "linear":
        one = torch.ones_like(t)
        return t, 1 - (1 - sigma_min) * t, one, -(1 - sigma_min) * one
    if path == "vp":
        h = 0.5 * math.pi
        return torch.sin(h * t), torch.cos(h * t), h * torch.cos(h * t), -h * torch.sin(h * t)
    raise ConfigError(f"path must be one of {', '.join(PATHS)}, not {path!r}")


def interpolate(
    path: str, x0: Tensor, x1: Tensor, t: Tensor, sigma_min: float = 0.0
) -> tuple[Tensor, Tensor]:
    """The point ``x_t`` and the regression target ``u_t`` for pairs ``(x0, x1)`` at ``t (B,)``."""
    a, b, da, db = (
        c.view(-1, *([1] * (x1.dim() - 1))) for c in path_coefficients(path, t, sigma_min)
    )
    return a * x1 + b * x0, da * x1 + db * x0


def _cost(x0: Tensor, x1: Tensor) -> Tensor:
    """Squared Euclidean distances ``(B0, B1)`` between flattened rows."""
    return torch.cdist(x0.flatten(1).double(), x1.flatten(1).double()).square()


def ot_pairs(x0: Tensor, x1: Tensor, warm_start: bool = True) -> Tensor:
    """The permutation ``perm`` such that ``(x0[perm], x1)`` is the minibatch optimal transport
    assignment for the squared Euclidean cost, exact (float64; ties broken by scipy's solver).
    ``warm_start`` steers the solver with approximate Sinkhorn potentials first, which changes
    its speed, not its optimum (:mod:`dgm.core.assignment`)."""
    a = x1.detach().flatten(1).cpu().double().numpy()  # rows: data points
    b = x0.detach().flatten(1).cpu().double().numpy()  # columns: noise points
    # |a - b|^2 by one matmul (cheaper than cdist; the same optimum as the dot-product cost)
    cost = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    perm = linear_assignment(cost, warm_start=warm_start)  # noise partner of each data point
    return torch.as_tensor(perm, device=x0.device)


def sinkhorn_plan(
    x0: Tensor, x1: Tensor, reg: float, max_iters: int = 1000, tol: float = 1e-6
) -> Tensor:
    """The entropic optimal transport plan ``(B0, B1)`` (float64, rows sum to 1/B0, columns to
    1/B1) for the squared Euclidean cost, with regularisation ``reg`` times the mean cost
    (log-domain Sinkhorn iterations, Cuturi 2013, "Sinkhorn distances", NeurIPS), iterated
    until the row sums are within ``tol`` of their target relative to it (or ``max_iters``)."""
    cost = _cost(x0, x1)
    eps = reg * float(cost.mean().clamp_min(1e-12))
    n0, n1 = cost.shape
    log_a = torch.full((n0,), -math.log(n0), dtype=cost.dtype, device=cost.device)
    log_b = torch.full((n1,), -math.log(n1), dtype=cost.dtype, device=cost.device)
    f = torch.zeros_like(log_a)
    g = torch.zeros_like(log_b)
    k = -cost / eps
    for _ in range(max_iters):
        f = log_a - torch.logsumexp(k + g[None, :], dim=1)
        g = log_b - torch.logsumexp(k + f[:, None], dim=0)
        # after the column update the columns are exact; stop when the rows are too
        rows = torch.logsumexp(k + f[:, None] + g[None, :], dim=1)
        if float((rows - log_a).abs().max()) < tol:
            break
    return torch.exp(k + f[:, None] + g[None, :])


def sinkhorn_pairs(
    x0: Tensor,
    x1: Tensor,
    reg: float,
    generator: torch.Generator | None = None,
    max_iters: int = 1000,
) -> Tensor:
    """For each data point, a noise partner drawn from its column of the Sinkhorn plan."""
    plan = sinkhorn_plan(x0, x1, reg, max_iters=max_iters)  # (B0, B1)
    probs = (plan / plan.sum(0, keepdim=True)).T  # (B1, B0): partner distribution per data point
    return torch.multinomial(probs.float(), 1, generator=generator).squeeze(1)
