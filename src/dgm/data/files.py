"""User data from ``.npy``, ``.npz`` and ``.csv`` files.

Accepted contents:

* ``.npy``: one numeric array, split 80 / 10 / 10 into train / val / test;
* ``.npz``: either arrays ``train``, ``val`` (or ``valid``) and ``test``, each optionally with
  ``<split>_labels`` (integer class labels), or a single array that is split as above;
* ``.csv``: numbers separated by commas, one example per line; a first line that is not numeric is
  taken as a header and skipped. Always ``(N, D)``.

Shapes: ``(N, D)`` vectors, ``(N, H, W)`` images (read as ``(N, 1, H, W)``) or ``(N, C, H, W)``
images (channels first).

Kind: image-shaped data whose values are all integers in ``0 .. 255`` is discrete with
``levels = max + 1`` (at least 2, so 0/1 data is binary); vectors are discrete only when every value
is 0 or 1 (binary, ``levels = 2``); anything else is continuous.

Square images with levels take ``digits`` as their out-of-distribution partner
(:attr:`Dataset.ood_dataset`): its test images, resized, are the "other" shift of the anomaly check.

The 80 / 10 / 10 split is a fixed permutation, ``np.random.default_rng(0)``, the same in every run
so that a model's test figures never depend on a training seed. Files are read with
``allow_pickle=False``: nothing is ever unpickled.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from dgm.core.errors import DataError
from dgm.core.spec import DataSpec
from dgm.data.dataset import SPLITS, Dataset

__all__ = ["EXTENSIONS", "from_arrays", "load_file"]

EXTENSIONS = (".npy", ".npz", ".csv")
_SHAPES = "(N, D) vectors, (N, H, W) or (N, C, H, W) images"


def load_file(path: str | Path) -> Dataset:
    """Read a user's data file into a :class:`Dataset` (see the module docstring for the rules)."""
    p = Path(path).expanduser()
    ext = p.suffix.lower()
    if ext not in EXTENSIONS:
        raise DataError(
            f"cannot read {p}: unknown extension {p.suffix or '(none)'!r}; "
            f"give a .npy, .npz or .csv file"
        )
    if not p.is_file():
        raise DataError(f"data file {p} does not exist; check the path")
    if p.stat().st_size == 0:
        raise DataError(f"data file {p} is empty (0 bytes)")
    if ext == ".csv":
        splits, labels = {"all": _read_csv(p)}, {}
    else:
        splits, labels = _read_numpy(p)
    if "all" in splits:
        splits, labels = _split(p, splits["all"])
    return _to_dataset(p, splits, labels)


# ------------------------------------------------------------------------------------ readers
def _read_numpy(p: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    try:
        obj = np.load(p, allow_pickle=False)
        if isinstance(obj, np.ndarray):
            return {"all": obj}, {}
        with obj as npz:
            keys = list(npz.files)
            layout = _npz_layout(p, keys)
            splits = {split: npz[key] for split, key in layout.items()}
            labels = {
                split: npz[f"{key}_labels"]
                for split, key in layout.items()
                if f"{key}_labels" in keys
            }
            return splits, labels
    except DataError:
        raise
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise DataError(
                f"{p} holds Python objects that would need unpickling, which dgm never does; "
                "save plain numeric arrays"
            ) from None
        raise DataError(f"{p} is not a valid {p.suffix} file ({e})") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(
            f"{p} is not a valid {p.suffix} file ({e}); it is truncated or corrupt"
        ) from None


def _npz_layout(p: Path, keys: list[str]) -> dict[str, str]:
    """Map split name -> array key; ``{"all": key}`` for a single array."""
    if len(keys) == 1:
        return {"all": keys[0]}
    val = "val" if "val" in keys else "valid"
    expected = {"train", val, "test"}
    allowed = expected | {f"{k}_labels" for k in expected}
    if not expected <= set(keys) or not set(keys) <= allowed:
        raise DataError(
            f"{p} has arrays {sorted(keys)}; expected either a single array or 'train', 'val' "
            "(or 'valid') and 'test', optionally with '<split>_labels'"
        )
    return {"train": "train", "val": val, "test": "test"}


def _read_csv(p: Path) -> np.ndarray:
    try:
        lines = p.read_text().splitlines()
    except UnicodeDecodeError:
        raise DataError(
            f"{p} is not a text file; a .csv must hold comma-separated numbers"
        ) from None
    rows = [(i, line) for i, line in enumerate(lines, start=1) if line.strip()]
    if rows and not _numeric(rows[0][1]):
        rows = rows[1:]  # header
    if not rows:
        raise DataError(f"{p} has no data rows; a .csv needs one line of numbers per example")
    values = []
    width = None
    for lineno, line in rows:
        fields = line.split(",")
        try:
            values.append([float(f) for f in fields])
        except ValueError:
            bad = next(f for f in fields if not _numeric(f))
            raise DataError(
                f"{p} line {lineno} holds the non-numeric value {bad.strip()!r}; "
                "a .csv must hold only numbers (and at most one header line)"
            ) from None
        if width is None:
            width = len(fields)
        elif len(fields) != width:
            raise DataError(
                f"{p} line {lineno} has {len(fields)} values but the first data line has {width}; "
                "every row must have the same number of columns"
            )
    return np.asarray(values, dtype=np.float64)  # (N, D)


def _numeric(text: str) -> bool:
    try:
        [float(f) for f in text.split(",")]
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------------------ validation
def _as_float(p: Path, what: str, a: np.ndarray) -> np.ndarray:
    if a.dtype == np.bool_:
        a = a.astype(np.uint8)
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise DataError(f"{what} of {p} has dtype {a.dtype}; give real numbers (int or float)")
    if a.ndim not in (2, 3, 4):
        raise DataError(f"{what} of {p} has shape {a.shape}; accepted shapes are {_SHAPES}")
    if a.shape[0] == 0:
        raise DataError(f"{what} of {p} has zero rows; give at least one example")
    if np.issubdtype(a.dtype, np.floating):
        bad = ~np.isfinite(a.reshape(a.shape[0], -1)).all(axis=1)  # (N,)
        if bad.any():
            raise DataError(
                f"{what} of {p} has {int(bad.sum())} rows with NaN or Inf values (first at row "
                f"{int(np.argmax(bad))}); remove or impute them"
            )
    return a if a.ndim != 3 else a[:, None]  # (N, H, W) -> (N, 1, H, W)


def _split(
    p: Path | str, a: np.ndarray, y: np.ndarray | None = None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    a = _as_float(p, "the array", a)
    n = a.shape[0]
    if n < 3:
        raise DataError(f"{p} has {n} rows; at least 3 are needed to split it into train/val/test")
    n_held = max(1, n // 10)
    perm = np.random.default_rng(0).permutation(n)
    idx = np.split(perm, [n - 2 * n_held, n - n_held])
    labels = {} if y is None else {s: y[i] for s, i in zip(SPLITS, idx)}
    return {s: a[i] for s, i in zip(SPLITS, idx)}, labels


def _kind(arrays: list[np.ndarray]) -> tuple[str, int | None]:
    lo = min(float(a.min()) for a in arrays)
    hi = max(float(a.max()) for a in arrays)
    integral = all(np.array_equal(a, np.round(a)) for a in arrays)
    if not integral or lo < 0:
        return "continuous", None
    if arrays[0].ndim == 2:
        return ("discrete", 2) if hi <= 1 else ("continuous", None)
    if hi <= 255:
        return "discrete", max(2, int(hi) + 1)
    return "continuous", None


def _to_dataset(p: Path, splits: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> Dataset:
    arrays = {s: _as_float(p, f"the {s} split", splits[s]) for s in SPLITS}
    shapes = {s: a.shape[1:] for s, a in arrays.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(
            f"the splits of {p} have different example shapes {shapes}; they must all match"
        )
    kind, levels = _kind(list(arrays.values()))
    event_shape = arrays["train"].shape[1:]
    label_tensors: dict[str, torch.Tensor] = {}
    for s, y in labels.items():
        if (
            y.shape != (arrays[s].shape[0],)
            or not np.issubdtype(y.dtype, np.integer)
            or y.min() < 0
        ):
            raise DataError(
                f"the {s} labels of {p} must be non-negative integers of shape "
                f"({arrays[s].shape[0]},), found {y.dtype} of shape {y.shape}"
            )
        label_tensors[s] = torch.from_numpy(y.astype(np.int64))
    if label_tensors and set(label_tensors) != set(SPLITS):
        raise DataError(
            f"{p} has labels for {sorted(label_tensors)} only; give labels for every split or none"
        )
    num_classes = (
        int(max(int(y.max()) for y in label_tensors.values())) + 1 if label_tensors else None
    )
    spec = DataSpec(event_shape, kind, levels=levels, num_classes=num_classes)
    square_images = spec.is_image and event_shape[1] == event_shape[2]
    return Dataset(
        name=str(p),
        spec=spec,
        train=torch.from_numpy(arrays["train"].astype(np.float32)),
        val=torch.from_numpy(arrays["val"].astype(np.float32)),
        test=torch.from_numpy(arrays["test"].astype(np.float32)),
        train_labels=label_tensors.get("train"),
        val_labels=label_tensors.get("val"),
        test_labels=label_tensors.get("test"),
        description=f"user data from {p}: {kind}"
        + (f", {levels} levels" if levels else "")
        + f", event shape {tuple(event_shape)}",
        ood_dataset="digits" if square_images and levels is not None else None,
    )


def _numpy(value: object, what: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise DataError(f"{what} must be a torch.Tensor or a numpy array, not {type(value).__name__}")


def from_arrays(x: object, y: object = None, *, name: str = "arrays") -> Dataset:
    """A :class:`Dataset` from data in memory, read by the rules of a ``.npy`` file (module
    docstring): ``x`` a tensor or array of shape ``(N, D)``, ``(N, H, W)`` or ``(N, C, H, W)``,
    split 80 / 10 / 10 by the fixed permutation, integer images ``0..255`` discrete, 0/1 vectors
    binary, anything else continuous; ``y`` optional integer class labels ``(N,)``.

    >>> ds = from_arrays(torch.randn(100, 2))
    >>> ds.spec.kind, ds.train.shape, ds.test.shape
    ('continuous', torch.Size([80, 2]), torch.Size([10, 2]))
    """
    a = _numpy(x, "data")
    labels = None if y is None else _numpy(y, "labels y")
    if labels is not None and labels.shape != (a.shape[0],):
        raise DataError(
            f"labels y have shape {labels.shape} but the data has {a.shape[0]} rows; "
            "give one integer label per row"
        )
    splits, split_labels = _split(name, a, labels)
    return _to_dataset(name, splits, split_labels)  # type: ignore[arg-type]
