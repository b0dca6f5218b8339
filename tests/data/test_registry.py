"""load() and names(): the one entry point for built-in datasets and files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dgm.core.errors import DataError
from dgm.core.spec import DataSpec
from dgm.data import Dataset, load, names


def test_names_lists_every_dataset_with_one_line():
    listed = dict(names())
    assert list(listed) == [
        "8gaussians", "checkerboard", "rings", "ring8", "grid25", "moons",
        "digits", "mnist", "binarized-mnist",
    ]  # fmt: skip
    assert all(desc and "\n" not in desc for desc in listed.values())


def test_unknown_name_lists_datasets_closest_match_and_file_option():
    with pytest.raises(DataError) as err:
        load("8gausians")
    msg = str(err.value)
    assert "unknown dataset '8gausians' (did you mean '8gaussians'?)" in msg
    assert all(name in msg for name, _ in names())
    assert ".npy, .npz or .csv" in msg
    assert isinstance(err.value, ValueError)


def test_unknown_name_without_close_match():
    with pytest.raises(
        DataError, match="unknown dataset 'nosuchdata'; the datasets are: 8gaussians"
    ):
        load("nosuchdata")


def test_names_are_case_and_underscore_tolerant(tmp_path):
    assert load("RING8").name == "ring8"
    with pytest.raises(DataError, match="binarized-mnist needs binarized_mnist.npz"):
        load("Binarized_MNIST", data_dir=tmp_path)


def test_paths_go_to_the_file_reader(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(20, 3)))
    assert load(str(tmp_path / "x.npy")).spec == DataSpec((3,), "continuous")
    assert load(tmp_path / "x.npy").train.shape == (16, 3)
    (tmp_path / "x.txt").write_text("1,2\n")
    with pytest.raises(DataError, match="unknown extension '.txt'; give a .npy, .npz or .csv"):
        load(str(tmp_path / "x.txt"))
    with pytest.raises(DataError, match="does not exist"):
        load(str(tmp_path / "missing.csv"))


def test_seed_must_be_a_non_negative_integer():
    with pytest.raises(DataError, match="seed must be a non-negative integer"):
        load("ring8", seed=-1)


def test_split_accessor_and_bad_split_name():
    data = load("digits")
    x, y = data.split("val")
    assert x is data.val and y is data.val_labels
    with pytest.raises(
        DataError, match="unknown split 'valid'; the splits are 'train', 'val' and 'test'"
    ):
        data.split("valid")


def test_dataset_checks_shapes_against_its_spec():
    x = torch.zeros(4, 2)
    with pytest.raises(DataError, match=r"test split of dataset 'd' has shape \(4, 3\)"):
        Dataset("d", DataSpec((2,)), x, x, torch.zeros(4, 3))
    with pytest.raises(DataError, match="labels of dataset 'd' have shape"):
        Dataset("d", DataSpec((2,)), x, x, x, train_labels=torch.zeros(3, dtype=torch.long))
