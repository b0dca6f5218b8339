"""dgm compare: equal budgets, sample options, one-sentence errors, resuming after a kill."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

import dgm.api
from dgm.cli.main import build_parser, main
from dgm.compare import compare
from dgm.models import get
from dgm.train.engine import Trainer


@pytest.mark.slow  # a tiny EBM trained 10 steps and evaluated (~5 s)
def test_sample_options_reach_the_model_and_the_leaderboard(tmp_path, monkeypatch, tiny):
    seen = []
    cls = get("ebm")
    real = cls.sample

    def spy(self, n, y=None, **options):
        seen.append(options)
        return real(self, n, y, **options)

    monkeypatch.setattr(cls, "sample", spy)
    doc = compare(
        ["ebm"], ["8gaussians"], tmp_path / "cmp", steps=10, model_configs=tiny.configs("ebm"),
        sample_options={"ebm": {"steps": 7, "sampler": "mala"}}, train_options=tiny.train,
        eval_options=tiny.eval | {"metrics": ["mmd"]}, report=False,
    )  # fmt: skip
    assert doc["tables"][0]["rows"][0]["status"] == "ok"
    assert {"steps": 7, "sampler": "mala"} in seen
    md = (tmp_path / "cmp" / "leaderboard.md").read_text()
    assert "ebm sampled with steps=7, sampler=mala" in md


@pytest.mark.parametrize(
    "argv, message",
    [
        (["compare", "nsf", "--data", "8gaussians", "--out", "x"], "--steps N or --max-minutes"),
        (["compare", "nsf", "nsff", "--data", "8gaussians", "--out", "x", "--steps", "5"],
         "unknown model 'nsff'"),
        (["compare", "nsf", "--data", "8gaussians", "--out", "x", "--steps", "5",
          "--grid", "no_such_key=1,2"], "neither a training option"),
        (["compare", "nsf", "--data", "8gaussians", "--out", "x", "--steps", "5", "--cv", "3"],
         "give --grid"),
        (["compare", "nsf", "--out", "x", "--steps", "5"], "give --data"),
        (["compare", "--preset", "toy3d", "--out", "x"],
         "unknown preset 'toy3d'; presets: digits, toy2d"),
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
def test_compare_end_to_end_resumes_after_an_interruption(tmp_path, monkeypatch, tiny):
    out = tmp_path / "cmp"
    models = ["nsf", "realnvp", "made"]
    kw = dict(
        steps=20, model_configs=tiny.configs("nsf", "realnvp"),
        train_options=tiny.train | {"eval_every": 2}, eval_options=tiny.eval,
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
    for name in ("nsf", "realnvp"):
        r = rows[name]
        assert r["likelihood"] == "log_prob: exact" and r["likelihood_kind"] == "exact"
        assert {"test_nll", "kl", "c2st_accuracy", "mmd2", "modes_captured"} <= set(r["metrics"])
        assert r["metrics"]["steps"]["mean"] == 20 and r["rank"] in (1, 2)
    md = (out / "leaderboard.md").read_text()
    assert "made: not applicable" in md and "(exact)" in md
    html = (out / "report.html").read_text()
    assert html.count("class='run'") == 2 and "data:image/png;base64," in html

    # a third call trains nothing and gives the same leaderboard
    spy.calls.clear()
    again = compare(models, ["8gaussians"], out, report=False, **kw)
    assert spy.calls == []
    assert [r.get("metrics") for r in again["tables"][0]["rows"]] == [
        r.get("metrics") for r in doc["tables"][0]["rows"]
    ]


def test_readme_compare_examples_parse():
    """The README's compare/report lines are valid commands (run for real by the tests above)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = re.search(r"## Comparing models\n\n```bash\n(.*?)```", readme, flags=re.S).group(1)
    lines = [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
    assert len(lines) == 4
    for line in lines:
        args = build_parser().parse_args(shlex.split(line)[1:])
        assert args.command in ("compare", "report")
        if args.command == "compare" and args.preset is None:
            get(args.models[0])  # registered names
            assert (args.steps is None) != (args.max_minutes is None)


def test_a_minutes_budget_alone_ends_each_run(tmp_path, tiny):
    # no step count is invented: the saved run has steps None and the budget, and time ended it
    compare(
        ["nsf"], ["8gaussians"], tmp_path / "cmp", max_minutes=0.005,
        model_configs=tiny.configs("nsf"), train_options=tiny.train,
        eval_options=tiny.eval | {"metrics": ["mmd"]}, report=False,
    )  # fmt: skip
    (run,) = [p.parent for p in (tmp_path / "cmp").rglob("config.yaml")]
    saved = dgm.api.read_run_config(run)["train"]
    assert saved["steps"] is None and saved["max_minutes"] == 0.005
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped_by_time"] and summary["steps"] >= 1
