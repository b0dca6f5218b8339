"""Figures (matplotlib lives here and nowhere else)."""

from dgm.plots.figures import save_density, save_latent_map, save_reconstructions, save_samples

__all__ = ["save_density", "save_latent_map", "save_reconstructions", "save_samples"]
