r"""Annealed importance sampling (Neal 2001, "Annealed Importance Sampling", Statistics and
Computing 11) for normalising constants: log Z of an energy-based model, or a VAE's marginal
likelihood log p(x) = log \int p(x, z) dz.

Given a normalised, tractable initial density :math:`p_0` (sampled exactly) and an unnormalised
target :math:`f`, AIS moves chains through the geometric path
:math:`f_t = p_0^{1 - \beta_t} f^{\beta_t}`, :math:`0 = \beta_0 < \dots < \beta_T = 1`, with an
MCMC kernel that leaves :math:`f_t` invariant (here MALA, :func:`dgm.samplers.langevin.mala`), and
accumulates

.. math::

    \log w = \sum_{t=1}^{T} (\beta_t - \beta_{t-1}) \big(\log f(x_{t-1}) - \log p_0(x_{t-1})\big).

Each :math:`w` is an unbiased estimate of :math:`Z = \int f`, so
:math:`\hat Z = \frac1n \sum_i w_i` is unbiased, while :math:`\log \hat Z` *under*-estimates
:math:`\log Z` in expectation (Jensen), and :math:`-E(x) - \log\hat Z` over-estimates
:math:`\log p(x)`: an estimate, not a bound in either direction one can rely on for a single run.
The reported standard error is the delta-method one, :math:`\mathrm{sd}(w) / (\sqrt n\,\bar w)`,
which is itself unreliable when the weights are heavy-tailed (see the effective sample size
:math:`(\sum w)^2 / \sum w^2`).

The MALA step size is adapted between temperatures (one global value, Robbins-Monro on the log
step toward ``target_accept`` from the previous temperature's acceptance); every kernel still
leaves its own :math:`f_t` invariant. ``groups`` runs independent problems side by side (e.g. one
per data point of a VAE, ``K`` chains each): the chains are laid out group-major.

>>> import torch
>>> from torch.distributions import Normal
>>> init = torch.randn(500, 1, generator=torch.Generator().manual_seed(0))
>>> r = ais(lambda x: -0.5 * (x[:, 0] / 2) ** 2, init, lambda x: Normal(0, 1).log_prob(x[:, 0]),
...         n_temps=50, generator=torch.Generator().manual_seed(1))
>>> abs(float(r.log_z) - math.log(2 * math.sqrt(2 * math.pi))) < 3 * float(r.stderr) + 0.02
True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dgm.core.errors import ConfigError
from dgm.core.likelihood import Likelihood
from dgm.samplers.langevin import mala

__all__ = [
    "ESS_WARN_FRACTION",
    "AISResult",
    "LogZEstimate",
    "ais",
    "ebm_log_likelihood",
    "estimate_log_z",
    "nll_stderr",
    "sigmoid_schedule",
]

LogDensity = Callable[[Tensor], Tensor]


@dataclass
class AISResult:
    """Output of :func:`ais`; ``log_z``, ``stderr`` and ``ess`` have shape ``(groups,)``.

    Attributes:
        log_z: :math:`\\log \\hat Z` per group.
        stderr: delta-method standard error of ``log_z``.
        ess: effective sample size of the importance weights per group.
        log_weights: ``(groups, chains)``.
        acceptance_rate: mean MALA acceptance over all temperatures.
        x: the final states ``(groups * chains, *event)``.
    """

    log_z: Tensor
    stderr: Tensor
    ess: Tensor
    log_weights: Tensor
    acceptance_rate: float
    x: Tensor


def sigmoid_schedule(n_temps: int, rad: float = 4.0, dtype: torch.dtype = torch.float64) -> Tensor:
    """``n_temps + 1`` inverse temperatures from 0 to 1, dense at both ends (Grosse et al. 2015)."""
    if n_temps < 1:
        raise ConfigError(f"n_temps must be at least 1, not {n_temps}")
    s = torch.sigmoid(torch.linspace(-rad, rad, n_temps + 1, dtype=dtype))  # (T+1,)
    return (s - s[0]) / (s[-1] - s[0])


def ais(
    log_target: LogDensity,
    init: Tensor,
    init_log_prob: LogDensity,
    *,
    n_temps: int = 200,
    steps_per_temp: int = 1,
    step_size: float = 0.1,
    target_accept: float = 0.65,
    groups: int = 1,
    generator: torch.Generator | None = None,
) -> AISResult:
    """Estimate :math:`\\log \\int f` from chains started at exact draws ``init`` of :math:`p_0`.

    Args:
        log_target: ``(N, *event) -> (N,)``, :math:`\\log f` (unnormalised).
        init: ``(N, *event)`` exact samples of :math:`p_0`, ``N = groups * chains``.
        init_log_prob: ``(N, *event) -> (N,)``, the *normalised* :math:`\\log p_0`.
        n_temps: number of intermediate distributions ``T``.
        steps_per_temp: MALA steps at each temperature.
        step_size: initial MALA step size (adapted between temperatures).
        target_accept: acceptance rate the step-size adaptation aims at.
        groups: independent problems laid out group-major in ``init``.
        generator: source of the MCMC randomness.
    """
    n = init.shape[0]
    if groups < 1 or n % groups:
        raise ConfigError(f"{n} chains cannot be split into {groups} equal groups")
    betas = sigmoid_schedule(n_temps, dtype=init.dtype).tolist()
    x = init.detach().clone()
    log_w = torch.zeros(n, dtype=x.dtype, device=x.device)
    h = float(step_size)
    accepts = []
    with torch.no_grad():
        for b_prev, b in zip(betas[:-1], betas[1:]):
            log_w += (b - b_prev) * (log_target(x) - init_log_prob(x))

            def log_f(z: Tensor, b: float = b) -> Tensor:
                return (1 - b) * init_log_prob(z) + b * log_target(z)

            res = mala(x, log_f, h, steps_per_temp, generator=generator)
            x = res.x
            accepts.append(res.acceptance_rate)
            h = h * math.exp(res.acceptance_rate - target_accept)
    log_w = torch.nan_to_num(log_w, nan=-math.inf).reshape(groups, n // groups)  # (G, K)
    k = log_w.shape[1]
    log_z = torch.logsumexp(log_w, 1) - math.log(k)  # (G,)
    w = torch.exp(log_w - log_w.max(1, keepdim=True).values)  # (G, K), scaled weights
    stderr = w.std(1) / (math.sqrt(k) * w.mean(1))  # (G,)
    ess = w.sum(1) ** 2 / (w**2).sum(1)  # (G,)
    return AISResult(log_z, stderr, ess, log_w, float(sum(accepts) / len(accepts)), x)


#: an effective sample size below this fraction of the chains makes AIS warn (Neal 2001, sec. 5:
#: a few dominant weights make both log Z and its delta-method error unreliable)
ESS_WARN_FRACTION = 0.1


@dataclass(frozen=True)
class LogZEstimate:
    """An AIS estimate of an energy model's :math:`\\log Z` with its diagnostics.

    The NLL ``mean(E(x)) + log Z`` then has the standard error
    ``sqrt(sem_data^2 + stderr^2)``: the spread over the data and the error of ``log Z``, which
    every example shares (:func:`nll_stderr`).
    """

    log_z: float
    stderr: float
    ess: float
    chains: int
    n_temps: int
    acceptance_rate: float

    def likelihood(self) -> Likelihood:
        """What ``-E(x) - log Z`` is: an estimate, neither exact nor a bound (AIS under-estimates
        log Z in expectation, so it tends to over-estimate log p)."""
        return Likelihood(
            "estimate",
            f"ais_log_likelihood(chains={self.chains}, temps={self.n_temps})",
            "-E(x) - log Z, log Z by annealed importance sampling",
        )

    def warning(self) -> str | None:
        """One sentence when the effective sample size is below :data:`ESS_WARN_FRACTION` of
        the chains, else ``None``."""
        if self.ess >= ESS_WARN_FRACTION * self.chains:
            return None
        return (
            f"AIS effective sample size is {self.ess:.1f} of {self.chains} chains (below "
            f"{ESS_WARN_FRACTION:.0%}), so log Z and its standard error are unreliable; "
            "use more temperatures or chains"
        )


def nll_stderr(sem_data: float, log_z_stderr: float) -> float:
    """Standard error of ``mean(E(x)) + log Z``: the data's and log Z's errors are independent.

    >>> nll_stderr(0.063, 0.652) > 0.652
    True
    """
    return math.sqrt(sem_data**2 + log_z_stderr**2)


def estimate_log_z(
    model: Any,
    *,
    chains: int = 256,
    n_temps: int = 200,
    step_size: float | None = None,
    generator: torch.Generator | None = None,
) -> LogZEstimate:
    """AIS estimate of :math:`\\log Z = \\log \\int e^{-E}` of an energy model.

    ``model`` offers ``unnormalized_log_prob(x)`` (:math:`-E`) and ``noise`` with ``sample(n)`` and
    a normalised ``log_prob`` (the EBM's Gaussian fitted to the data): :math:`p_0`.
    """
    with torch.random.fork_rng(devices=[]):
        if generator is not None:
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        init = model.noise.sample(chains)
    h = step_size if step_size is not None else float(model.config.mcmc_step_size)
    r = ais(
        model.unnormalized_log_prob,
        init,
        model.noise.log_prob,
        n_temps=n_temps,
        step_size=h,
        generator=generator,
    )
    return LogZEstimate(
        float(r.log_z[0]), float(r.stderr[0]), float(r.ess[0]), chains, n_temps, r.acceptance_rate
    )


def ebm_log_likelihood(
    model: Any,
    x: Tensor,
    *,
    chains: int = 256,
    n_temps: int = 200,
    step_size: float | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, str, dict[str, float]]:
    """AIS estimate of an energy model's :math:`\\log p(x) = -E(x) - \\log Z`
    (:func:`estimate_log_z`). Returns ``(values (B,), name, info)`` where ``info`` holds
    ``log_z``, ``log_z_stderr``, ``ess`` and ``acceptance_rate``.
    """
    z = estimate_log_z(
        model, chains=chains, n_temps=n_temps, step_size=step_size, generator=generator
    )
    with torch.enable_grad():  # energies may need autograd internally; values are detached
        values = model.unnormalized_log_prob(x).detach() - z.log_z
    info = {
        "log_z": z.log_z,
        "log_z_stderr": z.stderr,
        "ess": z.ess,
        "acceptance_rate": z.acceptance_rate,
    }
    return values, str(z.likelihood()), info
