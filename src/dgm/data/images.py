"""Image datasets: scikit-learn's 8x8 digits, MNIST and the fixed binarization of MNIST.

All three are read from local files only (``digits`` ships inside scikit-learn; the MNIST files
are found as described in :mod:`dgm.data.storage`) and checked against known MD5 sums. Parsed
arrays are cached for the life of the process; every :func:`load_*` call returns fresh tensors.

References: Y. LeCun, C. Cortes, C. Burges, "The MNIST database of handwritten digits";
R. Salakhutdinov and I. Murray, "On the quantitative analysis of deep belief networks",
ICML 2008 (the binarization); H. Larochelle and I. Murray, "The neural autoregressive distribution
estimator", AISTATS 2011 (the 50k/10k/10k split).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import math
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from dgm.core.errors import DataError
from dgm.core.spec import DataSpec
from dgm.data.dataset import Dataset, LabelledSplits
from dgm.data.storage import check_md5, find_files

__all__ = [
    "BINARIZED_MNIST_MD5",
    "DIGITS_SPLIT",
    "MNIST_MD5",
    "load_binarized_mnist",
    "load_digits",
    "load_mnist",
    "read_idx",
]

#: MD5 of each published MNIST ``.gz`` file (the sums torchvision checks)
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_TRAIN, MNIST_TEST, MNIST_VAL = 60_000, 10_000, 10_000
IDX_IMAGES, IDX_LABELS = 2051, 2049

BINARIZED_MNIST_FILE = "binarized_mnist.npz"
#: MD5 of ``arr.tobytes()`` for each array of ``binarized_mnist.npz`` (the zip's own MD5 varies
#: with timestamps)
BINARIZED_MNIST_MD5 = {
    "train": "8d4f0427d6c2572b5e9994e08bad66de",
    "valid": "3e33becd40c694040e5e6c812e2f4b50",
    "test": "fc34623e13bd64fed2f8b61365198339",
    "test_labels": "b5ecd903211971945a7c82c37040908e",
}
BINARIZED_MNIST_ROWS = {"train": 50_000, "valid": 10_000, "test": 10_000, "test_labels": 10_000}

#: train / val / test sizes of ``digits`` (1797 images in all)
DIGITS_SPLIT = (1000, 350, 447)


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a.astype(np.float32))


def _labels(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a.astype(np.int64))


# ---------------------------------------------------------------------------------------- digits
@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = bunch.images.astype(np.uint8)[:, None]  # (1797, 1, 8, 8), values 0..16
    y = bunch.target.astype(np.int64)  # (1797,)
    x.flags.writeable = y.flags.writeable = False
    return x, y


def load_digits() -> Dataset:
    """scikit-learn's 8x8 handwritten digits (the UCI optical-recognition test set): 1797 images,
    pixel values 0..16 (17 levels), 10 classes.

    The split is fixed for everyone, whatever the seed: the permutation
    ``np.random.default_rng(0).permutation(1797)`` gives 1000 / 350 / 447 train / val / test.
    """
    x, y = _digits_arrays()
    perm = np.random.default_rng(0).permutation(x.shape[0])
    n_train, n_val, _ = DIGITS_SPLIT
    parts = np.split(perm, [n_train, n_train + n_val])
    return Dataset(
        name="digits",
        spec=DataSpec((1, 8, 8), "discrete", levels=17, num_classes=10),
        train=_tensor(x[parts[0]]),
        val=_tensor(x[parts[1]]),
        test=_tensor(x[parts[2]]),
        train_labels=_labels(y[parts[0]]),
        val_labels=_labels(y[parts[1]]),
        test_labels=_labels(y[parts[2]]),
        description="scikit-learn's 8x8 digits, 17 levels, 10 classes; fixed 1000/350/447 split",
        ood_dataset="mnist",
    )


# ---------------------------------------------------------------------------------------- MNIST
def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """Read a gzipped IDX file of unsigned bytes and check its header.

    The header is big-endian int32: the magic number (2051 for 3-D image arrays, 2049 for 1-D
    label arrays), then one size per dimension. Returns a read-only uint8 array of those sizes.
    """
    ndim = {IDX_IMAGES: 3, IDX_LABELS: 1}[magic]
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"{path} is not a readable gzip file ({e}); it is truncated or corrupt"
        ) from None
    header = 4 * (1 + ndim)
    if len(raw) < header:
        raise DataError(f"{path} is too short ({len(raw)} bytes) to hold an IDX header")
    (found,) = struct.unpack(">i", raw[:4])
    if found != magic:
        raise DataError(
            f"{path} has IDX magic number {found}, but {magic} was expected "
            f"({'images' if magic == IDX_IMAGES else 'labels'}); is it the right file?"
        )
    dims = struct.unpack(">" + "i" * ndim, raw[4:header])
    size = math.prod(dims)
    if len(raw) - header != size:
        raise DataError(
            f"{path} holds {len(raw) - header} bytes of data but its header says {dims} "
            f"({size} bytes); the file is truncated or corrupt"
        )
    arr = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)
    arr.flags.writeable = False
    return arr


def _check_idx(path: Path, arr: np.ndarray, shape: tuple[int, ...]) -> None:
    if arr.shape != shape:
        raise DataError(f"{path} holds an array of shape {arr.shape}, but MNIST has {shape}")


@functools.lru_cache(maxsize=4)
def _mnist_arrays(paths: tuple[str, str, str, str], stamps: tuple) -> tuple[np.ndarray, ...]:
    """Parse the four IDX files (``stamps`` only keys the cache on size and mtime)."""
    tr_x, tr_y, te_x, te_y = (Path(p) for p in paths)
    arrays = (
        read_idx(tr_x, IDX_IMAGES),
        read_idx(tr_y, IDX_LABELS),
        read_idx(te_x, IDX_IMAGES),
        read_idx(te_y, IDX_LABELS),
    )
    for path, arr, shape in zip(
        (tr_x, tr_y, te_x, te_y),
        arrays,
        ((MNIST_TRAIN, 28, 28), (MNIST_TRAIN,), (MNIST_TEST, 28, 28), (MNIST_TEST,)),
    ):
        _check_idx(path, arr, shape)
    for path, labels in ((tr_y, arrays[1]), (te_y, arrays[3])):
        if labels.max() > 9:
            raise DataError(f"{path} holds label {int(labels.max())}, but MNIST labels are 0..9")
    return arrays


def load_mnist(data_dir: str | Path | None = None) -> Dataset:
    """MNIST at 8 bits (256 levels), from the four original IDX ``.gz`` files, MD5-checked.

    Split: the first 50,000 training images are ``train``, the last 10,000 are ``val``, and the
    10,000 ``t10k`` images are ``test``. Shape ``(N, 1, 28, 28)``, values 0..255, labels 0..9.
    """
    names = list(MNIST_MD5)
    found = find_files(names, "mnist", "mnist", data_dir)
    for name in names:
        check_md5(found[name], MNIST_MD5[name])
    paths = tuple(str(found[n].resolve()) for n in names)
    stamps = tuple((st.st_size, st.st_mtime_ns) for st in (Path(p).stat() for p in paths))
    tr_x, tr_y, te_x, te_y = _mnist_arrays(paths, stamps)
    n = MNIST_TRAIN - MNIST_VAL
    return Dataset(
        name="mnist",
        spec=DataSpec((1, 28, 28), "discrete", levels=256, num_classes=10),
        train=_tensor(tr_x[:n, None]),
        val=_tensor(tr_x[n:, None]),
        test=_tensor(te_x[:, None]),
        train_labels=_labels(tr_y[:n]),
        val_labels=_labels(tr_y[n:]),
        test_labels=_labels(te_y),
        description="MNIST, 256 levels, 10 classes; 50k/10k/10k (val = last 10k of train)",
        ood_dataset="digits",
    )


# ------------------------------------------------------------------------------ binarized MNIST
def _array_md5(a: np.ndarray) -> str:
    return hashlib.md5(a.tobytes(), usedforsecurity=False).hexdigest()


@functools.lru_cache(maxsize=4)
def _binarized_arrays(path: str, stamp: tuple) -> dict[str, np.ndarray]:
    """Read and check the arrays of ``binarized_mnist.npz`` (``stamp`` only keys the cache)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            required = {"train", "valid", "test"}
            if not required <= keys:
                raise DataError(
                    f"{path} has arrays {sorted(keys)}, but binarized MNIST needs "
                    f"'train', 'valid' and 'test' (and optionally 'test_labels')"
                )
            arrays = {k: npz[k] for k in sorted(keys & set(BINARIZED_MNIST_MD5))}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(
            f"{path} is not a readable .npz archive ({e}); it is truncated or corrupt"
        ) from None
    for key, arr in arrays.items():
        shape = (
            (BINARIZED_MNIST_ROWS[key],)
            if key == "test_labels"
            else (BINARIZED_MNIST_ROWS[key], 784)
        )
        if arr.dtype != np.uint8 or arr.shape != shape:
            raise DataError(
                f"array {key!r} of {path} is {arr.dtype} of shape {arr.shape}, but uint8 of "
                f"shape {shape} was expected; the file is a different version"
            )
        check_md5(path, BINARIZED_MNIST_MD5[key], found=_array_md5(arr), part=f"array {key!r} of ")
        arr.flags.writeable = False
    return arrays


def load_binarized_mnist(data_dir: str | Path | None = None) -> Dataset:
    """The fixed binarization of MNIST (Salakhutdinov & Murray 2008) with the 50k/10k/10k split of
    Larochelle & Murray (2011), read from ``binarized_mnist.npz`` and checked array by array.

    Shape ``(N, 1, 28, 28)``, values 0/1 (2 levels). Only the test split has labels (the MNIST
    test labels in the file's order); the spec therefore has ``num_classes=None``. Results on this
    data are comparable with the published NADE / MADE / IWAE figures; results with dynamic
    binarization (:class:`~dgm.data.Binarize` on ``mnist``) are not.
    """
    path = find_files([BINARIZED_MNIST_FILE], "binarized_mnist", "binarized-mnist", data_dir)[
        BINARIZED_MNIST_FILE
    ].resolve()
    st = path.stat()
    arrays = _binarized_arrays(str(path), (st.st_size, st.st_mtime_ns))

    def images(key: str) -> torch.Tensor:
        return _tensor(arrays[key].reshape(-1, 1, 28, 28))  # (N, 1, 28, 28)

    labels = arrays.get("test_labels")
    return Dataset(
        name="binarized-mnist",
        spec=DataSpec((1, 28, 28), "discrete", levels=2, num_classes=None),
        train=images("train"),
        val=images("valid"),
        test=images("test"),
        test_labels=None if labels is None else _labels(labels),
        description="MNIST with the fixed binarization of Salakhutdinov & Murray; 50k/10k/10k",
        ood_dataset="digits",
        feature_data=functools.partial(_binarized_feature_data, data_dir),
    )


def _binarized_feature_data(data_dir: str | Path | None) -> LabelledSplits:
    """Labelled data for ``binarized-mnist``, whose training split has no labels: the MNIST
    training and validation images binarized with a fixed seed (0), with their labels."""
    try:
        mnist = load_mnist(data_dir)
    except DataError as e:
        raise DataError(
            "binarized-mnist has no training labels; its feature network is trained on the "
            f"MNIST images binarized, but MNIST could not be loaded ({e})"
        ) from None
    g = torch.Generator().manual_seed(0)
    xb = torch.bernoulli(mnist.train / 255.0, generator=g)
    xv = torch.bernoulli(mnist.val / 255.0, generator=g)
    return xb, mnist.train_labels, xv, mnist.val_labels
