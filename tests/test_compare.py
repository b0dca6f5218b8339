"""dgm compare: equal budgets, leaderboards, model selection on validation data, resuming."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import dgm.api
from dgm.cli.main import main
from dgm.compare import FAMILIES, PRESETS, compare, parse_grid, split_values
from dgm.core.config import build_config
from dgm.core.errors import ConfigError
from dgm.data import load
from dgm.eval.leaderboard import aggregate, likelihood_kind, rank_rows, to_markdown
from dgm.models import get
from dgm.train.engine import Trainer

# tiny and fast: small test split, few samples, coarse KL grid
EVAL = {"max_test": 300, "num_samples": 200, "grid_size": 40}
TINY = {"batch_size": 64, "eval_size": 200, "log_every": 5}


def configs(*names: str) -> dict[str, dict]:
    return {n: dict(get(n).example.config) for n in names}


# ---------------------------------------------------------------------- pure pieces
def test_grid_values_split_on_commas_outside_brackets():
    assert split_values("[64,64],[32], 3") == ["[64,64]", "[32]", "3"]
    assert parse_grid(["hidden=[8,8],[16]", "lr=1e-3,3e-4"]) == {
        "hidden": ["[8,8]", "[16]"],
        "lr": ["1e-3", "3e-4"],
    }
    with pytest.raises(ConfigError, match="KEY=V1,V2"):
        parse_grid(["lr"])


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
        {"model": "z", "status": "not available", "reason": "not registered"},
    ]  # fmt: skip
    assert rank_rows(rows) == "c2st_accuracy"
    # a model without a likelihood is ranked by its samples like every other
    assert [(r["model"], r["rank"]) for r in rows] == [("gan", 1), ("a", 2), ("z", None)]
    md = to_markdown({"data": "toy", "rank_by": "c2st_accuracy", "rows": rows})
    assert "| — | z |" in md and "not available: not registered" in md


def test_presets_name_models_in_one_place_and_fit_the_time_budget():
    for name, p in PRESETS.items():
        assert set(p.models) <= set(FAMILIES), name
        assert p.budget_minutes is not None or p.steps is not None
        # training budget of every (model, dataset) pair well under 15 minutes on 2 cores
        if p.budget_minutes:
            assert len(p.models) * len(p.data) * p.budget_minutes * p.seeds < 10
        # every override names a model of the preset and valid fields (a typo would fail late)
        for model, cfg in p.model_config.items():
            assert model in p.models
            build_config(get(model).Config, cfg)
        for model, opts in p.sample_options.items():
            assert model in p.models
            build_config(get(model).SampleOptions, opts)


@pytest.mark.slow  # a tiny EBM trained 10 steps and evaluated (~5 s)
def test_sample_options_reach_the_model_and_the_leaderboard(tmp_path, monkeypatch):
    seen = []
    cls = get("ebm")
    real = cls.sample

    def spy(self, n, y=None, **options):
        seen.append(options)
        return real(self, n, y, **options)

    monkeypatch.setattr(cls, "sample", spy)
    doc = compare(
        ["ebm"], ["8gaussians"], tmp_path / "cmp", steps=10, model_configs=configs("ebm"),
        sample_options={"ebm": {"steps": 7, "sampler": "mala"}}, train_options=TINY,
        eval_options=EVAL | {"metrics": ["mmd"]}, report=False,
    )  # fmt: skip
    assert doc["tables"][0]["rows"][0]["status"] == "ok"
    assert {"steps": 7, "sampler": "mala"} in seen
    md = (tmp_path / "cmp" / "leaderboard.md").read_text()
    assert "ebm sampled with steps=7, sampler=mala" in md


@pytest.mark.parametrize(
    "argv, message",
    [
        (["compare", "nsf", "--data", "8gaussians", "--out", "x"], "--steps N or --budget"),
        (["compare", "nsf", "nsff", "--data", "8gaussians", "--out", "x", "--steps", "5"],
         "unknown model 'nsff'"),
        (["compare", "nsf", "--data", "8gaussians", "--out", "x", "--steps", "5",
          "--grid", "no_such_key=1,2"], "neither a training option"),
        (["compare", "nsf", "--data", "8gaussians", "--out", "x", "--steps", "5", "--cv", "3"],
         "give --grid"),
        (["compare", "nsf", "--out", "x", "--steps", "5"], "give --data"),
    ],
)  # fmt: skip
def test_bad_compare_arguments_are_one_sentence(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x" / "runs").exists()


# ---------------------------------------------------------------------- end to end
class _Spy:
    def __init__(self, monkeypatch):
        self.calls: list[tuple[str, bool]] = []
        real = dgm.api.train

        def spy(model, data, out, **kw):
            self.calls.append((Path(out).parts[-3], bool(kw.get("resume"))))
            return real(model, data, out, **kw)

        monkeypatch.setattr(dgm.api, "train", spy)


@pytest.mark.slow  # two tiny models trained, evaluated and reported (~15 s on 2 quiet cores)
def test_compare_end_to_end_resumes_after_an_interruption(tmp_path, monkeypatch):
    out = tmp_path / "cmp"
    models = ["nsf", "realnvp", "made", "not-yet-a-model"]
    kw = dict(
        steps=20, model_configs=configs("nsf", "realnvp"), train_options=TINY | {"eval_every": 2},
        eval_options=EVAL, missing_ok=True,
    )  # fmt: skip
    # interrupt the second model after its checkpoint at step 10 (as Ctrl-C or a kill would)
    real_save = Trainer.save_checkpoint

    def save_then_interrupt(self):
        real_save(self)
        if "realnvp" in str(self.out) and self.step >= 10:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        compare(models, ["8gaussians"], out, **kw)
    first = out / "runs/8gaussians/nsf/default/seed-0"
    second = out / "runs/8gaussians/realnvp/default/seed-0"
    assert (first / "eval.json").is_file() and not (second / "summary.json").exists()
    partial = json.loads((out / "leaderboard.json").read_text())
    assert partial["complete"] is False and partial["tables"][0]["rows"][0]["model"] == "nsf"
    before = {p: (first / p).stat().st_mtime_ns for p in ("model.safetensors", "eval.json")}
    first_eval = (first / "eval.json").read_text()

    monkeypatch.setattr(Trainer, "save_checkpoint", real_save)
    spy = _Spy(monkeypatch)
    doc = compare(models, ["8gaussians"], out, **kw)
    # the finished run was reused as it was; the interrupted one resumed from its checkpoint
    assert spy.calls == [("realnvp", True)]
    assert {p: (first / p).stat().st_mtime_ns for p in before} == before
    assert (first / "eval.json").read_text() == first_eval
    val_steps = [
        r["step"] for r in map(json.loads, open(second / "metrics.jsonl")) if "val_nll" in r
    ]
    assert val_steps == list(range(2, 21, 2))  # steps 2..10 once: not retrained from scratch

    rows = {r["model"]: r for r in doc["tables"][0]["rows"]}
    assert doc["complete"] and rows["nsf"]["status"] == rows["realnvp"]["status"] == "ok"
    assert rows["made"]["status"] == "not applicable" and "discrete" in rows["made"]["reason"]
    assert rows["not-yet-a-model"]["status"] == "not available"
    for name in ("nsf", "realnvp"):
        r = rows[name]
        assert r["likelihood"] == "log_prob" and r["likelihood_kind"] == "exact"
        assert {"test_nll", "kl", "c2st_accuracy", "mmd2", "modes_captured"} <= set(r["metrics"])
        assert r["metrics"]["steps"]["mean"] == 20 and r["rank"] in (1, 2)
    md = (out / "leaderboard.md").read_text()
    assert "not-yet-a-model" in md and "not available" in md and "(exact)" in md
    html = (out / "report.html").read_text()
    assert html.count("class='run'") == 2 and "data:image/png;base64," in html

    # a third call trains nothing and gives the same leaderboard
    spy.calls.clear()
    again = compare(models, ["8gaussians"], out, report=False, **kw)
    assert spy.calls == []
    assert [r.get("metrics") for r in again["tables"][0]["rows"]] == [
        r.get("metrics") for r in doc["tables"][0]["rows"]
    ]


@pytest.mark.slow  # 2 settings x 2 folds + 2 seeds of a tiny flow (~15 s on 2 quiet cores)
def test_grid_search_by_cross_validation_then_seeds_on_test(tmp_path):
    # small data, where cross-validation is worth its cost: 400 points, split 320 / 40 / 40
    points = load("8gaussians").test[:400].numpy()
    np.save(tmp_path / "small.npy", points)
    out = tmp_path / "cmp"
    doc = compare(
        ["nsf"], [str(tmp_path / "small.npy")], out, steps=10, seeds=2,
        grid={"num_layers": ["1", "2"]}, cv=2, model_configs=configs("nsf"), train_options=TINY,
        eval_options=EVAL, report=False,
    )  # fmt: skip
    row = doc["tables"][0]["rows"][0]
    sel = row["selection"]
    assert sel["by"] == "validation NLL, 2-fold cross-validation"
    chosen = min(sel["scores"], key=sel["scores"].get)
    assert row["selected"] == {"num_layers": chosen.split("=")[1]}
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


def test_readme_compare_examples_parse():
    """The README's compare/report lines are valid commands (run for real by the tests above)."""
    import re
    import shlex

    from dgm.cli.main import build_parser

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"## Comparing models\n\n```bash\n(.*?)```", readme, flags=re.S).group(1)
    lines = [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
    assert len(lines) == 4
    for line in lines:
        args = build_parser().parse_args(shlex.split(line)[1:])
        assert args.command in ("compare", "report")
        if args.command == "compare" and args.preset is None:
            get(args.models[0])  # registered names
            assert (args.steps is None) != (args.budget_minutes is None)
