"""Diffusion and score-based models: ``ddpm`` (with DDIM sampling), ``ncsn`` and ``score-sde``."""

from dgm.models.diffusion.ddpm import DDPM, DDPMConfig
from dgm.models.diffusion.ncsn import NCSN, NCSNConfig
from dgm.models.diffusion.schedules import (
    VPSDE,
    DiscreteSchedule,
    eps_to_score,
    geometric_sigmas,
    make_betas,
    score_to_eps,
)
from dgm.models.diffusion.sde import ScoreSDE, ScoreSDEConfig

__all__ = [
    "DDPM",
    "NCSN",
    "VPSDE",
    "DDPMConfig",
    "NCSNConfig",
    "ScoreSDE",
    "ScoreSDEConfig",
    "DiscreteSchedule",
    "eps_to_score",
    "geometric_sigmas",
    "make_betas",
    "score_to_eps",
]
