"""dgm: deep generative models behind one contract.

>>> import dgm
>>> data = dgm.data.load("8gaussians")
>>> model = dgm.models.build("nsf", data.spec, depth=2)
>>> model.log_prob(data.test[:4]).shape
torch.Size([4])
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "TrainConfig", "data", "load", "load_run", "models", "train"]

if TYPE_CHECKING:  # pragma: no cover
    from dgm import data, models
    from dgm.api import load, load_run, train
    from dgm.train.config import TrainConfig

# Lazy attributes keep `import dgm` and `dgm --help` fast (torch is imported on first use).
_MODULES = ("models", "data", "api")
_API = ("train", "load", "load_run")


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return importlib.import_module(f"dgm.{name}")
    if name in _API:
        return getattr(importlib.import_module("dgm.api"), name)
    if name == "TrainConfig":
        return importlib.import_module("dgm.train.config").TrainConfig
    raise AttributeError(f"module 'dgm' has no attribute {name!r}")


def __dir__() -> list[str]:
    # the lazy attributes too: `dir(dgm)` and `help(dgm)` list dgm.train and dgm.load
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    # `dgm.train` is the function of dgm.api; importing the engine package dgm.train (which stays
    # importable: `from dgm.train import Trainer`) must not replace it with the module.
    def __setattr__(self, name: str, value: Any) -> None:
        if name in _API and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
