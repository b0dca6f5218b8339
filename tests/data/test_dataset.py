"""What a Dataset declares for evaluation: its out-of-distribution partner and labelled data."""

from __future__ import annotations

import numpy as np
import torch

from dgm.core.spec import DataSpec
from dgm.data import Dataset, load
from dgm.data.files import load_file


def test_builtin_datasets_declare_their_partner_and_density():
    digits, ring8 = load("digits"), load("ring8")
    assert digits.ood_dataset == "mnist" and digits.density is None
    assert ring8.ood_dataset is None and ring8.density.modes.shape == (8, 2)
    assert load("moons").density.modes is None  # not made of separated modes
    x, y, xv, yv = digits.labelled_splits()
    assert torch.equal(x, digits.train) and torch.equal(yv, digits.val_labels)
    assert ring8.labelled_splits() is None


def test_declared_feature_data_stands_in_for_missing_labels():
    spec = DataSpec((1, 4, 4), "discrete", levels=2)
    x = torch.zeros(6, 1, 4, 4)
    y = torch.arange(6) % 2
    calls = []

    def labelled():
        calls.append(1)
        return x + 1, y, None, None

    plain = Dataset("plain", spec, x, x, x)
    declared = Dataset("declared", spec, x, x, x, feature_data=labelled)
    assert plain.labelled_splits() is None and not calls
    xs, ys, xv, yv = declared.labelled_splits()
    assert torch.equal(xs, x + 1) and torch.equal(ys, y) and xv is None and calls == [1]
    assert "feature_data" not in repr(declared) and declared == plain.__class__(
        "declared", spec, x, x, x
    )


def test_files_of_square_images_take_digits_as_their_partner(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "sq.npy", rng.integers(0, 17, (40, 8, 8)))
    np.save(tmp_path / "wide.npy", rng.integers(0, 17, (40, 8, 6)))
    np.save(tmp_path / "vec.npy", rng.normal(size=(40, 3)))
    assert load_file(tmp_path / "sq.npy").ood_dataset == "digits"
    assert load_file(tmp_path / "wide.npy").ood_dataset is None
    assert load_file(tmp_path / "vec.npy").ood_dataset is None
