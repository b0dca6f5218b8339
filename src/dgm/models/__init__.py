"""Model families. Importing this package registers every model, so the look-ups here
(``get``, ``names``, ``entries``, ``build``) see them all; use these rather than
:mod:`dgm.core.registry`, whose table is empty until the families are imported."""

from dgm.core.registry import build, entries, get, names
from dgm.models import (  # noqa: F401  (registration side effects)
    autoregressive,
    diffusion,
    ebm,
    flow_matching,
    flows,
    gan,
    masked_diffusion,
    vae,
)

__all__ = ["build", "entries", "get", "names"]
