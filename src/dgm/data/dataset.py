"""The :class:`Dataset` record: three splits of raw data as tensors, a spec, optional labels, and
what evaluation needs to know about the data (its true density, its out-of-distribution partner,
labelled data for a feature network)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from dgm.core.errors import DataError
from dgm.core.spec import DataSpec
from dgm.data.analytic import Density2D

__all__ = ["Dataset", "LabelledSplits", "SPLITS", "fixed_subset"]

SPLITS = ("train", "val", "test")


def fixed_subset(size: int, n: int) -> Tensor | None:
    """Indices ``(n,)`` of ``n`` of a split's ``size`` examples: a fixed random choice, the same
    for every model and run of a dataset, or ``None`` when ``n >= size`` (all, in their order).

    A split's first examples are no fair sample when the split is ordered: the second thousand
    of the fixed binarized MNIST test set has less than half the ink of the first, and a Gated
    PixelCNN's NLL was 95.1 nats on the first thousand against 83.95 on all ten.
    """
    if n >= size:
        return None
    return torch.randperm(size, generator=torch.Generator().manual_seed(0))[:n]


#: ``(x_train, y_train, x_val, y_val)`` in a dataset's raw space; the validation pair may be None
LabelledSplits = tuple[Tensor, Tensor, Tensor | None, Tensor | None]


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
        density: the analytic density the 2-D data was drawn from, else ``None``; evaluation
            reads its exact ``log_prob`` (KL, total variation) and its ``modes`` (mode coverage).
        description: one line for ``dgm list`` and reports.
        ood_dataset: the name of a built-in dataset whose test images, brought to this one's
            shape and levels, are the out-of-distribution inputs of the anomaly check
            (``digits`` for ``mnist`` and the other way round), else ``None``.
        feature_data: for data whose own splits carry no labels, a function returning
            :data:`LabelledSplits` in this dataset's raw space to train the feature network of
            the feature-space metrics on (``binarized-mnist``: MNIST binarized), else ``None``.
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
    ood_dataset: str | None = None
    feature_data: Callable[[], LabelledSplits] | None = field(
        default=None, repr=False, compare=False
    )

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

    def labelled_splits(self) -> LabelledSplits | None:
        """Labelled training and validation data for a classifier of this data (the feature
        network of :mod:`dgm.eval.features`): the dataset's own labelled splits, else those of
        ``feature_data``, else ``None``."""
        if self.train_labels is not None and self.spec.num_classes:
            return self.train, self.train_labels, self.val, self.val_labels
        if self.feature_data is not None:
            return self.feature_data()
        return None

    def __repr__(self) -> str:
        sizes = "/".join(str(getattr(self, s).shape[0]) for s in SPLITS)
        return f"Dataset(name={self.name!r}, spec={self.spec}, train/val/test={sizes})"
