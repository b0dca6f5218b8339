"""Leaderboards: likelihood kinds, mean ± std over seeds, ranking by a sample metric, Markdown."""

from __future__ import annotations

import pytest

from dgm.compare import aggregate, likelihood_kind, rank_rows, to_markdown


def test_likelihood_kinds_follow_the_name_the_model_returns():
    assert likelihood_kind("log_prob") == "exact"
    assert likelihood_kind("iwae_bound(k=100), a lower bound") == "bound"
    assert likelihood_kind("log_prob (dequantization bound)") == "bound"
    assert likelihood_kind("log_prob (Hutchinson trace estimate)") == "estimate"
    assert likelihood_kind(None) == "none"


def test_seeds_aggregate_to_mean_and_sample_std_and_rank_by_sample_metric():
    stats = aggregate([{"mmd2": 1.0, "n_test": 5, "ok": True}, {"mmd2": 2.0, "n_test": 5}])
    assert stats == {"mmd2": {"mean": 1.5, "std": pytest.approx(0.5**0.5), "n": 2}}
    rows = [
        {"model": "a", "status": "ok", "metrics": {"c2st_accuracy": {"mean": 0.9}}},
        {"model": "gan", "status": "ok", "likelihood_kind": "none",
         "metrics": {"c2st_accuracy": {"mean": 0.52}}},
        {"model": "z", "status": "not applicable", "reason": "needs discrete data"},
    ]  # fmt: skip
    assert rank_rows(rows) == "c2st_accuracy"
    # a model without a likelihood is ranked by its samples like every other
    assert [(r["model"], r["rank"]) for r in rows] == [("gan", 1), ("a", 2), ("z", None)]
    md = to_markdown({"data": "toy", "rank_by": "c2st_accuracy", "rows": rows})
    assert "| — | z |" in md and "not applicable: needs discrete data" in md
