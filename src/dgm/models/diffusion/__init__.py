"""Diffusion and score-based models: ``ddpm`` (with DDIM sampling), ``ncsn`` and ``score-sde``."""

from dgm.models.diffusion.ddpm import DDPM, DDPMConfig
from dgm.models.diffusion.ncsn import NCSN, NCSNConfig
from dgm.models.diffusion.sde import ScoreSDE, ScoreSDEConfig

__all__ = ["DDPM", "NCSN", "DDPMConfig", "NCSNConfig", "ScoreSDE", "ScoreSDEConfig"]
