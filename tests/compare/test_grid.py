"""Model selection: grid values, cross-validation on train+validation, the test split untouched."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dgm.compare import compare, parse_grid, split_values
from dgm.core.errors import ConfigError
from dgm.data import load


def test_grid_values_split_on_commas_outside_brackets():
    assert split_values("[64,64],[32], 3") == ["[64,64]", "[32]", "3"]
    assert parse_grid(["hidden=[8,8],[16]", "lr=1e-3,3e-4"]) == {
        "hidden": ["[8,8]", "[16]"],
        "lr": ["1e-3", "3e-4"],
    }
    with pytest.raises(ConfigError, match="KEY=V1,V2"):
        parse_grid(["lr"])


@pytest.mark.slow  # 2 settings x 2 folds + 2 seeds of a tiny flow (~15 s on 2 quiet cores)
def test_grid_search_by_cross_validation_then_seeds_on_test(tmp_path, tiny):
    # small data, where cross-validation is worth its cost: 400 points, split 320 / 40 / 40
    points = load("8gaussians").test[:400].numpy()
    np.save(tmp_path / "small.npy", points)
    out = tmp_path / "cmp"
    doc = compare(
        ["nsf"], [str(tmp_path / "small.npy")], out, steps=10, seeds=2,
        grid={"depth": ["1", "2"]}, cv=2, model_configs=tiny.configs("nsf"),
        train_options=tiny.train, eval_options=tiny.eval, report=False,
    )  # fmt: skip
    row = doc["tables"][0]["rows"][0]
    sel = row["selection"]
    assert sel["by"] == "validation NLL, 2-fold cross-validation"
    chosen = min(sel["scores"], key=sel["scores"].get)
    assert row["selected"] == {"depth": chosen.split("=")[1]}
    # every score is the mean validation NLL of its folds; folds never see the test split
    for tag, score in sel["scores"].items():
        folds = [out / f"cv/small/nsf/{tag}/fold-{i}" for i in (1, 2)]
        vals = [json.loads((f / "summary.json").read_text())["val_nll"] for f in folds]
        assert score == pytest.approx(sum(vals) / 2)
        assert not any((f / "eval.json").exists() for f in folds)
    runs = sorted((out / "runs/small/nsf").iterdir())
    assert [p.name for p in runs] == [chosen]  # only the chosen setting met the test split
    nll = row["metrics"]["test_nll"]
    assert nll["n"] == 2 and nll["std"] is not None and nll["std"] > 0
    assert "±" in (out / "leaderboard.md").read_text()
