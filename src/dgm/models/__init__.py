"""Model families. Importing this package registers every model with :mod:`dgm.core.registry`."""

from dgm.core.registry import build, entries, get, names
from dgm.models import (  # noqa: F401  (registration side effects)
    autoregressive,
    diffusion,
    ebm,
    flows,
    gan,
    vae,
)

__all__ = ["build", "entries", "get", "names"]
