"""The run summary: every family scores the same examples, says when they are a subset, reports
progress and heeds a time budget (on fake clocks)."""

from __future__ import annotations

import torch

from dgm.core.progress import Deadline
from dgm.data import default_preprocessor, load
from dgm.data.dataset import fixed_subset
from dgm.eval import summary
from dgm.models import get
from dgm.samplers.ode import odeint


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _nsf():
    data = load("8gaussians")
    cls = get("nsf")
    pre = default_preprocessor(data.spec, cls.data_kinds)
    return cls(pre.spec(data.spec), cls.Config(**cls.example.config)), data, pre


def test_every_family_scores_the_same_fixed_subset_and_says_it_is_a_subset():
    model, data, pre = _nsf()
    cheap = summary.summarize(model, data, pre, max_examples=40)
    model.needs_grad_for_inference = True  # as a CNF or score-SDE likelihood does
    costly = summary.summarize(model, data, pre, max_examples=40)
    for res in (cheap, costly):
        for split in ("train", "val", "test"):
            assert res[f"{split}_nll_examples"] == 40
            assert res[f"{split}_examples"] == data.split(split)[0].shape[0] > 40
        assert res["summary_examples"] == 40
        note = res["summary_note"]
        assert "40 of" in note and "fixed random subset" in note and "dgm eval" in note
    test = data.split("test")[0]
    x = test[fixed_subset(test.shape[0], 40)]
    with torch.no_grad():
        expected = -model.log_prob(pre(x)[0]).mean().item()
    assert abs(costly["test_nll"] - expected) < 1e-4
    assert costly["test_nll"] == cheap["test_nll"]  # the same examples, in batches or not


def test_the_default_is_one_fixed_count_for_every_split():
    model, data, pre = _nsf()
    res = summary.summarize(model, data, pre)
    n = summary.SUMMARY_EXAMPLES
    assert [res[f"{s}_nll_examples"] for s in ("train", "val", "test")] == [
        min(n, data.split(s)[0].shape[0]) for s in ("train", "val", "test")
    ]
    full = summary.summarize(model, data, pre, max_examples=None)
    assert full["test_nll_examples"] == data.split("test")[0].shape[0]
    assert "summary_note" not in full or "test" not in full["summary_note"]


def test_scoring_stops_at_the_deadline_between_batches_and_names_the_cut(monkeypatch):
    model, data, pre = _nsf()
    model.needs_grad_for_inference = True  # batches of 100
    clock = Clock()
    real = summary.log_likelihood

    def slow(*args, **kwargs):
        clock.now += 10.0  # every batch costs 10 s of the fake clock
        return real(*args, **kwargs)

    monkeypatch.setattr(summary, "log_likelihood", slow)
    res = summary.summarize(model, data, pre, max_examples=300, deadline=Deadline(45.0, clock))
    # test: 3 batches (0 -> 30 s); val: one batch 30 -> 40 s, another begun at 40 s is stopped
    # at the deadline (45 s) inside its call; then no more
    assert res["test_nll_examples"] == 300 and res["val_nll_examples"] == 100
    assert res["train_nll_examples"] == 0 and "train_nll" not in res
    assert res["cut_for_time"] == [
        "val (100 of 300 examples scored)",
        "train (0 of 300 examples scored)",
    ]
    assert clock.now == 50.0  # no batch began after the deadline


def test_each_split_reports_progress_on_stderr(monkeypatch, capsys):
    model, data, pre = _nsf()
    model.needs_grad_for_inference = True
    clock = Clock()
    real = summary.log_likelihood

    def slow(*args, **kwargs):
        clock.now += 6.0
        return real(*args, **kwargs)

    monkeypatch.setattr(summary, "log_likelihood", slow)
    summary.summarize(model, data, pre, max_examples=300, deadline=Deadline(None, clock),
                      progress=True)  # fmt: skip
    err = capsys.readouterr().err.splitlines()
    n = data.split("test")[0].shape[0]
    assert err[:4] == [
        "dgm: scoring the test split: 0/300 examples",
        f"dgm: scoring the test split: 300 of {n} examples, a fixed random subset "
        "(`dgm eval` scores them all)",
        "dgm: scoring the test split: 200/300 examples (67%), 12 s",
        "dgm: scoring the test split: 300/300 examples in 18 s",
    ]
    assert any(line.startswith("dgm: scoring the train split: 200/300") for line in err)


def test_an_ode_likelihood_over_the_step_cap_is_not_scored_and_says_why(monkeypatch):
    """The end-of-run summary caps each adaptive ODE solve (SUMMARY_ODE_STEPS dopri5 steps): a
    model whose solve needs more is reported as not scored, with the reason, for every split."""
    model, data, pre = _nsf()
    real = summary.log_likelihood
    calls = []

    def stiff(*args, **kwargs):
        calls.append(1)
        # an ODE whose step size must stay tiny: exp(-10000 t) needs ~3000 steps (explicit stability)
        odeint(lambda t, y: -10000.0 * y, torch.ones(1, dtype=torch.float64), 0.0, 1.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(summary, "log_likelihood", stiff)
    res = summary.summarize(model, data, pre, max_examples=300)
    assert len(calls) == 1  # stopped in the first batch; the other splits not attempted
    for split in ("test", "val", "train"):
        assert res[f"{split}_nll_examples"] == 0 and f"{split}_nll" not in res
        assert "cap of the end-of-run summary" in res[f"{split}_nll_skipped"]
    assert "cut_for_time" not in res
    # the same solve without the cap succeeds (the cap is the summary's, not the solver's)
    y = odeint(lambda t, y: -10000.0 * y, torch.ones(1, dtype=torch.float64), 0.0, 1.0)
    assert abs(float(y)) < 1e-4  # exp(-10000) within the tolerance


def test_the_fixed_subset_is_a_seeded_spread_sample_not_the_first_examples():
    """The summary's and validation's subset: the same indices every call, distinct, drawn from
    the whole split (an ordered split's first examples are a biased sample), and all examples in
    order when the subset would be the split."""
    a, b = fixed_subset(10000, 1000), fixed_subset(10000, 1000)
    assert torch.equal(a, b) and a.unique().numel() == 1000
    assert 0 <= int(a.min()) and int(a.max()) < 10000
    # spread: every tenth of the split holds a share near 100 (binomial sd ~9.5)
    counts = torch.bincount(a // 1000, minlength=10)
    assert int(counts.min()) >= 60 and int(counts.max()) <= 140
    assert fixed_subset(40, 40) is None and fixed_subset(40, 100) is None
