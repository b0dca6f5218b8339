"""Generative adversarial networks: ``gan`` (minimax, non-saturating, WGAN-GP and hinge losses;
MLP or DCGAN-style networks; PacGAN packing; spectral norm; the generator averaged by the engine's
EMA)."""

from dgm.models.gan.gan import GAN, GANConfig, GANSampleOptions

__all__ = ["GAN", "GANConfig", "GANSampleOptions"]
