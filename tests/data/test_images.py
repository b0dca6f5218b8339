"""Image datasets: digits, MNIST and binarized MNIST, the data-directory search and its errors.

Tests of the real MNIST files skip when the files are absent; every error path runs on small
fake files in ``tmp_path``.
"""

from __future__ import annotations

import gzip
import hashlib
import struct

import numpy as np
import pytest
import torch

from dgm.core.errors import DataError
from dgm.data import images, load
from dgm.data.images import IDX_IMAGES, IDX_LABELS, read_idx
from dgm.data.storage import find_files

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv("DGM_DATA", raising=False)


def _skip_unless_found(files, subfolder):
    try:
        find_files(files, subfolder, subfolder)
    except DataError:
        pytest.skip(f"{subfolder} files not found in the default data directories")


def _idx(magic, array):
    dims = struct.pack(">" + "i" * array.ndim, *array.shape)
    return struct.pack(">i", magic) + dims + array.astype(np.uint8).tobytes()


def _write_gz(path, payload):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload, compresslevel=1))
    return hashlib.md5(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------- digits
def test_digits_splits_spec_and_values():
    data = load("digits")
    assert data.spec.event_shape == (1, 8, 8) and data.spec.kind == "discrete"
    assert data.spec.levels == 17 and data.spec.num_classes == 10
    assert [data.split(s)[0].shape[0] for s in ("train", "val", "test")] == [1000, 350, 447]
    x = torch.cat([data.train, data.val, data.test])
    assert x.dtype == torch.float32 and x.min() == 0 and x.max() == 16 and torch.equal(x, x.round())
    assert data.train_labels.dtype == torch.int64
    # the splits are a partition of scikit-learn's 1797 digits
    from sklearn.datasets import load_digits

    sk = load_digits()
    rows = np.concatenate(
        [
            x.reshape(-1, 64).numpy(),
            torch.cat([data.train_labels, data.val_labels, data.test_labels])[:, None].numpy(),
        ],
        1,
    )
    ref = np.concatenate([sk.data, sk.target[:, None]], 1)
    assert np.array_equal(rows[np.lexsort(rows.T)], ref[np.lexsort(ref.T)])


def test_digits_split_is_fixed_across_calls_and_seeds():
    a, b = load("digits", seed=0), load("digits", seed=7)
    assert torch.equal(a.train, b.train) and torch.equal(a.test_labels, b.test_labels)
    a.train.add_(1)  # callers get their own tensors, never the cache
    assert torch.equal(load("digits").train, b.train)


# ---------------------------------------------------------------------------------- real files
def test_real_mnist():
    _skip_unless_found(list(images.MNIST_MD5), "mnist")
    data = load("mnist")
    assert data.spec.event_shape == (1, 28, 28) and data.spec.levels == 256
    assert data.spec.num_classes == 10
    assert [data.split(s)[0].shape[0] for s in ("train", "val", "test")] == [50_000, 10_000, 10_000]
    assert torch.bincount(data.test_labels).tolist() == MNIST_TEST_COUNTS
    train_val = torch.cat([data.train_labels, data.val_labels])
    assert torch.bincount(train_val).tolist() == MNIST_TRAIN_COUNTS
    assert float(data.test.double().mean()) == pytest.approx(33.791, abs=1e-3)
    assert data.train.max() == 255 and data.train.min() == 0


def test_real_binarized_mnist():
    _skip_unless_found([images.BINARIZED_MNIST_FILE], "binarized_mnist")
    data = load("binarized-mnist")
    assert data.spec.event_shape == (1, 28, 28) and data.spec.levels == 2
    assert data.spec.num_classes is None and data.train_labels is None
    assert [data.split(s)[0].shape[0] for s in ("train", "val", "test")] == [50_000, 10_000, 10_000]
    assert float(data.train.double().mean()) == pytest.approx(0.130562, abs=1e-6)
    assert float(data.val.double().mean()) == pytest.approx(0.131127, abs=1e-6)
    assert torch.bincount(data.test_labels).tolist() == MNIST_TEST_COUNTS
    assert torch.equal(data.test_labels, data.test_labels.sort().values)


# ---------------------------------------------------------------------------------- missing files
def test_missing_mnist_names_files_dirs_and_fix(tmp_path):
    where = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        load("mnist", data_dir=where)
    msg = str(err.value)
    assert all(f in msg for f in images.MNIST_MD5)
    assert str(where / "mnist") in msg and "--data-dir" in msg and "DGM_DATA" in msg
    assert f"put the files in {where / 'mnist'}/" in msg


def test_data_dir_from_environment_and_explicit_dir_wins(tmp_path, monkeypatch):
    env_dir, arg_dir = tmp_path / "env", tmp_path / "arg"
    monkeypatch.setenv("DGM_DATA", str(env_dir))
    with pytest.raises(DataError, match=r"searched via \$DGM_DATA") as err:
        load("binarized-mnist")
    assert str(env_dir / "binarized_mnist") in str(err.value)
    with pytest.raises(DataError, match="searched via --data-dir") as err:
        load("binarized-mnist", data_dir=arg_dir)
    assert str(arg_dir) in str(err.value) and str(env_dir) not in str(err.value)


def test_default_data_dir_is_shared_data_beside_the_working_directory(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    with pytest.raises(DataError, match="searched via the default location") as err:
        load("binarized-mnist")
    target = tmp_path / "shared" / "data" / "binarized_mnist"
    assert f"put the file in {target}/" in str(err.value)
    monkeypatch.setattr(images, "BINARIZED_MNIST_ROWS", SMALL)
    md5 = _fake_binarized(target / images.BINARIZED_MNIST_FILE, SMALL)
    monkeypatch.setattr(images, "BINARIZED_MNIST_MD5", md5)
    assert load("binarized-mnist").train.shape == (6, 1, 28, 28)
    monkeypatch.setenv("DGM_DATA", str(tmp_path / "elsewhere"))  # $DGM_DATA wins over the default
    with pytest.raises(DataError, match=r"searched via \$DGM_DATA"):
        load("binarized-mnist")


def test_partially_missing_mnist_names_only_the_missing_file(tmp_path):
    for name in list(images.MNIST_MD5)[:3]:
        (tmp_path / "mnist").mkdir(exist_ok=True)
        (tmp_path / "mnist" / name).write_bytes(b"x")
    with pytest.raises(DataError, match="mnist needs t10k-labels-idx1-ubyte.gz, not found") as err:
        load("mnist", data_dir=tmp_path)
    assert "train-images" not in str(err.value)


# ---------------------------------------------------------------------------------- checksums
def test_corrupt_mnist_file_reports_expected_and_found_md5(tmp_path):
    found = {}
    for name in images.MNIST_MD5:
        found[name] = _write_gz(tmp_path / "mnist" / name, b"not mnist " + name.encode())
    first = next(iter(images.MNIST_MD5))
    with pytest.raises(DataError, match="the file is corrupt or a different version") as err:
        load("mnist", data_dir=tmp_path)
    msg = str(err.value)
    assert first in msg and images.MNIST_MD5[first] in msg and found[first] in msg


def test_truncated_gz_fails_its_checksum_and_the_idx_reader(tmp_path):
    payload = _idx(IDX_LABELS, np.arange(100) % 10)
    path = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    _write_gz(path, payload)
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(DataError, match="MD5"):
        images.check_md5(path, images.MNIST_MD5[path.name])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(path, IDX_LABELS)


def test_idx_reader_checks_magic_and_size(tmp_path):
    x = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256
    _write_gz(tmp_path / "ok.gz", _idx(IDX_IMAGES, x))
    assert np.array_equal(read_idx(tmp_path / "ok.gz", IDX_IMAGES), x)
    with pytest.raises(DataError, match="IDX magic number 2051, but 2049 was expected"):
        read_idx(tmp_path / "ok.gz", IDX_LABELS)
    _write_gz(tmp_path / "short.gz", _idx(IDX_IMAGES, x)[:-5])
    with pytest.raises(
        DataError, match=r"holds 1563 bytes of data but its header says \(2, 28, 28\)"
    ):
        read_idx(tmp_path / "short.gz", IDX_IMAGES)
    _write_gz(tmp_path / "tiny.gz", b"\x00\x00")
    with pytest.raises(DataError, match="too short"):
        read_idx(tmp_path / "tiny.gz", IDX_LABELS)


def test_mnist_with_wrong_sizes_is_rejected(tmp_path, monkeypatch):
    md5 = {}
    for name in images.MNIST_MD5:
        arr = np.zeros((5, 28, 28)) if "images" in name else np.zeros(5)
        md5[name] = _write_gz(
            tmp_path / name, _idx(IDX_IMAGES if "images" in name else IDX_LABELS, arr)
        )
    monkeypatch.setattr(images, "MNIST_MD5", md5)
    with pytest.raises(DataError, match=r"shape \(5, 28, 28\), but MNIST has \(60000, 28, 28\)"):
        load("mnist", data_dir=tmp_path)


def test_mnist_split_on_fake_files_in_the_data_dir_itself(tmp_path, monkeypatch):
    # full-size fake MNIST (zeros except one pixel = index % 256) checks the split, fast
    def images_of(n):
        x = np.zeros((n, 28, 28), np.uint8)
        x[:, 0, 0] = np.arange(n) % 256
        return x

    content = {
        "train-images-idx3-ubyte.gz": _idx(IDX_IMAGES, images_of(60_000)),
        "train-labels-idx1-ubyte.gz": _idx(IDX_LABELS, np.arange(60_000) % 10),
        "t10k-images-idx3-ubyte.gz": _idx(IDX_IMAGES, images_of(10_000)),
        "t10k-labels-idx1-ubyte.gz": _idx(IDX_LABELS, (np.arange(10_000) // 7) % 10),
    }
    md5 = {name: _write_gz(tmp_path / name, payload) for name, payload in content.items()}
    monkeypatch.setattr(images, "MNIST_MD5", md5)
    data = load("mnist", data_dir=tmp_path)
    assert torch.equal(data.val[:, 0, 0, 0], (torch.arange(50_000, 60_000) % 256).float())
    assert torch.equal(data.train_labels, torch.arange(50_000) % 10)
    assert torch.equal(data.val_labels, torch.arange(50_000, 60_000) % 10)
    assert torch.equal(data.test_labels, (torch.arange(10_000) // 7) % 10)
    assert data.val.shape == (10_000, 1, 28, 28)


def _fake_binarized(path, rows, labels=True, **override):
    rng = np.random.default_rng(0)
    arrays = {
        k: (rng.random((n, 784)) < 0.2).astype(np.uint8)
        for k, n in rows.items()
        if k != "test_labels"
    }
    if labels:
        arrays["test_labels"] = np.sort(rng.integers(0, 10, rows["test"])).astype(np.uint8)
    arrays.update(override)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return {k: hashlib.md5(a.tobytes()).hexdigest() for k, a in arrays.items()}


SMALL = {"train": 6, "valid": 3, "test": 4, "test_labels": 4}


def test_binarized_array_checksum_mismatch(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "BINARIZED_MNIST_ROWS", SMALL)
    found = _fake_binarized(tmp_path / "binarized_mnist" / "binarized_mnist.npz", SMALL)
    with pytest.raises(DataError, match="array 'test' of .*binarized_mnist.npz has MD5") as err:
        load("binarized-mnist", data_dir=tmp_path)
    assert found["test"] in str(err.value) and images.BINARIZED_MNIST_MD5["test"] in str(err.value)


def test_binarized_wrong_shape_and_missing_keys_and_corrupt_zip(tmp_path, monkeypatch):
    path = tmp_path / "binarized_mnist.npz"
    _fake_binarized(path, SMALL)
    with pytest.raises(
        DataError,
        match=r"array 'test' of .* is uint8 of shape \(4, 784\), but uint8 of shape \(10000, 784\)",
    ):
        load("binarized-mnist", data_dir=tmp_path)
    np.savez(path, train=np.zeros((2, 784), np.uint8))
    with pytest.raises(DataError, match="needs 'train', 'valid' and 'test'"):
        load("binarized-mnist", data_dir=tmp_path)
    path.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(DataError, match="not a readable .npz archive"):
        load("binarized-mnist", data_dir=tmp_path)


def test_binarized_loads_checked_fake_file(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "BINARIZED_MNIST_ROWS", SMALL)
    md5 = _fake_binarized(tmp_path / "binarized_mnist" / "binarized_mnist.npz", SMALL)
    monkeypatch.setattr(images, "BINARIZED_MNIST_MD5", md5)
    data = load("binarized-mnist", data_dir=tmp_path)
    assert data.train.shape == (6, 1, 28, 28) and data.test_labels.dtype == torch.int64
    with np.load(tmp_path / "binarized_mnist" / "binarized_mnist.npz") as raw:
        assert np.array_equal(data.val.reshape(3, 784).numpy(), raw["valid"])
