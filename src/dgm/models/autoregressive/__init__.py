"""Autoregressive models: exact likelihood by the chain rule over an ordering of dimensions.

* ``made`` -- masked autoencoder for binary and categorical data (Germain et al. 2015).
* ``pixelcnn`` -- masked convolutions over images (van den Oord et al. 2016).
* ``gated-pixelcnn`` -- vertical and horizontal gated stacks, no blind spot (van den Oord et al. 2016).
* ``transformer`` -- causal Transformer over flattened pixels or any sequence, key/value cache.
* ``rnn`` -- an LSTM over the flattened sequence.

The last four share :class:`AutoregressiveModel`: one teacher-forced pass for ``log_prob`` and a
fast or naive one-dimension-at-a-time decoder for sampling and entropy coding.
"""

from dgm.models.autoregressive.gated_pixelcnn import GatedPixelCNN, GatedPixelCNNConfig
from dgm.models.autoregressive.made import MADE, MADEConfig
from dgm.models.autoregressive.pixelcnn import PixelCNN, PixelCNNConfig
from dgm.models.autoregressive.rnn import RNN, RNNConfig
from dgm.models.autoregressive.transformer import Transformer, TransformerConfig

__all__ = [
    "MADE",
    "MADEConfig",
    "GatedPixelCNN",
    "GatedPixelCNNConfig",
    "PixelCNN",
    "PixelCNNConfig",
    "RNN",
    "RNNConfig",
    "Transformer",
    "TransformerConfig",
]
