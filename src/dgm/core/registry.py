"""The model registry: names to classes. Registering a model enrols it in the conformance suite.

This floor only keeps the table. The families register themselves when :mod:`dgm.models` is
imported, and that package offers the look-ups (``dgm.models.get``, ``names``, ``build``), so
nothing here imports a higher floor.
"""

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


def names() -> list[str]:
    """The registered names, sorted."""
    return sorted(_REGISTRY)


def entries() -> list[type[Model]]:
    """The registered classes, sorted by name."""
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]


def get(name: str) -> type[Model]:
    """The class registered as ``name``; an unknown name is one :class:`ConfigError`."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"unknown model {name!r}{hint}; available models: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[name]


def build(name: str, spec: DataSpec | None = None, **hyperparameters: Any) -> Model:
    """Build model ``name`` for data described by ``spec`` with checked hyperparameters.

    >>> import dgm.models
    >>> from dgm.core.spec import DataSpec
    >>> m = dgm.models.build("nsf", DataSpec((2,)), depth=2)
    >>> m.sample(3).shape
    torch.Size([3, 2])
    """
    cls = get(name)
    spec = spec if spec is not None else cls.example.spec
    cfg = build_config(cls.Config, hyperparameters, what=f"model {name!r}")
    return cls(spec, cfg)
