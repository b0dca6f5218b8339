"""Figures (matplotlib lives here and nowhere else)."""

from dgm.plots.conditional import guidance_figure, save_class_rows
from dgm.plots.figures import save_density, save_latent_map, save_reconstructions, save_samples

__all__ = [
    "guidance_figure", "save_class_rows", "save_density", "save_latent_map",
    "save_reconstructions", "save_samples",
]  # fmt: skip
