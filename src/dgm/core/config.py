"""Typed hyperparameter configs: dataclasses with defaults, checked on every override."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import re
import types
import typing
from typing import Any, get_args, get_origin, get_type_hints

from dgm.core.errors import ConfigError

__all__ = [
    "build_config",
    "config_to_dict",
    "parse_value",
    "coerce",
    "renamed_keys",
    "translate_renamed",
    "yaml_problem",
    "section_docs",
]


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


def renamed_keys(cls: type) -> dict[str, str]:
    """The keys of earlier versions of the config dataclass ``cls`` and their names now (its
    ``renamed`` class attribute, ``{}`` when it has none)."""
    return dict(getattr(cls, "renamed", None) or {})


def translate_renamed(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with every old key of ``cls`` (:func:`renamed_keys`) under its new name, and
    every key added since (``cls.added``: key -> the value that behaves as earlier versions did)
    filled in where absent.

    For configs read back from saved runs, which keep the names and defaults of the version that
    wrote them; a user's own overrides go through :func:`build_config`, where an old name is an
    error. A saved run's config lists every key of its version, so a missing added key means the
    run predates it.
    """
    renamed = renamed_keys(cls)
    out: dict[str, Any] = {}
    for k, v in values.items():
        new = renamed.get(k, k)
        if new != k and new in values:
            continue  # both spellings present: the new one wins
        out[new] = v
    for k, v in (getattr(cls, "added", None) or {}).items():
        out.setdefault(k, v)
    return out


def build_config(cls: type, overrides: dict[str, Any] | None = None, *, what: str = "") -> Any:
    """Instantiate the dataclass ``cls`` from ``overrides``, checking every key and type.

    An unknown key raises a :class:`ConfigError` that names the valid keys (and the closest one);
    a key an earlier version used (``cls.renamed``) one that names its new spelling.
    String values (from the command line) are parsed into the annotated type.
    """
    overrides = dict(overrides or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = _field_types(cls)
    unknown = [k for k in overrides if k not in fields]
    if unknown:
        key = unknown[0]
        label = f" for {what}" if what else ""
        new = renamed_keys(cls).get(key)
        if new is not None:
            raise ConfigError(f"{key!r} is now {new!r}{label}")
        close = difflib.get_close_matches(key, fields, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
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


_ENTRY = re.compile(r"^(\w+(?:\s*,\s*\w+)*)\s*:\s*(.*)$")


def _attributes(doc: str | None, section: str = "Attributes:") -> dict[str, str]:
    """``{name: text}`` from the ``Attributes:`` section (or another ``section``) of a
    Google-style docstring; an entry ``a, b: text`` documents both ``a`` and ``b``."""
    lines = inspect.cleandoc(doc or "").splitlines()
    out: dict[str, str] = {}
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == section)
    except StopIteration:
        return out
    indent, names = None, []
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if depth == 0:
            break  # the section ended
        indent = depth if indent is None else indent
        m = _ENTRY.match(line.strip())
        if depth == indent and m:
            names = [n.strip() for n in m.group(1).split(",")]
            for n in names:
                out[n] = (out[n] + " " if n in out else "") + m.group(2).strip()
        elif depth > indent:
            for n in names:
                out[n] += " " + line.strip()
        else:
            break
    return out


def field_docs(cls: type) -> dict[str, str]:
    """The meaning of every documented field of the dataclass ``cls``, from the ``Attributes:``
    sections of its docstring and its bases' (a subclass's entry wins), whitespace collapsed."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(_attributes(klass.__dict__.get("__doc__")))
    return {k: " ".join(v.split()) for k, v in docs.items()}


def section_docs(doc: str | None, section: str) -> dict[str, str]:
    """``{name: meaning}`` of the entries of a docstring's ``section`` (e.g. ``"Options:"``),
    whitespace collapsed."""
    return {k: " ".join(v.split()) for k, v in _attributes(doc, section).items()}


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    """One key of a config: its name, type, default and meaning (for ``dgm show``)."""

    name: str
    type: str
    default: Any
    meaning: str


def describe_fields(cls: type) -> list[FieldInfo]:
    """Every init field of the dataclass ``cls`` in declaration order, with type, default and the
    meaning of :func:`field_docs` (``""`` when undocumented)."""
    hints = _field_types(cls)
    docs = field_docs(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        out.append(FieldInfo(f.name, type_name(hints[f.name]), default, docs.get(f.name, "")))
    return out


def sampler_table(cls: type) -> dict[str | None, tuple[str, ...]]:
    """Which options of the sampling-options dataclass ``cls`` each sampler takes.

    A ``cls`` with a ``sampler`` field lists, in its ``by_sampler`` class attribute, the other
    fields each sampler reads (a sampler missing from it reads them all); the result maps every
    choice of ``sampler`` to its options. Without a ``sampler`` field: ``{None: every field}``.
    """
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    others = tuple(n for n in names if n != "sampler")
    if "sampler" not in names:
        return {None: others}
    choices = get_args(_field_types(cls)["sampler"])
    by = dict(getattr(cls, "by_sampler", None) or {})
    return {s: tuple(n for n in others if n in by.get(s, others)) for s in choices}


def build_sample_options(cls: type, given: dict[str, Any], *, what: str = "") -> Any:
    """:func:`build_config` for sampling options, and an option the chosen sampler does not
    take (see :func:`sampler_table`) is a :class:`ConfigError` naming the ones it does take."""
    opts = build_config(cls, given, what=f"sampling option of {what}" if what else "")
    table = sampler_table(cls)
    sampler = getattr(opts, "sampler", None)
    takes = table.get(sampler, ())
    wrong = [k for k in given if k != "sampler" and k not in takes]
    if wrong:
        label = f" of {what}" if what else ""
        raise ConfigError(
            f"sampler {sampler!r}{label} does not take {wrong[0]!r}; it takes "
            + (", ".join(takes) if takes else "no options")
        )
    return opts


def type_name(tp: Any) -> str:
    """A reader's name of the annotated type ``tp``: ``int``, ``int | null``, ``list of int``,
    ``'linear' | 'cosine'``."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else type_name(a) for a in args)
    if origin in (tuple, list):
        return f"list of {type_name(args[0]) if args else 'values'}"
    if tp is Any:
        return "any"
    return _describe(tp)
