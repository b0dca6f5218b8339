"""Samplers shared by families: MCMC on a log-density (Langevin, MALA, HMC, independence
Metropolis-Hastings), annealed Langevin on
a score, ODE integrators. Models call them; they know nothing of models."""

from dgm.samplers.annealed import annealed_langevin
from dgm.samplers.langevin import (
    ReplayBuffer,
    SamplerResult,
    grad_and_log_prob,
    hmc,
    independence_mh,
    mala,
    ula,
)
from dgm.samplers.ode import divergence_exact, divergence_hutchinson, odeint

__all__ = [
    "ReplayBuffer",
    "SamplerResult",
    "annealed_langevin",
    "divergence_exact",
    "divergence_hutchinson",
    "grad_and_log_prob",
    "hmc",
    "independence_mh",
    "mala",
    "odeint",
    "ula",
]
