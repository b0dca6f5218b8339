"""The conditional samples figure: one row per class drawn, in class order."""

from __future__ import annotations

import torch
from PIL import Image

from dgm.plots.conditional import class_rows, save_class_rows


def test_rows_are_the_classes_drawn_in_order_with_their_first_samples():
    labels = torch.tensor([7, 3, 7, 7, 3, 9])
    assert class_rows(labels, per_class=2) == [(3, [1, 4]), (7, [0, 2]), (9, [5])]
    assert class_rows(torch.full((12,), 3), per_class=10) == [(3, list(range(10)))]


def test_a_single_label_gets_a_single_row(tmp_path):
    """`dgm sample --label 3` draws one row, not empty rows for classes 0-2."""
    samples = torch.rand(20, 1, 4, 4)
    path = tmp_path / "s.png"
    save_class_rows(samples, torch.full((20,), 3), path, levels=None, title="t")
    one = Image.open(path).size[1]
    save_class_rows(samples, torch.arange(20) % 4, path, levels=None, title="t")
    four = Image.open(path).size[1]
    assert one == 100 and four == 240  # the figure is 0.6 inch a row, 1 inch at least, 100 dpi
