"""The terminal table of ``dgm eval``: figures with the context that makes them readable."""

from __future__ import annotations

import math

import pytest
import torch

from dgm.data import from_arrays
from dgm.eval.run import evaluate, format_table
from dgm.models import build


def test_bits_per_dim_sits_beside_the_uniform_baseline_and_is_flagged_when_worse():
    base = math.log2(17)
    good = format_table({"model": "m", "data": "digits", "test_bpd": 1.5, "bpd_uniform": base})
    assert "uniform over 17 levels: 4.087" in good and "WORSE" not in good
    bad = format_table({"model": "m", "data": "digits", "test_bpd": 5.2, "bpd_uniform": base})
    assert "WORSE than uniform" in bad


def test_evaluate_reports_the_baseline_of_the_levels_it_scores(one_thread):
    """Discrete data: log2(levels); a model that has learnt nothing sits near it."""
    x = torch.randint(0, 3, (60, 1, 3, 3)).float()
    x[0, 0, 0, 0] = 2
    data = from_arrays(x)
    model = build("made", data.spec, hidden=(8,))
    res = evaluate(model, data, metrics=["nll"])
    assert res["bpd_uniform"] == pytest.approx(math.log2(3))
    assert abs(res["test_bpd"] - math.log2(3)) < 0.5  # untrained: about uniform


def test_feature_scores_on_raw_vectors_are_not_printed_as_figures():
    res = {"model": "m", "data": "8gaussians", "fid": 0.037, "fid_space": "raw values",
           "kid": -0.43, "kid_std": 0.1, "kid_space": "raw values"}  # fmt: skip
    table = format_table(res)
    assert table.count("not meaningful on raw vector values") == 2
    assert "0.037" not in table and "-0.43" not in table


def test_a_negative_unbiased_estimate_says_so():
    res = {"model": "m", "data": "mnist", "mmd2": -0.0012, "kid": -0.002, "kid_std": 0.001,
           "kid_space": "features"}  # fmt: skip
    table = format_table(res)
    assert "MMD^2 (unbiased estimate, can be < 0)" in table
    assert table.count("below 0 by chance when the true value is near 0") == 2
    assert "-0.002 ± 0.001" in table
