"""Masked (absorbing-state) discrete diffusion: ``masked-diffusion`` (MD4 / MDLM)."""

from dgm.models.masked_diffusion.model import (
    MaskedDiffusion,
    MaskedDiffusionConfig,
    MaskedDiffusionSampleOptions,
)
from dgm.models.masked_diffusion.schedule import MaskSchedule

__all__ = [
    "MaskSchedule",
    "MaskedDiffusion",
    "MaskedDiffusionConfig",
    "MaskedDiffusionSampleOptions",
]
