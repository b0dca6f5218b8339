"""dgm: deep generative models behind one contract.

>>> import dgm
>>> data = dgm.datasets.load("8gaussians")
>>> model = dgm.models.build("nsf", data.spec, num_layers=2)
>>> model.log_prob(data.test[:4]).shape
torch.Size([4])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "datasets", "load", "models", "train"]

if TYPE_CHECKING:  # pragma: no cover
    from dgm import datasets, models


def __getattr__(name: str) -> Any:
    # Lazy imports keep `import dgm` and `dgm --help` fast.
    import importlib

    if name in ("models", "datasets", "api", "train"):
        # dgm.train is the engine package, callable as dgm.api.train
        return importlib.import_module(f"dgm.{name}")
    if name == "load":
        from dgm.api import load

        return load
    raise AttributeError(f"module 'dgm' has no attribute {name!r}")
