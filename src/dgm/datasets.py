"""Public entry point for data: ``dgm.datasets.load(name)`` and ``dgm.datasets.names()``."""

from dgm.data import Dataset, load, names

__all__ = ["Dataset", "load", "names"]
