"""ebm family: energy-based models trained by contrastive divergence, score matching, or noise- and
flow-contrastive estimation."""

from dgm.models.ebm.ebm import EBM, EBMConfig, EBMSampleOptions

__all__ = ["EBM", "EBMConfig", "EBMSampleOptions"]
