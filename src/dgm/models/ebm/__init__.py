"""ebm family: energy-based models trained by contrastive divergence, score matching, or noise- and
flow-contrastive estimation."""

from dgm.models.ebm.ebm import EBM, EBMConfig, EBMSampleOptions
from dgm.models.ebm.energy import ConvEnergy, MLPEnergy, QuadraticEnergy

__all__ = ["EBM", "ConvEnergy", "EBMConfig", "EBMSampleOptions", "MLPEnergy", "QuadraticEnergy"]
