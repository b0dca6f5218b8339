"""The ``dgm`` command line: train, sample, score, eval, list."""

from dgm.cli.main import main

__all__ = ["main"]
