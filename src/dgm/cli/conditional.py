"""Labels and masks on the command line: ``dgm sample --label/--labels``, ``dgm score --labels``
and ``dgm complete``.

Label files are ``.npy`` arrays of integers, one per row (never unpickled); a label outside the
run's classes, or any label for an unconditional model, is one sentence and exit 2.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor

from dgm.api import TrainedModel, load_run
from dgm.cli.inputs import ArrayInput, read_npy
from dgm.cli.options import parse_pairs
from dgm.core.errors import ConfigError, DataError
from dgm.core.io import atomic_path

__all__ = ["cmd_complete", "labels_path", "read_labels", "check_run_labels"]


def read_labels(path: str | Path, n: int | None = None) -> Tensor:
    """Integer class labels ``(N,)`` from a ``.npy`` file (``N = n`` when given)."""
    arr = read_npy(path, "--labels")
    if arr.ndim != 1 or arr.size == 0:
        raise DataError(
            f"--labels {path} must hold one label per row, shape (N,), not {tuple(arr.shape)}"
        )
    if n is not None and arr.shape[0] != n:
        raise DataError(f"--labels {path} has {arr.shape[0]} labels for {n} rows; give one per row")
    if not np.isfinite(arr).all() or (arr != np.round(arr)).any():
        raise DataError(f"--labels {path} must hold integer class labels")
    return torch.from_numpy(arr.astype(np.int64))


def check_run_labels(tm: TrainedModel, y: Tensor | None, flag: str) -> None:
    """One sentence when labels are given to an unconditional model or lie outside its classes."""
    if y is None:
        return
    k = tm.num_classes
    if not k:
        raise DataError(
            f"{flag} needs a conditional model; model {tm.name!r} of this run was trained "
            "without labels (train it with --set conditional=true on labelled data)"
        )
    bad = (y < 0) | (y >= k)
    if bad.any():
        raise DataError(
            f"label {int(y[bad][0])} is not a class of this run; its classes are 0..{k - 1}"
        )


def labels_path(out: Path) -> Path:
    """Where the labels of samples written to ``out`` go: ``OUT_labels.npy`` beside them."""
    return out.with_name(f"{out.stem}_labels.npy")


def _read_mask(path: str, shape: tuple[int, ...], event_shape: tuple[int, ...]) -> Tensor:
    arr = read_npy(path, "--mask")
    if not np.isin(arr, (0, 1)).all():
        raise DataError(f"--mask {path} must hold 0 (missing) and 1 (observed) only")
    if tuple(arr.shape) == tuple(event_shape):
        arr = np.broadcast_to(arr, shape)
    elif arr.shape != shape and (arr.ndim < 2 or arr.size != int(np.prod(shape))):
        want = ", ".join(map(str, event_shape))
        raise DataError(
            f"--mask {path} has shape {tuple(arr.shape)}; give one of the images' shape "
            f"{shape} or one of ({want}) for every image"
        )
    return torch.from_numpy(np.array(arr, dtype=bool)).reshape(shape)


def completion_options(model: Any, given: dict[str, str]) -> dict[str, Any]:
    """``--set`` options of ``dgm complete``: the model's sampling options, checked by
    ``sample_config``, and the integer options of its ``complete`` alone (``particles`` of made,
    ``resample`` of ddpm), read as YAML."""
    own = {
        k for k, p in inspect.signature(model.complete).parameters.items()
        if p.kind is p.KEYWORD_ONLY or (p.kind is p.POSITIONAL_OR_KEYWORD and k not in ("x", "mask", "y", "generator"))
    }  # fmt: skip
    sampling = set(getattr(model.SampleOptions, "__dataclass_fields__", {}))
    extra = {k: v for k, v in given.items() if k in own - sampling}
    rest = {k: v for k, v in given.items() if k not in extra}
    options: dict[str, Any] = {}
    if rest:
        opts = model.sample_config(rest)
        options = {k: getattr(opts, k) for k in rest}
    for k, v in extra.items():
        try:
            options[k] = yaml.safe_load(v)
        except yaml.YAMLError:
            options[k] = v
    return options


def cmd_complete(args: Any) -> int:
    out = Path(args.out)
    if out.suffix != ".npy":
        raise ConfigError(f"--out must end in .npy, not {out.suffix or 'no suffix'!r}")
    run = load_run(args.run, device=args.device)
    tm = TrainedModel(run.model, run.preprocessor, run.raw_spec, run.class_counts)
    tm.require_completer()
    inputs = ArrayInput(args.input, run.raw_spec)
    x = torch.cat(list(inputs.batches(len(inputs))))  # (N, *event) raw, checked
    mask = _read_mask(args.mask, tuple(x.shape), run.raw_spec.event_shape)
    y = read_labels(args.labels, len(x)) if args.labels else None
    check_run_labels(tm, y, "--labels")
    options = completion_options(run.model, parse_pairs(args.set, "--set"))
    torch.manual_seed(args.seed)
    if y is None and tm.num_classes:
        y = tm.draw_labels(len(x))
        print(
            "dgm: note: no --labels for a conditional model; labels drawn from the training class "
            f"frequencies, written to {labels_path(out)}",
            file=sys.stderr,
        )
        with atomic_path(labels_path(out), ".npy") as tmp:
            np.save(tmp, y.numpy())
    done = tm.complete(x, mask, y, **options).to("cpu")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, ".npy") as tmp:
        np.save(tmp, done.numpy().astype(inputs.array.dtype, copy=False))
    observed = int(mask.sum())
    print(
        f"dgm: completed {len(x)} rows ({mask.numel() - observed} of {mask.numel()} entries "
        f"drawn, the observed ones unchanged) with {tm.name}; written to {out}",
        file=sys.stderr,
    )
    return 0
