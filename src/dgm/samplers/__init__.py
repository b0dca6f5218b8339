"""Samplers shared by families: MCMC on a log-density (Langevin, MALA, HMC), annealed Langevin on
a score, ODE integrators. Models call them; they know nothing of models."""
