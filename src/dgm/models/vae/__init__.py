"""Variational autoencoders: ``vae`` (ELBO) and ``iwae`` (importance-weighted bound)."""

from dgm.models.vae.likelihoods import (
    Bernoulli,
    Categorical,
    DiscretizedLogistic,
    Gaussian,
    Likelihood,
    make_likelihood,
)
from dgm.models.vae.vae import IWAE, VAE, IWAEConfig, VAEConfig, gaussian_kl

__all__ = [
    "IWAE",
    "VAE",
    "Bernoulli",
    "Categorical",
    "DiscretizedLogistic",
    "Gaussian",
    "IWAEConfig",
    "Likelihood",
    "VAEConfig",
    "gaussian_kl",
    "make_likelihood",
]
