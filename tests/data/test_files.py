"""User files: .npy, .npz and .csv, the shape and kind rules, and one clear error per bad file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dgm.core.errors import DataError
from dgm.core.spec import DataSpec
from dgm.data.files import load_file


def _rows(t):
    a = t.reshape(t.shape[0], -1).double().numpy()
    return a[np.lexsort(a.T)]


# ---------------------------------------------------------------------------------- contents
def test_npy_vectors_are_split_80_10_10_with_a_fixed_permutation(tmp_path):
    x = np.random.default_rng(0).normal(size=(100, 3))
    np.save(tmp_path / "x.npy", x)
    data = load_file(tmp_path / "x.npy")
    assert data.spec == DataSpec((3,), "continuous")
    assert [data.train.shape[0], data.val.shape[0], data.test.shape[0]] == [80, 10, 10]
    assert data.train.dtype == torch.float32 and data.train_labels is None
    everything = torch.cat([data.train, data.val, data.test])
    assert np.array_equal(_rows(everything), _rows(torch.from_numpy(x).float()))
    assert not torch.equal(data.train, torch.from_numpy(x[:80]).float())  # shuffled
    assert torch.equal(load_file(tmp_path / "x.npy").test, data.test)


def test_small_single_array_keeps_one_row_per_held_out_split(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(6.0).reshape(3, 2) + 0.5)
    data = load_file(tmp_path / "x.npy")
    assert [data.train.shape[0], data.val.shape[0], data.test.shape[0]] == [1, 1, 1]
    np.save(tmp_path / "y.npy", np.ones((2, 2)) * 0.5)
    with pytest.raises(DataError, match="has 2 rows; at least 3 are needed"):
        load_file(tmp_path / "y.npy")


@pytest.mark.parametrize(
    ("array", "spec"),
    [
        (np.random.default_rng(1).integers(0, 256, (50, 7, 5)), DataSpec((1, 7, 5), "discrete", 256)),
        (np.random.default_rng(1).integers(0, 17, (50, 3, 4, 4)), DataSpec((3, 4, 4), "discrete", 17)),
        (np.random.default_rng(1).integers(0, 2, (50, 4, 4)).astype(bool), DataSpec((1, 4, 4), "discrete", 2)),
        (np.zeros((50, 4, 4), np.uint8), DataSpec((1, 4, 4), "discrete", 2)),
        (np.random.default_rng(1).integers(0, 2, (50, 6)), DataSpec((6,), "discrete", 2)),
        (np.random.default_rng(1).integers(0, 6, (50, 6)), DataSpec((6,), "continuous")),
        (np.random.default_rng(1).integers(0, 300, (50, 4, 4)), DataSpec((1, 4, 4), "continuous")),
        (np.random.default_rng(1).integers(-1, 5, (50, 4, 4)), DataSpec((1, 4, 4), "continuous")),
        (np.random.default_rng(1).random((50, 4, 4)), DataSpec((1, 4, 4), "continuous")),
    ],
    ids=["uint8-images", "17-level-chw", "bool-images", "constant-images", "binary-vectors",
         "integer-vectors", "over-255", "negative", "float-images"],
)  # fmt: skip
def test_shape_and_kind_rules(tmp_path, array, spec):
    np.save(tmp_path / "x.npy", array)
    data = load_file(tmp_path / "x.npy")
    assert data.spec == spec
    everything = torch.cat([data.train, data.val, data.test])
    expected = torch.from_numpy(array.astype(np.float32).reshape(everything.shape))
    assert np.array_equal(_rows(everything), _rows(expected))


def test_npz_with_named_splits_and_labels(tmp_path):
    rng = np.random.default_rng(2)
    arrays = {
        k: rng.integers(0, 4, (n, 2, 2)) for k, n in (("train", 8), ("valid", 3), ("test", 5))
    }
    labels = {f"{k}_labels": rng.integers(0, 3, len(a)) for k, a in arrays.items()}
    np.savez(tmp_path / "d.npz", **arrays, **labels)
    data = load_file(tmp_path / "d.npz")
    assert data.spec == DataSpec((1, 2, 2), "discrete", levels=4, num_classes=3)
    assert torch.equal(data.val[:, 0], torch.from_numpy(arrays["valid"]).float())
    assert torch.equal(data.test_labels, torch.from_numpy(labels["test_labels"]))
    assert data.train_labels.dtype == torch.int64


def test_npz_with_a_single_array_is_split(tmp_path):
    np.savez(tmp_path / "d.npz", anything=np.random.default_rng(3).normal(size=(40, 2)))
    data = load_file(tmp_path / "d.npz")
    assert [data.train.shape[0], data.val.shape[0], data.test.shape[0]] == [32, 4, 4]


def test_csv_with_and_without_header(tmp_path):
    (tmp_path / "h.csv").write_text("a,b\n1.5,2\n-3,4e-1\n\n5,6\n7,8\n")
    data = load_file(tmp_path / "h.csv")
    assert data.spec == DataSpec((2,), "continuous")
    assert np.array_equal(
        _rows(torch.cat([data.train, data.val, data.test])),
        _rows(torch.tensor([[1.5, 2], [-3, 0.4], [5, 6], [7, 8]])),
    )
    (tmp_path / "n.csv").write_text("0,1,1\n1,0,0\n1,1,1\n")
    assert load_file(tmp_path / "n.csv").spec == DataSpec((3,), "discrete", levels=2)


# ---------------------------------------------------------------------------------- errors
def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(DataError, match=r"data file .*nope.npy does not exist"):
        load_file(tmp_path / "nope.npy")
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(
        DataError, match="unknown extension '.json'; give a .npy, .npz or .csv file"
    ):
        load_file(tmp_path / "x.json")


@pytest.mark.parametrize("ext", [".npy", ".npz", ".csv"])
def test_empty_file(tmp_path, ext):
    (tmp_path / f"e{ext}").write_bytes(b"")
    with pytest.raises(DataError, match=r"is empty \(0 bytes\)"):
        load_file(tmp_path / f"e{ext}")


def test_zero_rows(tmp_path):
    np.save(tmp_path / "z.npy", np.zeros((0, 3)))
    with pytest.raises(DataError, match="has zero rows"):
        load_file(tmp_path / "z.npy")
    np.savez(
        tmp_path / "z.npz", train=np.zeros((4, 3)), val=np.zeros((0, 3)), test=np.zeros((2, 3))
    )
    with pytest.raises(DataError, match="the val split of .* has zero rows"):
        load_file(tmp_path / "z.npz")
    (tmp_path / "z.csv").write_text("x,y\n\n")
    with pytest.raises(DataError, match="has no data rows"):
        load_file(tmp_path / "z.csv")


@pytest.mark.parametrize("shape", [(10,), (2, 3, 4, 5, 6)])
def test_wrong_ndim(tmp_path, shape):
    np.save(tmp_path / "w.npy", np.zeros(shape))
    with pytest.raises(
        DataError, match=r"accepted shapes are \(N, D\) vectors, \(N, H, W\) or \(N, C, H, W\)"
    ):
        load_file(tmp_path / "w.npy")


def test_nan_and_inf_rows_are_counted_with_the_first_index(tmp_path):
    x = np.zeros((30, 2))
    x[7, 1], x[12, 0], x[12, 1], x[20, 0] = np.nan, np.inf, np.nan, -np.inf
    np.save(tmp_path / "n.npy", x)
    with pytest.raises(DataError, match=r"has 3 rows with NaN or Inf values \(first at row 7\)"):
        load_file(tmp_path / "n.npy")
    (tmp_path / "n.csv").write_text("1,2\n3,nan\n")
    with pytest.raises(DataError, match=r"1 rows with NaN or Inf values \(first at row 1\)"):
        load_file(tmp_path / "n.csv")


def test_non_numeric_and_ragged_csv(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n1,2\n3,oops\n")
    with pytest.raises(DataError, match="line 3 holds the non-numeric value 'oops'"):
        load_file(tmp_path / "t.csv")
    (tmp_path / "r.csv").write_text("1,2\n3,4,5\n")
    with pytest.raises(DataError, match="line 2 has 3 values but the first data line has 2"):
        load_file(tmp_path / "r.csv")
    (tmp_path / "b.csv").write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(DataError, match="is not a text file"):
        load_file(tmp_path / "b.csv")


def test_npz_with_unexpected_keys_lists_found_and_expected(tmp_path):
    np.savez(
        tmp_path / "k.npz", train=np.zeros((3, 2)), test=np.zeros((3, 2)), extra=np.zeros((3, 2))
    )
    with pytest.raises(
        DataError,
        match=r"has arrays \['extra', 'test', 'train'\]; expected either a single array or 'train', 'val'",
    ):
        load_file(tmp_path / "k.npz")


def test_mismatched_split_shapes(tmp_path):
    np.savez(
        tmp_path / "m.npz", train=np.zeros((3, 2)), val=np.zeros((3, 3)), test=np.zeros((3, 2))
    )
    with pytest.raises(DataError, match="different example shapes"):
        load_file(tmp_path / "m.npz")


def test_pickled_objects_are_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"

    class Trap:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    arr = np.empty(2, dtype=object)
    arr[0] = arr[1] = Trap()
    np.save(tmp_path / "o.npy", arr, allow_pickle=True)
    np.savez(tmp_path / "o.npz", train=arr, val=arr, test=arr)
    for name in ("o.npy", "o.npz"):
        with pytest.raises(DataError, match="would need unpickling, which dgm never does"):
            load_file(tmp_path / name)
    assert not marker.exists()


def test_corrupt_npz(tmp_path):
    (tmp_path / "c.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DataError, match=r"is not a valid .npz file"):
        load_file(tmp_path / "c.npz")


def test_bad_labels(tmp_path):
    x = np.zeros((3, 2))
    np.savez(tmp_path / "l.npz", train=x, val=x, test=x, train_labels=np.array([0.5, 1, 2]))
    with pytest.raises(DataError, match="the train labels of .* must be non-negative integers"):
        load_file(tmp_path / "l.npz")
    np.savez(tmp_path / "p.npz", train=x, val=x, test=x, train_labels=np.array([0, 1, 2]))
    with pytest.raises(DataError, match=r"has labels for \['train'\] only"):
        load_file(tmp_path / "p.npz")
