"""Autoregressive models: exact likelihood by the chain rule over an ordering of dimensions.

* ``made`` -- masked autoencoder for binary and categorical data (Germain et al. 2015).
"""

from dgm.models.autoregressive.made import MADE, MADEConfig

__all__ = ["MADE", "MADEConfig"]
