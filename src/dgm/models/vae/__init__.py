"""Variational autoencoders: ``vae`` (ELBO) and ``iwae`` (importance-weighted bound)."""

from dgm.models.vae.vae import IWAE, VAE, IWAEConfig, VAEConfig, VAESampleOptions

__all__ = ["IWAE", "VAE", "IWAEConfig", "VAEConfig", "VAESampleOptions"]
