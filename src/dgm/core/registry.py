"""The model registry: names to classes. Registering a model enrols it in the conformance suite."""

from __future__ import annotations

import difflib
from typing import Any

from dgm.core.config import build_config
from dgm.core.errors import ConfigError
from dgm.core.model import Model
from dgm.core.spec import DataSpec

__all__ = ["register", "get", "names", "build", "entries"]

_REGISTRY: dict[str, type[Model]] = {}


def register(cls: type[Model]) -> type[Model]:
    """Class decorator: add ``cls`` under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a registry name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"model name {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def _ensure_loaded() -> None:
    import dgm.models  # noqa: F401  (importing the families fills the registry)


def names() -> list[str]:
    _ensure_loaded()
    return sorted(_REGISTRY)


def entries() -> list[type[Model]]:
    _ensure_loaded()
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]


def get(name: str) -> type[Model]:
    _ensure_loaded()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"unknown model {name!r}{hint}; available models: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[name]


def build(name: str, spec: DataSpec | None = None, **hyperparameters: Any) -> Model:
    """Build model ``name`` for data described by ``spec`` with checked hyperparameters.

    >>> from dgm.core.spec import DataSpec
    >>> m = build("nsf", DataSpec((2,)), num_layers=2)
    >>> m.sample(3).shape
    torch.Size([3, 2])
    """
    cls = get(name)
    spec = spec if spec is not None else cls.test_spec
    cfg = build_config(cls.Config, hyperparameters, what=f"model {name!r}")
    return cls(spec, cfg)
