"""Engine options used by dgm compare: a time budget that spans resumes, TensorBoard logging."""

from __future__ import annotations

import json
import sys
import types

import pytest

import dgm
from dgm.cli.main import main
from dgm.core.errors import DgmError
from dgm.train.config import TRAINING_SHARE

TINY = {"depth": 1, "hidden": [8], "bins": 4}


def test_time_budget_stops_training_and_spans_resumes(tmp_path):
    out = dgm.train(
        "nsf", "8gaussians", tmp_path / "r", steps=10**7, max_minutes=0.003, log_every=10,
        checkpoint_every=0, model_config=TINY, progress=False,
    )  # fmt: skip
    first = json.loads((out / "summary.json").read_text())
    assert first["stopped_by_time"] and 1 <= first["steps"] < 10**7
    assert first["train_seconds_total"] >= 0.18 * TRAINING_SHARE  # the rest is the end's
    # resumed, the run has no budget left: at most one more step
    again = dgm.train("nsf", "8gaussians", out, resume=True)
    second = json.loads((again / "summary.json").read_text())
    assert second["stopped_by_time"] and second["steps"] - first["steps"] <= 1
    with pytest.raises(DgmError, match="max_minutes must be >= 0"):
        dgm.train("nsf", "8gaussians", tmp_path / "bad", steps=2, max_minutes=-1.0)


class _Writer:
    """Stands in for torch.utils.tensorboard.SummaryWriter and records what it is given."""

    instances: list[_Writer] = []

    def __init__(self, log_dir: str) -> None:
        self.log_dir, self.scalars, self.closed = log_dir, [], False
        _Writer.instances.append(self)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))

    def close(self) -> None:
        self.closed = True


def test_tensorboard_logs_every_metric_line(tmp_path, monkeypatch, capsys):
    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = _Writer
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    _Writer.instances.clear()
    argv = ["train", "nsf", "--data", "8gaussians", "--out", str(tmp_path / "r"), "--steps", "6",
            "--eval-every", "3", "--train-set", "log_every=2", "--set", "depth=1",
            "--tensorboard", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    (w,) = _Writer.instances
    assert w.closed and w.log_dir == str(tmp_path / "r" / "tensorboard")
    tags = {(t, s) for t, _, s in w.scalars}
    assert {("loss", 2), ("loss", 4), ("loss", 6), ("val_nll", 3), ("val_nll", 6)} <= tags
    logged = [json.loads(line) for line in open(tmp_path / "r" / "metrics.jsonl")]
    assert {(k, r["step"]) for r in logged for k in r if k != "step"} == tags


def test_tensorboard_missing_is_one_clear_sentence(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    argv = ["train", "nsf", "--data", "8gaussians", "--out", str(tmp_path / "r"), "--steps", "2",
            "--tensorboard", "--no-progress"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "needs the tensorboard package" in err and "dgm[tensorboard]" in err


def test_max_minutes_flag_alone_trains_until_the_time_is_up(tmp_path):
    out = tmp_path / "r"
    argv = ["train", "nsf", "--data", "8gaussians", "--out", str(out), "--max-minutes", "0.002",
            "--set", "depth=1", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by_time"] and summary["steps"] >= 1
    assert summary["train_seconds_total"] >= 0.12 * TRAINING_SHARE
    cfg = (out / "config.yaml").read_text()
    assert "max_minutes: 0.002" in cfg and "steps: null" in cfg
