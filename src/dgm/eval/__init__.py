"""Metrics: pure functions of tensors (likelihood, bits/dim, KL to analytic densities)."""

from dgm.eval.density import grid, grid_integral, kl_divergence
from dgm.eval.likelihood import bits_per_dim, log_likelihood, nll

__all__ = ["bits_per_dim", "grid", "grid_integral", "kl_divergence", "log_likelihood", "nll"]
