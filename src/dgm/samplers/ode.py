r"""ODE integrators and divergence estimators, shared by continuous flows and diffusion models.

:func:`odeint` solves :math:`\dot y = f(t, y)` from ``t0`` to ``t1`` (forward, or backward when
``t1 < t0``) for a state ``y`` that is a tensor or a tuple of tensors:

* ``"euler"``, ``"heun"`` (the explicit trapezoidal rule, order 2: the deterministic sampler of
  Karras et al. 2022, arXiv:2206.00364, without its final-step exception) and ``"rk4"``
  (classical Runge-Kutta, order 4) take ``steps`` equal steps, with 1, 2 and 4 function
  evaluations per step;
* ``"dopri5"`` is the adaptive Dormand-Prince 5(4) pair (Dormand & Prince 1980, "A family of
  embedded Runge-Kutta formulae", J. Comp. Appl. Math. 6(1)): a 5th-order solution propagated
  with an embedded 4th-order one whose difference estimates the local error. A step is accepted
  when the error norm

  .. math::

      \max_{\text{tensors}} \sqrt{\operatorname{mean}\Big(\frac{e}{a_{tol} + r_{tol}
      \max(|y_n|, |y_{n+1}|)}\Big)^2} \le 1,

  and the next step is ``h * clamp(0.9 * err^{-1/5}, 0.2, 10)`` (Hairer, Norsett & Wanner,
  "Solving Ordinary Differential Equations I", II.4; the initial step follows their algorithm).
  The first-same-as-last property reuses the 7th stage as the next step's first.

Gradients flow by plain autograd through the steps (discretise-then-optimise; no adjoint
method): memory grows with the number of steps, and the gradient is the exact gradient of the
computed solution. Step-size control uses detached error norms, so it adds no graph.

:func:`divergence_exact` and :func:`divergence_hutchinson` compute :math:`\operatorname{tr}
(\partial f / \partial x)` for a batch, exactly with ``D`` vector-Jacobian products or as
Hutchinson's unbiased estimate :math:`\epsilon^\top (\partial f / \partial x)\, \epsilon` with
one (Hutchinson 1989; used by FFJORD, Grathwohl et al. 2019, arXiv:1810.01367).

:func:`edm_sigmas` and :func:`edm_heun` are the deterministic sampler of Karras, Aittala, Aila &
Laine 2022 ("Elucidating the Design Space of Diffusion-Based Generative Models",
arXiv:2206.00364, algorithm 1): the probability-flow ODE written in the noise level,
:math:`d\hat x / d\sigma = (\hat x - D(\hat x; \sigma)) / \sigma` with :math:`\hat x = z / m`
(the signal-scaled state of a variance-preserving model, :math:`\sigma = s / m`), integrated by
Heun's method on the grid :math:`\sigma_i = (\sigma_{max}^{1/\rho} + \tfrac{i}{N-1}
(\sigma_{min}^{1/\rho} - \sigma_{max}^{1/\rho}))^\rho`, :math:`\sigma_N = 0` (their eq. 5,
``rho = 7``), with an Euler last step to :math:`\sigma = 0`: ``2 N - 1`` network evaluations.

>>> y = odeint(lambda t, y: -y, torch.ones(2, dtype=torch.float64), 0.0, 1.0)
>>> bool(torch.allclose(y, torch.full((2,), math.exp(-1), dtype=torch.float64), atol=1e-4))
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from torch import Tensor

from dgm.core.errors import ConfigError, DgmError

__all__ = [
    "odeint", "divergence_exact", "divergence_hutchinson", "edm_sigmas", "edm_heun", "METHODS",
    "StepCapReached", "step_cap",
]  # fmt: skip

METHODS = ("dopri5", "rk4", "heun", "euler")

State = tuple[Tensor, ...]

# Dormand-Prince 5(4) tableau: nodes c, stage weights a, 5th-order weights b (the 7th stage is
# evaluated at the 5th-order solution: FSAL) and the 5th-minus-4th-order error weights.
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_E = tuple(b5 - b4 for b5, b4 in zip(_B5, _B4, strict=True))


#: a cap on dopri5's steps per solve set by :func:`step_cap` (None: each call's ``max_steps``)
_STEP_CAP: ContextVar[int | None] = ContextVar("dgm_ode_step_cap", default=None)


class StepCapReached(DgmError):
    """An adaptive solve needed more steps than the cap of :func:`step_cap`."""


@contextmanager
def step_cap(steps: int | None) -> Iterator[None]:
    """Within the block, a dopri5 solve that needs more than ``steps`` steps stops with
    :class:`StepCapReached` (a cheap bound on a phase, e.g. the scoring at the end of a run,
    whose caller reports the figure as not computed rather than computed less accurately).
    Fixed-step methods are not affected: their cost is set by their ``steps``."""
    token = _STEP_CAP.set(steps)
    try:
        yield
    finally:
        _STEP_CAP.reset(token)


# ------------------------------------------------------------------------------ state helpers
def _axpy(y: State, h: float, coeffs: Sequence[float], ks: Sequence[State]) -> State:
    """``y + h * sum_i coeffs[i] * ks[i]`` for every tensor of the state (zero weights skipped)."""
    out = []
    for j, yj in enumerate(y):
        acc = yj
        for c, k in zip(coeffs, ks, strict=False):
            if c != 0.0:
                acc = acc + (h * c) * k[j]
        out.append(acc)
    return tuple(out)


def _rms_norm(parts: State) -> float:
    """Max over tensors of the root-mean-square of each (detached), as a float."""
    return max((float(p.detach().square().mean().sqrt()) if p.numel() else 0.0) for p in parts)


class _Func:
    """Wraps the user's ``func`` to take and return tuples and a tensor time."""

    def __init__(self, func: Callable[..., Any], is_tensor: bool, ref: Tensor) -> None:
        self.func, self.is_tensor, self.ref = func, is_tensor, ref

    def __call__(self, t: float, y: State) -> State:
        tt = torch.tensor(t, dtype=self.ref.dtype, device=self.ref.device)
        out = self.func(tt, y[0] if self.is_tensor else y)
        out = (out,) if isinstance(out, Tensor) else tuple(out)
        if len(out) != len(y) or any(o.shape != s.shape for o, s in zip(out, y, strict=False)):
            raise DgmError(
                "the ODE function must return a derivative of the same structure and shapes "
                f"as the state {[tuple(s.shape) for s in y]}, got "
                f"{[tuple(o.shape) for o in out]}"
            )
        return out


# ------------------------------------------------------------------------------ the solvers
def _fixed(f: _Func, y: State, t0: float, t1: float, steps: int, method: str) -> State:
    h = (t1 - t0) / steps
    for i in range(steps):
        t = t0 + i * h
        k1 = f(t, y)
        if method == "euler":
            y = _axpy(y, h, (1.0,), (k1,))
            continue
        if method == "heun":
            k2 = f(t + h, _axpy(y, h, (1.0,), (k1,)))
            y = _axpy(y, h, (0.5, 0.5), (k1, k2))
            continue
        k2 = f(t + h / 2, _axpy(y, h, (0.5,), (k1,)))
        k3 = f(t + h / 2, _axpy(y, h, (0.0, 0.5), (k1, k2)))
        k4 = f(t + h, _axpy(y, h, (0.0, 0.0, 1.0), (k1, k2, k3)))
        y = _axpy(y, h, (1 / 6, 1 / 3, 1 / 3, 1 / 6), (k1, k2, k3, k4))
    return y


def _initial_step(
    f: _Func, y0: State, f0: State, t0: float, direction: float, rtol: float, atol: float
) -> float:
    """Hairer, Norsett & Wanner I, II.4: a first step whose Euler error is about the tolerance."""
    with torch.no_grad():
        scale = tuple(atol + rtol * y.detach().abs() for y in y0)
        d0 = _rms_norm(tuple(y.detach() / s for y, s in zip(y0, scale, strict=True)))
        d1 = _rms_norm(tuple(k.detach() / s for k, s in zip(f0, scale, strict=True)))
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        y1 = tuple(y.detach() + direction * h0 * k.detach() for y, k in zip(y0, f0, strict=True))
    f1 = f(t0 + direction * h0, y1)
    with torch.no_grad():
        diff = tuple((a.detach() - b.detach()) / s for a, b, s in zip(f1, f0, scale, strict=True))
        d2 = _rms_norm(diff) / h0
        dmax = max(d1, d2)
        h1 = max(1e-6, h0 * 1e-3) if dmax <= 1e-15 else (0.01 / dmax) ** (1 / 5)
    return min(100 * h0, h1)


def _dopri5(
    f: _Func, y: State, t0: float, t1: float, rtol: float, atol: float, max_steps: int
) -> State:
    direction = 1.0 if t1 > t0 else -1.0
    k1 = f(t0, y)
    h = _initial_step(f, y, k1, t0, direction, rtol, atol)
    t, span = t0, abs(t1 - t0)
    cap = _STEP_CAP.get()
    capped = cap is not None and cap < max_steps
    for _ in range(cap if capped else max_steps):
        remaining = abs(t1 - t)
        last = h >= remaining
        hs = direction * (remaining if last else h)  # signed step
        ks = [k1]
        for i in range(1, 7):
            yi = _axpy(y, hs, _A[i], ks)
            ks.append(f(t + _C[i] * hs, yi))
            if i == 6:
                y_new = yi  # the 7th stage sits at the 5th-order solution (FSAL)
        with torch.no_grad():
            err = _axpy(tuple(torch.zeros_like(v) for v in y), hs, _E, ks)
            scale = tuple(
                atol + rtol * torch.maximum(a.detach().abs(), b.detach().abs())
                for a, b in zip(y, y_new, strict=True)
            )
            norm = _rms_norm(tuple(e / s for e, s in zip(err, scale, strict=True)))
        if not math.isfinite(norm):
            raise DgmError(
                f"dopri5 produced non-finite values at t = {t:.4g}; the ODE diverges or its "
                "function returns NaN"
            )
        accept = norm <= 1.0
        factor = 10.0 if norm == 0.0 else min(10.0, max(0.2, 0.9 * norm ** (-1 / 5)))
        if accept:
            if last:
                return y_new
            t, y, k1 = t + hs, y_new, ks[6]
        else:
            factor = min(factor, 1.0)
        h = abs(hs) * factor
        if h < 1e-14 * max(span, 1.0):
            raise DgmError(
                f"dopri5 step size underflowed at t = {t:.4g}; the ODE is too stiff for "
                f"rtol={rtol:g}, atol={atol:g}: loosen them or use method='rk4' with fixed steps"
            )
    if capped:
        raise StepCapReached(
            f"dopri5 needed more than the cap of {cap} steps from t={t0:g} to t={t1:g} "
            f"(stopped at t={t:.4g})"
        )
    raise DgmError(
        f"dopri5 needed more than max_steps={max_steps} steps from t={t0:g} to t={t1:g} "
        f"(stopped at t={t:.4g}); loosen rtol/atol, raise max_steps, or use fixed steps with "
        "method='rk4'"
    )


def odeint(
    func: Callable[[Tensor, Any], Any],
    y0: Tensor | tuple[Tensor, ...],
    t0: float,
    t1: float,
    *,
    method: str = "dopri5",
    steps: int | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 10_000,
) -> Tensor | tuple[Tensor, ...]:
    """Integrate ``dy/dt = func(t, y)`` from ``t0`` to ``t1`` and return ``y(t1)``.

    Args:
        func: ``func(t, y) -> dy/dt`` with ``t`` a 0-dim tensor (dtype and device of the first
            state tensor) and ``y`` of the structure of ``y0``.
        y0: the initial state, a tensor or a tuple of tensors.
        t0, t1: start and end times; ``t1 < t0`` integrates backward.
        method: ``"dopri5"`` (adaptive, uses ``rtol``/``atol``/``max_steps``), ``"rk4"``,
            ``"heun"`` or ``"euler"`` (fixed steps, need ``steps``).
        steps: number of equal steps of a fixed-step method.

    Returns:
        ``y(t1)`` of the structure of ``y0`` (a tuple if ``y0`` was a list or tuple).
    """
    if method not in METHODS:
        raise ConfigError(f"unknown ODE method {method!r}; choose one of {', '.join(METHODS)}")
    is_tensor = isinstance(y0, Tensor)
    y: State = (y0,) if is_tensor else tuple(y0)
    if len(y) == 0 or not all(isinstance(v, Tensor) and v.is_floating_point() for v in y):
        raise DgmError("the ODE state y0 must be a floating-point tensor or a tuple of them")
    if method == "dopri5":
        if steps is not None:
            raise ConfigError(
                "dopri5 chooses its own steps; set rtol/atol instead of steps, or use "
                "method='rk4' or 'euler' for a fixed number of steps"
            )
        if not (rtol > 0 and atol > 0):
            raise ConfigError(f"rtol and atol must be positive, not rtol={rtol}, atol={atol}")
        if max_steps < 1:
            raise ConfigError(f"max_steps must be at least 1, not {max_steps}")
    elif steps is None or int(steps) != steps or steps < 1:
        raise ConfigError(f"method {method!r} needs steps, a positive integer, not {steps!r}")
    t0, t1 = float(t0), float(t1)
    if not (math.isfinite(t0) and math.isfinite(t1)):
        raise ConfigError(f"t0 and t1 must be finite, not {t0} and {t1}")
    f = _Func(func, is_tensor, y[0])
    if t0 == t1:
        out = y
    elif method == "dopri5":
        out = _dopri5(f, y, t0, t1, rtol, atol, max_steps)
    else:
        out = _fixed(f, y, t0, t1, int(steps), method)  # type: ignore[arg-type]
    return out[0] if is_tensor else out


# ------------------------------------------------------------------------------ divergences
def _check_pair(f: Tensor, x: Tensor) -> None:
    if f.dim() != 2 or f.shape != x.shape:
        raise DgmError(
            f"divergence needs f and x of the same shape (B, D), got {tuple(f.shape)} and "
            f"{tuple(x.shape)}"
        )


def divergence_exact(f: Tensor, x: Tensor, create_graph: bool = False) -> Tensor:
    r"""Exact :math:`\operatorname{tr}(\partial f / \partial x)` per row, shape ``(B,)``.

    ``f (B, D)`` must be computed from ``x (B, D)`` row by row (row ``b`` of ``f`` depends only on
    row ``b`` of ``x``); takes ``D`` vector-Jacobian products, so it is meant for small ``D``.
    ``create_graph=True`` keeps the result differentiable (for training).
    """
    _check_pair(f, x)
    div = torch.zeros(f.shape[0], dtype=f.dtype, device=f.device)  # (B,)
    for i in range(f.shape[1]):
        (g,) = torch.autograd.grad(f[:, i].sum(), x, create_graph=create_graph, retain_graph=True)
        div = div + g[:, i]  # (B,)
    return div


def divergence_hutchinson(f: Tensor, x: Tensor, eps: Tensor, create_graph: bool = False) -> Tensor:
    r"""Hutchinson's estimate :math:`\epsilon^\top (\partial f / \partial x)\, \epsilon` per row,
    shape ``(B,)``: unbiased for :math:`\operatorname{tr}(\partial f / \partial x)` when
    :math:`E[\epsilon \epsilon^\top] = I` (Gaussian or Rademacher noise), with one
    vector-Jacobian product whatever ``D``."""
    _check_pair(f, x)
    if eps.shape != x.shape:
        raise DgmError(f"eps has shape {tuple(eps.shape)}, but x has shape {tuple(x.shape)}")
    (g,) = torch.autograd.grad(f, x, eps, create_graph=create_graph, retain_graph=True)  # (B, D)
    return (g * eps).sum(-1)  # (B,)


# ------------------------------------------------------------------------------ EDM sampler
def edm_sigmas(sigma_min: float, sigma_max: float, steps: int, rho: float = 7.0) -> Tensor:
    """Karras et al.'s noise levels (eq. 5): ``steps`` levels from ``sigma_max`` down to
    ``sigma_min``, spaced evenly in ``sigma^(1/rho)``, then a final 0; float64 ``(steps + 1,)``."""
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ConfigError(f"steps must be a positive integer, not {steps!r}")
    if not rho > 0:
        raise ConfigError(f"rho must be positive, not {rho}")
    if not 0 < sigma_min <= sigma_max:
        raise ConfigError(f"need 0 < sigma_min <= sigma_max, not {sigma_min}, {sigma_max}")
    i = torch.arange(int(steps), dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    ramp = hi + i / max(int(steps) - 1, 1) * (lo - hi)
    return torch.cat([ramp**rho, torch.zeros(1, dtype=torch.float64)])


def edm_heun(d: Callable[[Tensor, int], Tensor], x: Tensor, sigmas: Tensor) -> tuple[Tensor, int]:
    """Heun's method for ``dx/dsigma = d(x, i)`` down the grid ``sigmas`` (decreasing, ending at
    0), where ``d(x, i) = (x - D(x; sigmas[i])) / sigmas[i]`` is the slope at level ``i`` (for a
    noise-predicting network, its prediction). The step into ``sigma = 0`` is Euler (Karras et
    al., algorithm 1). Returns ``(x at the last level, network evaluations)``."""
    nfe = 0
    levels = [float(v) for v in sigmas]
    for i in range(len(levels) - 1):
        h = levels[i + 1] - levels[i]
        d1 = d(x, i)
        nfe += 1
        x_next = x + h * d1
        if levels[i + 1] != 0.0:
            d2 = d(x_next, i + 1)
            nfe += 1
            x_next = x + h * 0.5 * (d1 + d2)
        x = x_next
    return x, nfe
