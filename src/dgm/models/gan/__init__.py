"""Generative adversarial networks: ``gan`` (minimax, non-saturating, WGAN-GP and hinge losses;
MLP or DCGAN-style networks; PacGAN packing; spectral norm; EMA of the generator)."""

from dgm.models.gan.gan import GAN, GANConfig
from dgm.models.gan.losses import (
    LOSSES,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    r1_penalty,
)
from dgm.models.gan.networks import (
    ConvDiscriminator,
    ConvGenerator,
    MLPDiscriminator,
    MLPGenerator,
    pack_samples,
)

__all__ = [
    "GAN",
    "LOSSES",
    "ConvDiscriminator",
    "ConvGenerator",
    "GANConfig",
    "MLPDiscriminator",
    "MLPGenerator",
    "discriminator_loss",
    "generator_loss",
    "gradient_penalty",
    "pack_samples",
    "r1_penalty",
]
