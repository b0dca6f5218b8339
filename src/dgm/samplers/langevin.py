r"""MCMC on a differentiable log-density: unadjusted Langevin (ULA), Metropolis-adjusted Langevin
(MALA) and Hamiltonian Monte Carlo (HMC), batched over independent chains (dim 0); the replay
buffer of persistent chains (:mod:`dgm.samplers.replay`) is re-exported here.

Every sampler takes a callable ``log_prob: (B, *event) -> (B,)`` (or, for ULA, its gradient) and
knows nothing of models. Gradients are taken with ``torch.enable_grad`` and ``autograd.grad`` on a
detached copy of the state, so the samplers work under ``torch.no_grad`` (a model's
``inference()`` context with ``needs_grad_for_inference = True``) and never accumulate gradients
into the parameters of whatever network defines ``log_prob``.

ULA (Roberts & Tweedie 1996), for a step size :math:`h`:

.. math::

    x_{t+1} = x_t + h \nabla \log p(x_t) + \sqrt{2h}\, \xi_t, \qquad \xi_t \sim \mathcal{N}(0, I).

It is biased for any ``h > 0``: for a Gaussian target :math:`\mathcal{N}(\mu, \Sigma)` its
stationary law is :math:`\mathcal{N}(\mu, \Sigma (I - \tfrac{h}{2}\Sigma^{-1})^{-1})` (stable for
:math:`h < 2 \lambda_{\min}(\Sigma)`), an :math:`O(h)` bias.

MALA (Roberts & Tweedie 1996; Besag 1994) uses the ULA move as a proposal
:math:`q(y \mid x) = \mathcal{N}(y; x + h\nabla\log p(x), 2h I)` and accepts it with probability
:math:`\min\{1, p(y) q(x \mid y) / (p(x) q(y \mid x))\}`, which makes :math:`p` exactly invariant.
Optimal scaling targets an acceptance rate of 0.574 (Roberts & Rosenthal 1998).

HMC (Duane et al. 1987; Neal 2011, "MCMC using Hamiltonian dynamics") draws a momentum
:math:`r \sim \mathcal{N}(0, I)`, runs ``n_leapfrog`` leapfrog steps of size :math:`\epsilon` on
:math:`H(x, r) = -\log p(x) + \tfrac12 |r|^2` and accepts with probability
:math:`\min\{1, e^{H_0 - H_L}\}`; target acceptance about 0.65 (Beskos et al. 2013).

**Step-size control** (``adapt=True``, MALA and HMC): a *global* step size shared by all chains,
tuned by the dual-averaging scheme of Hoffman & Gelman (2014, "The No-U-Turn Sampler", Alg. 5)
toward ``target_accept`` using the acceptance probability averaged over the chains at each step.
Adaptation runs during the first ``n_adapt`` steps (default: half of ``n_steps``); the step size is
then frozen at the averaged iterate, so the remaining steps are a valid (time-homogeneous) chain,
and ``acceptance_rate`` is measured over those remaining steps only. (For HMC with long
trajectories near the leapfrog stability limit, acceptance is not monotone in the step size and the
achieved rate can exceed the target: the averaged step is conservative.)

>>> x = ula(torch.zeros(4, 2), lambda x: -x, 0.1, 10, generator=torch.Generator().manual_seed(0))
>>> x.shape
torch.Size([4, 2])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from dgm.core.errors import ConfigError, DataError
from dgm.samplers.replay import ReplayBuffer  # re-exported: persistent chains for these samplers

__all__ = [
    "ReplayBuffer",
    "SamplerResult",
    "grad_and_log_prob",
    "hmc",
    "independence_mh",
    "mala",
    "ula",
]

LogProb = Callable[[Tensor], Tensor]


@dataclass
class SamplerResult:
    """Output of :func:`mala` and :func:`hmc`.

    Attributes:
        x: final states, shape ``(B, *event)``.
        acceptance_rate: fraction of accepted proposals, averaged over chains and over the
            non-adaptation steps (all steps when ``adapt=False``).
        step_size: the step size used after adaptation (the given one when ``adapt=False``);
            a float, or the per-chain tensor that was given.
        accept_per_chain: acceptance fraction of each chain over the same steps, shape ``(B,)``.
    """

    x: Tensor
    acceptance_rate: float
    step_size: float | Tensor
    accept_per_chain: Tensor


def grad_and_log_prob(log_prob: LogProb, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(log_prob(x), d log_prob / dx)``, both detached; works under ``torch.no_grad``.

    ``log_prob`` must return one value per chain, shape ``(B,)``.
    """
    with torch.enable_grad():
        x_ = x.detach().requires_grad_(True)
        lp = log_prob(x_)  # (B,)
        if lp.shape != (x.shape[0],):
            raise DataError(
                f"log_prob returned shape {tuple(lp.shape)}; a sampler needs one value per "
                f"chain, shape ({x.shape[0]},)"
            )
        (g,) = torch.autograd.grad(lp.sum(), x_)  # (B, *event)
    return lp.detach(), g.detach()


def _check(x0: Tensor, step_size: float | Tensor, n_steps: int) -> None:
    if not isinstance(x0, Tensor) or x0.dim() < 1 or not x0.is_floating_point():
        raise DataError("x0 must be a floating tensor of shape (chains, *event)")
    if n_steps < 0:
        raise ConfigError(f"n_steps must be non-negative, not {n_steps}")
    bad = (torch.as_tensor(step_size) <= 0).any() | ~torch.isfinite(
        torch.as_tensor(step_size)
    ).all()
    if bool(bad):
        raise ConfigError(f"step_size must be positive and finite, not {step_size}")


def _per_chain(step: float | Tensor, x: Tensor) -> float | Tensor:
    """A scalar stays a float; a ``(B,)`` tensor is reshaped to broadcast over event dims."""
    if isinstance(step, Tensor):
        if step.dim() == 0:
            return float(step)
        if step.shape != (x.shape[0],):
            raise ConfigError(
                f"a tensor step_size must have one entry per chain, shape ({x.shape[0]},), "
                f"not {tuple(step.shape)}"
            )
        return step.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))  # (B, 1, ...)
    return float(step)


def _randn(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def _rand(n: int, x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.rand(n, generator=generator, dtype=x.dtype, device=x.device)


def ula(
    x0: Tensor,
    grad_log_prob: Callable[[Tensor], Tensor],
    step_size: float | Tensor,
    n_steps: int,
    *,
    generator: torch.Generator | None = None,
    clip: float | None = None,
    grad_clip: float | None = None,
    precondition: Tensor | None = None,
) -> Tensor:
    r"""Unadjusted Langevin: ``x <- x + h * grad_log_prob(x) + sqrt(2h) * N(0, I)``, or with a
    preconditioner ``C`` (``M = C C^T``): ``x <- x + h M grad_log_prob(x) + sqrt(2h) C N(0, I)``,
    which keeps the same target in the small-step limit and runs a stiff direction of the target
    (an eigenvector of its Hessian with a large eigenvalue) as fast as the others when ``M`` is
    close to the target's covariance.

    Args:
        x0: initial states ``(B, *event)``; chains run independently.
        grad_log_prob: ``(B, *event) -> (B, *event)``, the score of the target. It is called on a
            detached tensor; use :func:`grad_and_log_prob` to build it from a log-density.
        step_size: ``h``, a float or a per-chain tensor of shape ``(B,)``.
        n_steps: number of updates.
        generator: source of the Gaussian noise.
        clip: if given, the state is clamped to ``[-clip, clip]`` after every step (e.g. images
            kept in their data box); this changes the chain's target and is off by default.
        grad_clip: if given, the score is clamped elementwise to ``[-grad_clip, grad_clip]``.
        precondition: ``C (D, D)`` over the flattened event (``D`` its size), e.g. a Cholesky
            factor of the target's covariance scaled to a largest eigenvalue of 1.

    Returns:
        the final states ``(B, *event)``, detached.
    """
    _check(x0, step_size, n_steps)
    h = _per_chain(step_size, x0)
    noise_scale = (2 * h) ** 0.5 if isinstance(h, Tensor) else math.sqrt(2 * h)
    x = x0.detach().clone()
    B, D = x.shape[0], x[0].numel()
    if precondition is not None:
        if precondition.shape != (D, D):
            raise DataError(
                f"precondition must be ({D}, {D}) for events of size {D}, not "
                f"{tuple(precondition.shape)}"
            )
        C = precondition.to(x)
        M = C @ C.T  # (D, D)
    for _ in range(n_steps):
        with torch.enable_grad():
            g = grad_log_prob(x).detach()  # (B, *event)
        if grad_clip is not None:
            g = g.clamp(-grad_clip, grad_clip)
        xi = _randn(x, generator)
        if precondition is not None:
            g = (g.reshape(B, D) @ M).view_as(x)  # M is symmetric
            xi = (xi.reshape(B, D) @ C.T).view_as(x)
        x = x + h * g + noise_scale * xi
        if clip is not None:
            x = x.clamp(-clip, clip)
    return x


class _DualAveraging:
    """Dual averaging of log step size toward a target acceptance (Hoffman & Gelman 2014, §3.2)."""

    def __init__(self, h0: float, target: float) -> None:
        self.mu = math.log(10 * h0)
        self.target = target
        self.h_bar = 0.0
        self.log_h = math.log(h0)
        self.log_h_avg = 0.0
        self.m = 0
        self.gamma, self.t0, self.kappa = 0.05, 10.0, 0.75

    def update(self, accept_prob: float) -> float:
        self.m += 1
        m = self.m
        w = 1.0 / (m + self.t0)
        self.h_bar = (1 - w) * self.h_bar + w * (self.target - accept_prob)
        self.log_h = self.mu - math.sqrt(m) / self.gamma * self.h_bar
        eta = m ** (-self.kappa)
        self.log_h_avg = eta * self.log_h + (1 - eta) * self.log_h_avg
        return math.exp(self.log_h)

    @property
    def final(self) -> float:
        return math.exp(self.log_h_avg) if self.m else math.exp(self.log_h)


def _setup_adapt(
    step_size: float | Tensor, adapt: bool, target: float, n_adapt: int | None, n_steps: int
) -> tuple[_DualAveraging | None, int]:
    if not adapt:
        return None, 0
    if isinstance(step_size, Tensor) and step_size.dim() > 0:
        raise ConfigError("adapt=True tunes one global step size; give a float step_size")
    if not 0 < target < 1:
        raise ConfigError(f"target_accept must lie in (0, 1), not {target}")
    n_adapt = n_steps // 2 if n_adapt is None else n_adapt
    if not 0 <= n_adapt <= n_steps:
        raise ConfigError(f"n_adapt must lie in 0..n_steps={n_steps}, not {n_adapt}")
    return _DualAveraging(float(step_size), target), n_adapt


def _accept(log_ratio: Tensor, x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Metropolis test per chain; a NaN ratio (e.g. a proposal off to infinity) is rejected."""
    log_ratio = torch.nan_to_num(log_ratio, nan=-math.inf)  # (B,)
    log_u = torch.log(_rand(x.shape[0], x, generator))  # (B,)
    return log_u < log_ratio


def _mask(accept: Tensor, x: Tensor) -> Tensor:
    return accept.reshape(-1, *([1] * (x.dim() - 1)))  # (B, 1, ...)


def _finish(
    x: Tensor, accepted: Tensor, counted: int, step: float | Tensor, da: _DualAveraging | None
) -> SamplerResult:
    per_chain = accepted / max(counted, 1)  # (B,)
    final = da.final if da is not None else step
    if isinstance(final, Tensor) and final.dim() > 0:
        final = final.reshape(-1)
    return SamplerResult(x.detach(), float(per_chain.mean()), final, per_chain)


def mala(
    x0: Tensor,
    log_prob: LogProb,
    step_size: float | Tensor,
    n_steps: int,
    *,
    generator: torch.Generator | None = None,
    adapt: bool = False,
    target_accept: float = 0.574,
    n_adapt: int | None = None,
) -> SamplerResult:
    r"""Metropolis-adjusted Langevin: exact for the target for any step size.

    Args:
        x0: initial states ``(B, *event)``.
        log_prob: ``(B, *event) -> (B,)``, an unnormalised log-density.
        step_size: ``h`` (float, or per-chain ``(B,)`` tensor when ``adapt=False``).
        n_steps: number of Metropolis-Hastings steps.
        generator: source of all randomness.
        adapt: tune a global step size by dual averaging during the first ``n_adapt`` steps.
        target_accept: acceptance rate the adaptation aims at.
        n_adapt: adaptation steps (default ``n_steps // 2``).
    """
    _check(x0, step_size, n_steps)

    def propose(x: Tensor, lp: Tensor, g: Tensor, h: float | Tensor):
        flat = (x.shape[0], -1)
        mean_x = x + h * g
        noise = (2 * h) ** 0.5 if isinstance(h, Tensor) else math.sqrt(2 * h)
        y = mean_x + noise * _randn(x, generator)
        lp_y, g_y = grad_and_log_prob(log_prob, y)
        mean_y = y + h * g_y
        h_flat = h.reshape(-1) if isinstance(h, Tensor) else h
        log_q_fwd = -((y - mean_x).reshape(flat) ** 2).sum(1) / (4 * h_flat)  # (B,)
        log_q_bwd = -((x - mean_y).reshape(flat) ** 2).sum(1) / (4 * h_flat)  # (B,)
        return y, lp_y, g_y, lp_y - lp + log_q_bwd - log_q_fwd

    return _metropolis(x0, log_prob, propose, step_size, n_steps, generator, adapt,
                       target_accept, n_adapt)  # fmt: skip


def hmc(
    x0: Tensor,
    log_prob: LogProb,
    step_size: float | Tensor,
    n_leapfrog: int,
    n_steps: int,
    *,
    generator: torch.Generator | None = None,
    adapt: bool = False,
    target_accept: float = 0.65,
    n_adapt: int | None = None,
) -> SamplerResult:
    r"""Hamiltonian Monte Carlo with an identity mass matrix and a leapfrog integrator.

    Args:
        x0: initial states ``(B, *event)``.
        log_prob: ``(B, *event) -> (B,)``, an unnormalised log-density.
        step_size: leapfrog step ``epsilon`` (float, or per-chain ``(B,)`` when not adapting).
        n_leapfrog: leapfrog steps per proposal (trajectory length ``n_leapfrog * epsilon``).
        n_steps: number of Metropolis-Hastings steps.
        generator: source of all randomness.
        adapt: tune a global step size by dual averaging during the first ``n_adapt`` steps.
        target_accept: acceptance rate the adaptation aims at.
        n_adapt: adaptation steps (default ``n_steps // 2``).
    """
    _check(x0, step_size, n_steps)
    if n_leapfrog < 1:
        raise ConfigError(f"n_leapfrog must be at least 1, not {n_leapfrog}")

    def propose(x: Tensor, lp: Tensor, g: Tensor, eps: float | Tensor):
        flat = (x.shape[0], -1)
        r = _randn(x, generator)  # (B, *event)
        h0 = -lp + 0.5 * (r.reshape(flat) ** 2).sum(1)  # (B,)
        y, g_y = x, g
        r = r + 0.5 * eps * g_y  # half step in momentum
        for i in range(n_leapfrog):
            y = y + eps * r
            lp_y, g_y = grad_and_log_prob(log_prob, y)
            r = r + (eps if i < n_leapfrog - 1 else 0.5 * eps) * g_y
        h1 = -lp_y + 0.5 * (r.reshape(flat) ** 2).sum(1)  # (B,)
        return y, lp_y, g_y, h0 - h1

    return _metropolis(x0, log_prob, propose, step_size, n_steps, generator, adapt,
                       target_accept, n_adapt)  # fmt: skip


def _metropolis(
    x0: Tensor,
    log_prob: LogProb,
    propose: Callable,
    step_size: float | Tensor,
    n_steps: int,
    generator: torch.Generator | None,
    adapt: bool,
    target_accept: float,
    n_adapt: int | None,
) -> SamplerResult:
    """The Metropolis-Hastings loop MALA and HMC share: ``propose(x, lp, g, step)`` returns the
    proposal, its log-density and gradient and the log acceptance ratio; accepted moves replace
    the state chain by chain, and dual averaging tunes the step during the first ``n_adapt``."""
    da, n_adapt = _setup_adapt(step_size, adapt, target_accept, n_adapt, n_steps)
    x = x0.detach().clone()
    lp, g = grad_and_log_prob(log_prob, x)
    accepted = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    counted = 0
    step: float | Tensor = step_size
    for t in range(n_steps):
        y, lp_y, g_y, log_ratio = propose(x, lp, g, _per_chain(step, x))
        acc = _accept(log_ratio, x, generator)
        x = torch.where(_mask(acc, x), y, x)
        lp = torch.where(acc, lp_y, lp)
        g = torch.where(_mask(acc, g), g_y, g)
        if da is not None and t < n_adapt:
            prob = torch.nan_to_num(log_ratio, nan=-math.inf).clamp(max=0).exp().mean()
            step = da.update(float(prob))
            if t == n_adapt - 1:
                step = da.final
        else:
            accepted += acc.to(x.dtype)
            counted += 1
    return _finish(x, accepted, counted, step, da)


def independence_mh(
    x0: Tensor,
    log_prob: LogProb,
    proposal_sample: Callable[[int], Tensor],
    proposal_log_prob: LogProb,
    n_steps: int,
    *,
    generator: torch.Generator | None = None,
) -> SamplerResult:
    r"""Independence Metropolis-Hastings: each step proposes ``y ~ q`` afresh, whatever the state,
    and accepts with probability :math:`\min\{1, p(y) q(x) / (p(x) q(y))\}` (Tierney 1994), so
    ``p`` is exactly invariant. Unlike MALA's and HMC's local moves, a proposal can land in any
    mode ``q`` covers, so chains move between modes separated by regions of low density; it
    mixes well where ``p / q`` is bounded, as for an energy that tilts ``q`` (a tethered EBM:
    the ratio is the tilt alone).

    Args:
        x0: initial states ``(B, *event)``.
        log_prob: ``(B, *event) -> (B,)``, an unnormalised log-density.
        proposal_sample: ``n -> (n, *event)`` draws of ``q``.
        proposal_log_prob: ``(B, *event) -> (B,)``, ``log q`` up to a constant.
        n_steps: number of proposals per chain.
        generator: source of the acceptance tests' randomness (``proposal_sample`` has its own).
    """
    _check(x0, 1.0, n_steps)
    x = x0.detach().clone()
    with torch.no_grad():
        w = log_prob(x) - proposal_log_prob(x)  # (B,) log importance weight of the state
        accepted = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for _ in range(n_steps):
            y = proposal_sample(x.shape[0]).to(x.dtype)  # (B, *event)
            w_y = log_prob(y) - proposal_log_prob(y)  # (B,)
            acc = _accept(w_y - w, x, generator)
            x = torch.where(_mask(acc, x), y, x)
            w = torch.where(acc, w_y, w)
            accepted += acc.to(x.dtype)
    return _finish(x, accepted, n_steps, 1.0, None)
