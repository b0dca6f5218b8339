"""The end of a run (summary, figures) shows its progress and fits in the run's time budget; the
training loop reports progress off a terminal too. Time is a fake clock that the slow phases
advance, never the wall clock."""

from __future__ import annotations

import json

import dgm
from dgm import api
from dgm.eval import summary as summary_module
from dgm.models import get

TINY = {"depth": 1, "hidden": [8], "bins": 4}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _slow_phases(monkeypatch, clock, *, batch_seconds, sample_seconds):
    """Scoring a batch and drawing samples each cost fake seconds."""
    real_ll = summary_module.log_likelihood
    cls = get("nsf")
    real_sample = cls.sample

    def log_likelihood(*args, **kwargs):
        clock.now += batch_seconds
        return real_ll(*args, **kwargs)

    def sample(self, *args, **kwargs):
        clock.now += sample_seconds
        return real_sample(self, *args, **kwargs)

    monkeypatch.setattr(api, "_clock", clock, raising=False)  # absent before the budget
    monkeypatch.setattr(summary_module, "log_likelihood", log_likelihood, raising=False)
    monkeypatch.setattr(cls, "sample", sample)


def test_the_end_of_a_run_prints_a_progress_line_per_slow_phase(tmp_path, monkeypatch, capsys):
    clock = Clock()
    _slow_phases(monkeypatch, clock, batch_seconds=11.0, sample_seconds=25.0)
    dgm.train("nsf", "8gaussians", tmp_path / "r", steps=3, model_config=TINY)
    err = capsys.readouterr().err.splitlines()
    for split in ("test", "val", "train"):
        assert f"dgm: scoring the {split} split: 200/1000 examples (20%), 11 s" in err
        assert f"dgm: scoring the {split} split: 1000/1000 examples in 55 s" in err
    assert "dgm: drawing samples for samples.png: 2000/2000 samples (100%), 25 s" in err
    assert any(line.startswith("dgm: training nsf: 0/3 steps") for line in err)
    # nothing printed with progress off
    dgm.train("nsf", "8gaussians", tmp_path / "q", steps=3, model_config=TINY, progress=False)
    assert capsys.readouterr().err == ""


def test_a_minutes_budget_stops_scoring_and_figures_at_its_end(tmp_path, monkeypatch, capsys):
    # training costs no fake time (5 steps); the budget of 60 s leaves 60 s for the end: half of
    # it for scoring, in batches of 200 examples (test 0-20 s, val batches 20-24 and 24-28 s, the
    # one begun at 28 s stopped inside its call at 32 s, train not begun), the rest for figures: drawing samples begins at 32 s and
    # costs 30 s, so the sampling call is stopped at its first network pass after 60 s (no
    # samples.png), and density.png is not begun
    clock = Clock()
    _slow_phases(monkeypatch, clock, batch_seconds=4.0, sample_seconds=30.0)
    out = dgm.train("nsf", "8gaussians", tmp_path / "r", steps=5, max_minutes=1.0,
                    model_config=TINY)  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["test_nll_examples"], summary["val_nll_examples"]) == (1000, 400)
    assert summary["train_nll_examples"] == 0 and "train_nll" not in summary
    assert summary["cut_for_time"] == [
        "val (400 of 1000 examples scored)",
        "train (0 of 1000 examples scored)",
        "samples.png (not drawn)",
        "density.png (not drawn)",
    ]
    assert not (out / "samples.png").exists() and not (out / "density.png").exists()
    assert clock.now == 62.0
    err = capsys.readouterr().err
    assert "the time budget (--max-minutes 1) cut the end of the run" in err
    # without a budget the same run scores everything and draws every figure
    clock.now = 0.0
    out = dgm.train("nsf", "8gaussians", tmp_path / "q", steps=5, model_config=TINY)
    summary = json.loads((out / "summary.json").read_text())
    assert "cut_for_time" not in summary and summary["train_nll_examples"] == 1000
    assert (out / "density.png").is_file()


def test_training_reports_a_line_every_interval_off_a_terminal(tmp_path, monkeypatch, capsys):
    ticks = Clock()

    def clock():  # each reading moves the clock by a second
        ticks.now += 1.0
        return ticks.now

    monkeypatch.setattr(api, "_clock", clock, raising=False)  # absent before the budget
    dgm.train("nsf", "8gaussians", tmp_path / "r", steps=40, log_every=5, model_config=TINY)
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("dgm: training nsf")]
    assert lines[0] == "dgm: training nsf: 0/40 steps"
    steps = [int(x.split(": ")[2].split("/")[0]) for x in lines[1:-1]]
    assert len(steps) >= 2 and steps == sorted(steps) and all("loss" in x for x in lines[2:-1])
    assert lines[-1].startswith("dgm: training nsf: 40/40 steps in ")
