"""Building blocks shared by model families: masked linear and convolutional layers, MADE nets."""

from dgm.nn.masked import (
    ACTIVATIONS,
    MADENet,
    MaskedConv2d,
    MaskedLinear,
    get_activation,
    hidden_degrees,
    made_order,
    mask_from_degrees,
)

__all__ = [
    "ACTIVATIONS",
    "MADENet",
    "MaskedConv2d",
    "MaskedLinear",
    "get_activation",
    "hidden_degrees",
    "made_order",
    "mask_from_degrees",
]
