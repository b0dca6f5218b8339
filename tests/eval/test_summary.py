"""The run summary: which examples its NLL figures cover, and that it says so."""

from __future__ import annotations

import torch

from dgm.data import default_preprocessor, load
from dgm.eval import summary
from dgm.models import get


def test_summary_of_a_model_needing_autograd_scores_capped_splits_and_counts_them(monkeypatch):
    data = load("8gaussians")
    cls = get("nsf")
    pre = default_preprocessor(data.spec, cls.data_kinds)
    model = cls(pre.spec(data.spec), cls.Config(**cls.example.config))
    full = summary.summarize(model, data, pre)
    assert full["val_nll_examples"] == data.split("val")[0].shape[0]
    monkeypatch.setattr(summary, "SUMMARY_MAX_COSTLY", 40)
    monkeypatch.setattr(summary, "SUMMARY_MAX_COSTLY_TRAIN", 20)
    model.needs_grad_for_inference = True  # as a CNF or score-SDE likelihood does
    capped = summary.summarize(model, data, pre)
    assert (capped["train_nll_examples"], capped["val_nll_examples"]) == (20, 40)
    assert capped["test_nll_examples"] == 40
    x = data.split("val")[0][:40]
    with torch.no_grad():
        expected = -model.log_prob(pre(x)[0]).mean().item()
    assert abs(capped["val_nll"] - expected) < 1e-4
