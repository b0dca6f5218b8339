"""Model families. Importing this package registers every model with :mod:`dgm.core.registry`."""

from dgm.core.registry import build, entries, get, names
from dgm.models import autoregressive, flows, vae  # noqa: F401  (registration side effects)

__all__ = ["build", "entries", "get", "names"]
