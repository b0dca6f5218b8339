"""The engine that trains every family, and its checkpoints.

The package is also callable: ``dgm.train(model, data, out, **options)`` is
:func:`dgm.api.train` (a module and a function cannot otherwise share the name ``dgm.train``).
"""

import sys
import types
from typing import Any

from dgm.train.config import TrainConfig
from dgm.train.engine import Trainer

__all__ = ["TrainConfig", "Trainer"]


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from dgm.api import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
