"""Dataset names and :func:`load`: one entry point for built-in datasets and user files."""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from dgm.core.errors import DataError
from dgm.core.spec import DataSpec
from dgm.data.analytic import density_names, get_density
from dgm.data.dataset import SPLITS, Dataset
from dgm.data.files import EXTENSIONS, load_file
from dgm.data.images import load_binarized_mnist, load_digits, load_mnist

__all__ = ["SIZES_2D", "load", "load_2d", "names"]

#: train / val / test sizes of the analytic 2-D datasets
SIZES_2D = {"train": 50_000, "val": 5_000, "test": 10_000}


def _split_seed(seed: int, split: int) -> int:
    """An independent 63-bit seed for split ``split`` (0, 1, 2) of a run with seed ``seed``."""
    state = np.random.SeedSequence([seed, split]).generate_state(1, dtype=np.uint64)[0]
    return int(state) >> 1


def load_2d(name: str, seed: int = 0) -> Dataset:
    """Fixed splits of an analytic 2-D density: 50,000 / 5,000 / 10,000 exact samples, each split
    drawn with its own generator seeded from ``(seed, split index)``, so they are independent and
    the same ``seed`` always gives the same data."""
    density = get_density(name)
    splits = {}
    for i, split in enumerate(SPLITS):
        g = torch.Generator().manual_seed(_split_seed(seed, i))
        splits[split] = density.sample(SIZES_2D[split], generator=g)  # (n, 2) float32
    return Dataset(
        name=name,
        spec=DataSpec((2,), "continuous"),
        density=density,
        description=density.description,
        **splits,
    )


Loader = Callable[[str | Path | None, int], Dataset]
_IMAGES: dict[str, tuple[Loader, str]] = {
    "digits": (
        lambda data_dir, seed: load_digits(),
        "scikit-learn's 8x8 digits, 17 levels, 10 classes (1000/350/447, fixed split)",
    ),
    "mnist": (
        lambda data_dir, seed: load_mnist(data_dir),
        "MNIST, 28x28, 256 levels, 10 classes (50k/10k/10k; needs the IDX files)",
    ),
    "binarized-mnist": (
        lambda data_dir, seed: load_binarized_mnist(data_dir),
        "fixed binarization of MNIST (Salakhutdinov & Murray) (50k/10k/10k; needs the .npz)",
    ),
}


def names() -> list[tuple[str, str]]:
    """``(name, one-line description)`` of every built-in dataset, for ``dgm list``."""
    out = [(n, get_density(n).description) for n in density_names()]
    return out + [(n, desc) for n, (_, desc) in _IMAGES.items()]


def load(name_or_path: str | Path, data_dir: str | Path | None = None, seed: int = 0) -> Dataset:
    """Load a built-in dataset by name, or a user's ``.npy`` / ``.npz`` / ``.csv`` file.

    Args:
        name_or_path: a name from :func:`names` (``"8gaussians"``, ``"mnist"``, ...) or a path.
        data_dir: where to find MNIST files (see :mod:`dgm.data.storage`); else ``$DGM_DATA``,
            else ``../shared/data``.
        seed: seeds the sampling of the 2-D datasets. Image and file splits are fixed and do not
            depend on it.

    >>> load("8gaussians").train.shape
    torch.Size([50000, 2])
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, not {seed!r}")
    seed = int(seed)
    text = str(name_or_path)
    path = Path(text).expanduser()
    if isinstance(name_or_path, Path) or path.suffix.lower() in EXTENSIONS:
        return load_file(path)
    key = text.strip().lower().replace("_", "-")
    if key in density_names():
        return load_2d(key, seed)
    if key in _IMAGES:
        return _IMAGES[key][0](data_dir, seed)
    if path.is_file() or "/" in text or "\\" in text:
        return load_file(path)  # a path with another extension: says which ones are accepted
    available = [n for n, _ in names()]
    close = difflib.get_close_matches(key, available, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise DataError(
        f"unknown dataset {text!r}{hint}; the datasets are: {', '.join(available)}; "
        "a path to a .npy, .npz or .csv file is also accepted"
    )
