"""Reading the files users hand to ``dgm score``: checked, streamed, never unpickled.

A ``.npy`` file is memory-mapped and read one batch at a time, so scoring a million rows needs
memory for one batch, not for the file. Each batch is checked as it is read (shape, NaN/Inf,
integer levels for discrete data) and a bad row is reported by its index in the file.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from dgm.core.errors import DataError
from dgm.core.spec import DataSpec

__all__ = ["ArrayInput", "read_npy"]


def read_npy(path: str | Path, what: str, mmap: bool = False) -> np.ndarray:
    """A numeric ``.npy`` array, read without pickles (memory-mapped with ``mmap``); else one
    sentence naming ``what`` (the flag or argument the file was given as)."""
    p = Path(path)
    if p.suffix != ".npy":
        raise DataError(f"{what} must be a .npy file, not {p.name!r}")
    if not p.is_file():
        raise DataError(f"{what} file {p} does not exist")
    try:
        arr = np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"cannot read {p} as a numeric array ({e})") from None
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{p} holds {arr.dtype} values; {what} must be numbers")
    return arr


class ArrayInput:
    """The rows of a ``.npy`` or ``.csv`` file, checked against a run's data spec."""

    def __init__(self, path: str | Path, spec: DataSpec) -> None:
        p = Path(path)
        self.path, self.spec = p, spec
        if not p.is_file():
            raise DataError(f"input file {p} does not exist")
        if p.suffix == ".npy":
            arr = read_npy(p, "input", mmap=True)
        elif p.suffix == ".csv":
            try:
                arr = np.loadtxt(p, delimiter=",", ndmin=2)
            except (ValueError, OSError) as e:
                raise DataError(f"cannot read {p} as a numeric array ({e})") from None
        else:
            raise DataError(
                f"input must be a .npy or .csv file, not {p.suffix or 'a file without suffix'}"
            )
        if arr.ndim == 0 or arr.shape[0] == 0 or arr.size == 0:
            raise DataError(f"{p} is empty; give at least one example")
        if tuple(arr.shape[1:]) != spec.event_shape and (
            arr.ndim < 2 or math.prod(arr.shape[1:]) != spec.num_dims
        ):
            want = ", ".join(map(str, spec.event_shape))
            raise DataError(
                f"{p} has shape {tuple(arr.shape)}, but this model takes (N, {want}) "
                f"or (N, {spec.num_dims})"
            )
        self.array = arr

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Checked batches ``(b, *event_shape)`` in float64, in file order."""
        spec = self.spec
        for start in range(0, len(self), batch_size):
            chunk = np.array(self.array[start : start + batch_size], dtype=np.float64)  # a copy
            x = torch.from_numpy(chunk).reshape(chunk.shape[0], *spec.event_shape)
            flat = x.reshape(x.shape[0], -1)
            bad = ~torch.isfinite(flat).all(dim=1)
            if bad.any():
                row = start + int(bad.nonzero()[0])
                raise DataError(f"{self.path} has NaN or infinite values (first in row {row})")
            if spec.kind == "discrete":
                wrong = ((flat < 0) | (flat > spec.levels - 1) | (flat != flat.round())).any(dim=1)
                if wrong.any():
                    row = start + int(wrong.nonzero()[0])
                    raise DataError(
                        f"{self.path} must hold integers 0..{spec.levels - 1} like the training "
                        f"data; row {row} does not"
                    )
            yield x
