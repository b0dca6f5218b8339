"""``dgm show MODEL`` (also ``dgm list MODEL``): every option of a model, with default and meaning.

Tables read from the code (nothing here is hand-kept): the model's ``Config`` (the ``--set`` keys
of ``dgm train``), the training options the model sets for itself (``train_defaults``), its
``SampleOptions`` (the ``--sampler`` and ``--set`` of ``dgm sample``) grouped by the sampler that
reads them, and, for a model that completes partly observed data, the options of its
``complete`` (the ``--set`` of ``dgm complete``). Meanings come from the ``Attributes:`` sections
of the dataclasses' docstrings (:func:`dgm.core.config.field_docs`) and the ``Options:`` section of
``complete``'s docstring.
"""

from __future__ import annotations

import inspect
import shutil
import textwrap
from typing import Any

from dgm.api import train_defaults_for
from dgm.core.config import FieldInfo, describe_fields, sampler_table, section_docs
from dgm.core.spec import DataSpec
from dgm.models import get

__all__ = ["cmd_show", "show_text"]


def _value(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, str):
        return v
    return repr(v)


def _clean(text: str) -> str:
    return text.replace("``", "").replace(":class:", "").replace(":mod:", "").replace("`", "")


def _table(rows: list[FieldInfo], width: int) -> list[str]:
    """One block per key: ``name  type  default`` on one line, the meaning wrapped below."""
    if not rows:
        return ["  (none)"]
    w_name = max(len(r.name) for r in rows)
    w_type = max(len(r.type) for r in rows)
    out = []
    for r in rows:
        out.append(f"  {r.name:<{w_name}}  {r.type:<{w_type}}  default {_value(r.default)}")
        meaning = _clean(r.meaning) or "(undocumented)"
        out += textwrap.wrap(meaning, width, initial_indent="      ", subsequent_indent="      ")
    return out


def show_text(name: str, width: int | None = None) -> str:
    """The text of ``dgm show NAME`` (an unknown name is the registry's one-sentence error)."""
    cls = get(name)
    width = width or max(60, min(100, shutil.get_terminal_size((100, 24)).columns))
    lines = [f"{cls.name} ({cls.family}): {cls.description}", ""]
    lines.append(f"model options (dgm train {cls.name} --set KEY=VALUE):")
    lines += _table(describe_fields(cls.Config), width)
    lines += ["", "training options this model sets for itself (flags and --train-set override):"]
    if cls.train_defaults:
        lines += [f"  {k} = {_value(v)}" for k, v in cls.train_defaults.items()]
    else:
        lines.append("  (none: the engine's defaults, dgm.train.TrainConfig)")
    if cls.large_image_train_defaults:
        lines.append("  on images above 16 pixels a side (MNIST), instead:")
        on_mnist = train_defaults_for(cls, DataSpec((1, 28, 28), kind="discrete", levels=256))
        lines += [f"    {k} = {_value(v)}" for k, v in on_mnist.items()]
    lines += ["", "sampling options (dgm sample RUN [--sampler NAME] [--set KEY=VALUE]):"]
    opts = cls.SampleOptions
    if opts is None:
        lines.append("  (none)")
        return "\n".join(lines) + "\n"
    fields = {f.name: f for f in describe_fields(opts)}
    if "sampler" in fields:
        s = fields["sampler"]
        lines += [f"  --sampler {s.type}  default {_value(s.default)}"]
        meaning = _clean(s.meaning)
        lines += textwrap.wrap(meaning, width, initial_indent="      ", subsequent_indent="      ")
        for sampler, takes in sampler_table(opts).items():
            lines.append(f"  --sampler {sampler} takes: {', '.join(takes) or 'no options'}")
    lines += _table([f for n, f in fields.items() if n != "sampler"], width)
    lines += _completion(cls, fields, width)
    return "\n".join(lines) + "\n"


#: arguments of ``complete`` that are its data, not options
_COMPLETE_ARGS = {"self", "x", "mask", "observed", "y", "generator"}


def _completion(cls: Any, sampling: dict[str, FieldInfo], width: int) -> list[str]:
    """The options of ``cls.complete`` (``dgm complete RUN X --mask M --set KEY=VALUE``): its
    own with their meaning, the sampling options it reads by name."""
    complete = getattr(cls, "complete", None)
    if complete is None:
        return []
    params = inspect.signature(complete).parameters
    docs = section_docs(complete.__doc__, "Options:")
    own, shared = [], []
    for name, p in params.items():
        if name in _COMPLETE_ARGS or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if name in sampling:
            shared.append(name)
        else:
            default = None if p.default is p.empty else p.default
            kind = getattr(p.annotation, "__name__", str(p.annotation))
            own.append(FieldInfo(name, kind, default, docs.get(name, "")))
    lines = ["", "completion options (dgm complete RUN X.npy --mask M.npy [--set KEY=VALUE]):"]
    reads = f"the sampling options {', '.join(shared)} (above)" if shared else ""
    if not own:
        return [*lines, f"  {reads or 'no options'}; no options of its own"]
    if reads:
        lines.append(f"  {reads}, and its own:")
    return lines + _table(own, width)


def cmd_show(args: Any) -> int:
    print(show_text(args.model), end="")
    return 0
