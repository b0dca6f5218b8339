"""Typed hyperparameter configs: dataclasses with defaults, checked on every override."""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from typing import Any, get_args, get_origin, get_type_hints

from dgm.core.errors import ConfigError

__all__ = ["build_config", "config_to_dict", "parse_value", "coerce", "yaml_problem"]


def _field_types(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _describe(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def parse_value(text: str) -> Any:
    """Parse a command-line value: YAML-like scalars and JSON lists (``3``, ``1e-3``, ``true``, ``[64,64]``)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def yaml_problem(error: Exception) -> str:
    """Where and what a YAML (or text decoding) error is, for a one-sentence message:
    ``"line 3, column 7: mapping values are not allowed here"`` (lines and columns from 1)."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = getattr(error, "problem", None) or getattr(error, "context", None)
    if isinstance(error, UnicodeDecodeError):
        return f"byte {error.start} is not UTF-8 text"
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + (problem or type(error).__name__)


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` converted to the annotated type ``tp``, or raise a ConfigError naming ``key``."""
    origin = get_origin(tp)
    args = get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        if len(errors) == 1:  # Optional[X]: X's own message (e.g. the Literal's choices)
            raise ConfigError(errors[0].replace(", not ", " or null, not ", 1))
        raise ConfigError(f"{key} must be {_describe(tp)}, not {value!r}")
    if origin is typing.Literal:
        if value in args:
            return value
        choices = ", ".join(repr(a) for a in args)
        raise ConfigError(f"{key} must be one of {choices}, not {value!r}")
    if origin in (tuple, list):
        if isinstance(value, str):
            value = parse_value(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list such as [64, 64], not {value!r}")
        inner = args[0] if args else Any
        items = [coerce(v, inner, key) for v in value]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        if value in (0, 1):
            return bool(value)
        raise ConfigError(f"{key} must be true or false, not {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be an integer, not {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be an integer, not {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be a number, not {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, not {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key} must be a string, not {value!r}")
    if tp is dict or origin is dict:
        if isinstance(value, dict):
            return value
        raise ConfigError(f"{key} must be a mapping, not {value!r}")
    return value


def build_config(cls: type, overrides: dict[str, Any] | None = None, *, what: str = "") -> Any:
    """Instantiate the dataclass ``cls`` from ``overrides``, checking every key and type.

    An unknown key raises a :class:`ConfigError` that names the valid keys (and the closest one).
    String values (from the command line) are parsed into the annotated type.
    """
    overrides = dict(overrides or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = _field_types(cls)
    unknown = [k for k in overrides if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, fields, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        label = f" for {what}" if what else ""
        raise ConfigError(
            f"unknown key {key!r}{label}{hint}; valid keys are: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for k, v in overrides.items():
        tp = hints[k]
        if isinstance(v, str) and tp is not str and get_origin(tp) is not typing.Literal:
            v = parse_value(v)
        kwargs[k] = coerce(v, tp, k)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(str(e)) from None


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON/YAML-safe dict of a config dataclass (tuples become lists)."""
    d = dataclasses.asdict(cfg)
    return json.loads(json.dumps(d))
