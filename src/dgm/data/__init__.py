"""Data: analytic 2-D densities, image datasets, user files and preprocessing.

>>> from dgm.data import load
>>> data = load("digits")
>>> data.spec.levels, data.train.shape
(17, torch.Size([1000, 1, 8, 8]))
"""

from dgm.data.analytic import Density2D, get_density
from dgm.data.dataset import Dataset
from dgm.data.files import from_arrays, load_file
from dgm.data.preprocess import (
    Binarize,
    Dequantize,
    Identity,
    Preprocessor,
    default_preprocessor,
    preprocessor_from_config,
)
from dgm.data.registry import load, names

__all__ = [
    "Binarize",
    "Dataset",
    "Density2D",
    "Dequantize",
    "Identity",
    "Preprocessor",
    "default_preprocessor",
    "from_arrays",
    "get_density",
    "load",
    "load_file",
    "names",
    "preprocessor_from_config",
]
