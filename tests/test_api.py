"""dgm.train merges a model's own training options (``train_defaults``) under the caller's."""

from __future__ import annotations

import json

import pytest
import yaml

import dgm
import dgm.data
from dgm.api import with_train_defaults
from dgm.core.config import build_config
from dgm.models import get, names
from dgm.train.config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return dgm.data.load("8gaussians")


def run(monkeypatch, data, tmp_path, defaults, **options):
    nsf = get("nsf")
    monkeypatch.setattr(nsf, "train_defaults", defaults)
    out = dgm.train(
        "nsf", data, tmp_path / "run", model_config=dict(nsf.example.config),
        batch_size=32, progress=False, **options,
    )  # fmt: skip
    train = yaml.safe_load((out / "config.yaml").read_text())["train"]
    return train, json.loads((out / "summary.json").read_text())


def test_the_models_own_step_count_is_used_when_the_caller_gives_none(monkeypatch, data, tmp_path):
    train, summary = run(monkeypatch, data, tmp_path, {"steps": 3, "lr": 2e-3})
    assert train["steps"] == 3 and summary["steps"] == 3
    assert train["lr"] == 2e-3


def test_the_callers_steps_replace_the_models(monkeypatch, data, tmp_path):
    train, summary = run(monkeypatch, data, tmp_path, {"steps": 3, "lr": 2e-3}, steps=2)
    assert train["steps"] == 2 and summary["steps"] == 2
    assert train["lr"] == 2e-3  # the other defaults stay


def test_the_callers_epochs_replace_the_models_steps(monkeypatch, data, tmp_path):
    # (the time budget only keeps the epoch short)
    train, _ = run(monkeypatch, data, tmp_path, {"steps": 3}, epochs=1, max_minutes=0.001)
    assert train["steps"] is None and train["epochs"] == 1


def test_a_time_budget_replaces_the_models_steps_and_its_schedule_decays_over_it(
    monkeypatch, data, tmp_path
):
    defaults = {"steps": 3, "schedule": "cosine"}
    train, _ = run(monkeypatch, data, tmp_path, defaults, max_minutes=0.001)
    assert train["steps"] is None and train["max_minutes"] == 0.001
    assert train["schedule"] == "cosine" and train["schedule_clock"] == "time"


@pytest.mark.parametrize("name", names())
def test_every_models_train_defaults_make_a_valid_run_alone_with_steps_or_a_time_budget(name):
    defaults = get(name).train_defaults
    for options, steps in (
        ({}, defaults.get("steps")),
        ({"steps": 7}, 7),
        ({"max_minutes": 1.0}, None),
    ):
        cfg = build_config(TrainConfig, with_train_defaults(defaults, options), what="training")
        assert cfg.steps == steps
        assert cfg.total_steps(100) is not None or cfg.max_minutes == 1.0
