"""The :class:`Dataset` record: three splits of raw data as tensors, a spec, optional labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import Tensor

from dgm.core.errors import DataError
from dgm.core.spec import DataSpec

if TYPE_CHECKING:  # pragma: no cover
    from dgm.data.analytic import Density2D

__all__ = ["Dataset", "SPLITS"]

SPLITS = ("train", "val", "test")


@dataclass
class Dataset:
    """Train, validation and test data in *raw* form, with what a model needs to know about it.

    Raw means as stored: float32 tensors of shape ``(N, *spec.event_shape)``; discrete data holds
    the integer values ``0 .. spec.levels - 1`` as floats. A :class:`~dgm.data.Preprocessor`
    maps raw data to what a model sees (dequantized, binarized, ...).

    Args:
        name: registry name (``"mnist"``) or the path of a user file.
        spec: event shape, kind, levels and number of classes.
        train, val, test: the splits, each ``(N, *event_shape)`` float32.
        train_labels, val_labels, test_labels: int64 class labels ``(N,)``, or ``None``.
        density: the analytic density the 2-D data was drawn from, else ``None``.
        description: one line for ``dgm list`` and reports.
    """

    name: str
    spec: DataSpec
    train: Tensor
    val: Tensor
    test: Tensor
    train_labels: Tensor | None = None
    val_labels: Tensor | None = None
    test_labels: Tensor | None = None
    density: Density2D | None = None
    description: str = ""

    def __post_init__(self) -> None:
        shape = self.spec.event_shape
        for split in SPLITS:
            x, y = self.split(split)
            if tuple(x.shape[1:]) != shape:
                raise DataError(
                    f"{split} split of dataset {self.name!r} has shape {tuple(x.shape)}, "
                    f"but its spec says (N, {', '.join(map(str, shape))})"
                )
            if y is not None and tuple(y.shape) != (x.shape[0],):
                raise DataError(
                    f"{split} labels of dataset {self.name!r} have shape {tuple(y.shape)}, "
                    f"expected ({x.shape[0]},), one label per example"
                )

    def split(self, name: str) -> tuple[Tensor, Tensor | None]:
        """Return ``(x, labels)`` of split ``"train"``, ``"val"`` or ``"test"``."""
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; the splits are 'train', 'val' and 'test'")
        return getattr(self, name), getattr(self, f"{name}_labels")

    def __repr__(self) -> str:
        sizes = "/".join(str(getattr(self, s).shape[0]) for s in SPLITS)
        return f"Dataset(name={self.name!r}, spec={self.spec}, train/val/test={sizes})"
