"""``dgm compare``: train several models on the same data with equal budgets and rank them.

Every model gets the same budget (``steps``, or ``max_minutes`` that spans resumes and covers
training, the run's summary and its figures, not the evaluation below), the same data split (2-D data is drawn with data seed 0 whatever the training seed) and
the same training seeds ``0 .. seeds-1``; each run is then scored by :func:`dgm.eval.run.evaluate`
(every metric that applies) and the figures are aggregated over seeds as mean ± std
(:mod:`dgm.compare.leaderboard`). The output directory holds::

    DIR/runs/<data>/<model>/<setting>/seed-<k>/   ordinary dgm run directories, plus eval.json
    DIR/cv/<data>/<model>/<setting>/fold-<i>/     cross-validation runs (--cv)
    DIR/leaderboard.json, leaderboard.md, report.html

Resumable: a finished run (``summary.json``) with its ``eval.json`` is reused as it is; an
interrupted one continues from its last checkpoint through the engine's ``resume``; a run with
other settings than those asked for is an error rather than silently mixed in.

Model selection (``grid``, ``cv``) is :mod:`dgm.compare.grid`: only the chosen setting is
evaluated on the test split, so the test split never chooses.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dgm import __version__, api
from dgm.compare.grid import cv_folds, grid_points, slug, validation_score
from dgm.compare.leaderboard import aggregate, document_markdown, rank_rows, result_kind
from dgm.compare.report import write_report
from dgm.core.config import build_config, config_to_dict
from dgm.core.errors import ConfigError, DgmError
from dgm.core.io import atomic_write_text
from dgm.data import default_preprocessor
from dgm.data import load as load_dataset
from dgm.eval.run import evaluate
from dgm.models import get
from dgm.train.checkpoint import latest_checkpoint
from dgm.train.config import TrainConfig

__all__ = ["compare", "write_leaderboard"]


def _say(text: str) -> None:
    print(f"dgm compare: {text}", file=sys.stderr, flush=True)


@dataclass
class _Comparison:
    out: Path
    steps: int | None
    max_minutes: float | None
    seeds: int
    grid: dict[str, list[str]]
    cv: int
    train_options: dict[str, Any]
    model_configs: dict[str, dict[str, Any]]
    sample_options: dict[str, dict[str, Any]]
    eval_options: dict[str, Any]
    data_dir: str | None
    say: Callable[[str], None]
    progress: bool = True
    run_dirs: list[Path] = field(default_factory=list)

    # ------------------------------------------------------------------ one run
    def train_options_for(self, seed: int, extra: dict[str, Any]) -> dict[str, Any]:
        opts: dict[str, Any] = {"seed": seed, "progress": self.progress, "eval_size": 1000}
        if self.steps is not None:
            opts |= {"steps": self.steps, "eval_every": max(1, self.steps // 10)}
            opts["checkpoint_every"] = max(1, self.steps // 4)
        else:
            # steps=None: the budget alone ends the run (and no model default step count applies)
            opts |= {"steps": None, "max_minutes": self.max_minutes, "eval_every": 100}
            opts["checkpoint_every"] = 200
        return opts | self.train_options | extra

    def _check_same(self, path: Path, name: str, model_cfg: dict, opts: dict) -> None:
        saved = api.read_run_config(path)
        wanted_train = config_to_dict(build_config(TrainConfig, opts, what="training"))
        diffs = [f"model {saved['model']!r}, not {name!r}"] if saved["model"] != name else []
        diffs += [
            f"{k}={saved['model_config'].get(k)!r}, not {v!r}"
            for k, v in model_cfg.items()
            if saved["model_config"].get(k) != v
        ]
        diffs += [
            f"{k}={saved['train'].get(k)!r}, not {v!r}"
            for k, v in wanted_train.items()
            if k in opts and k != "progress" and saved["train"].get(k) != v
        ]
        if diffs:
            raise ConfigError(
                f"{path} holds a run with other settings ({'; '.join(diffs[:3])}); give another "
                "--out or delete that run to retrain it"
            )

    def ensure_run(self, path: Path, name: str, data: Any, model_cfg: dict, opts: dict) -> str:
        """Train, resume or reuse the run in ``path``; returns what was done."""
        cls = get(name)
        full_cfg = config_to_dict(build_config(cls.Config, model_cfg, what=f"model {name!r}"))
        kwargs = {"model_config": model_cfg, "data_dir": self.data_dir}
        if (path / "config.yaml").is_file():
            self._check_same(path, name, full_cfg, opts)
            if (path / "summary.json").is_file() and (path / "model.safetensors").is_file():
                return "reused"
            ckpt, _ = latest_checkpoint(path / "checkpoints")
            if ckpt is not None and isinstance(data, str):
                self.say(f"resuming {path} from {ckpt.name}")
                api.train(name, data, path, resume=True, progress=self.progress)
                return "resumed"
            api.train(name, data, path, overwrite=True, **kwargs, **opts)
            return "restarted"
        if path.exists() and any(path.iterdir()):
            raise DgmError(
                f"{path} holds files but no dgm run; delete it to let compare train there"
            )
        self.say(f"training {name} -> {path}")
        api.train(name, data, path, **kwargs, **opts)
        return "trained"

    def resolve_teacher(self, cfg: dict[str, Any], data: str, seed: int) -> dict[str, Any]:
        """``teacher="@MODEL"`` (a student's teacher, e.g. reflow's) names the default run of
        ``MODEL`` in this comparison on the same data and seed, which must come first."""
        teacher = cfg.get("teacher")
        if not (isinstance(teacher, str) and teacher.startswith("@")):
            return cfg
        path = self.out / "runs" / slug(data) / teacher[1:] / "default" / f"seed-{seed}"
        if not (path / "model.safetensors").is_file():
            raise ConfigError(
                f"teacher {teacher!r} has no finished run at {path}; compare {teacher[1:]!r} "
                "before its student, with the same data and seeds"
            )
        return cfg | {"teacher": str(path.resolve())}

    def evaluate_run(self, path: Path, dataset: Any, seed: int) -> dict[str, Any]:
        """``eval.json`` of the run (computed once), with the training figures added."""
        target = path / "eval.json"
        if target.is_file():
            return json.loads(target.read_text())
        run = api.load_run(path)
        res = evaluate(
            run.model, dataset, run.preprocessor, seed=seed, data_dir=self.data_dir,
            sample_options=self.sample_options.get(run.model.name), progress=self.progress,
            **self.eval_options,
        )  # fmt: skip
        summary = json.loads((path / "summary.json").read_text())
        res["parameters"] = sum(p.numel() for p in run.model.parameters())
        res["steps"] = summary.get("steps")
        res["train_seconds"] = summary.get("train_seconds_total", summary.get("train_seconds"))
        res["val_nll"] = summary.get("val_nll")
        res["seed"] = seed
        atomic_write_text(target, json.dumps(res, indent=2) + "\n")
        return res

    # ------------------------------------------------------------------ selection
    def select(self, name: str, data: str, dataset: Any, settings: list) -> tuple[tuple, dict]:
        base = self.out / "runs" / slug(data) / name
        scores: dict[str, float] = {}
        by = ""
        folds = cv_folds(dataset, self.cv) if self.cv else []
        for tag, m, t in settings:
            cfg = self.model_configs.get(name, {}) | m
            if self.cv:
                values = []
                for i, fold in enumerate(folds):
                    path = self.out / "cv" / slug(data) / name / tag / f"fold-{i + 1}"
                    self.ensure_run(path, name, fold, cfg, self.train_options_for(0, t))
                    by, v = validation_score(path, fold.val)
                    values.append(v)
                scores[tag] = sum(values) / len(values)
            else:
                path = base / tag / "seed-0"
                self.ensure_run(path, name, data, cfg, self.train_options_for(0, t))
                by, scores[tag] = validation_score(path, dataset.val)
        best = min(settings, key=lambda s: scores[s[0]])
        how = by + (f", {self.cv}-fold cross-validation" if self.cv else "")
        return best, {"by": how, "scores": scores}

    # ------------------------------------------------------------------ one row
    def row(self, name: str, data: str, dataset: Any) -> dict[str, Any]:
        cls = get(name)
        row: dict[str, Any] = {"model": name, "family": cls.family, "status": "ok"}
        settings = grid_points(cls, self.grid)
        try:  # can the model take this data at all?
            spec = default_preprocessor(dataset.spec, cls.data_kinds).spec(dataset.spec)
            cfg = self.model_configs.get(name, {}) | settings[0][1]
            cls(spec, build_config(cls.Config, cfg, what=f"model {name!r}"))
        except DgmError as e:
            return row | {"status": "not applicable", "reason": str(e)}
        selected, selection = settings[0], None
        if len(settings) > 1:
            selected, selection = self.select(name, data, dataset, settings)
        tag, m, t = selected
        cfg = self.model_configs.get(name, {}) | m
        results, runs = [], []
        for seed in range(self.seeds):
            path = self.out / "runs" / slug(data) / name / tag / f"seed-{seed}"
            cfg = self.resolve_teacher(cfg, data, seed)
            self.ensure_run(path, name, data, cfg, self.train_options_for(seed, t))
            results.append(self.evaluate_run(path, dataset, seed))
            runs.append(path)
        self.run_dirs += runs
        first = results[0]
        row |= {
            "likelihood": first.get("likelihood"),
            "likelihood_kind": result_kind(first),
            "likelihood_info": first.get("likelihood_info"),
            "metrics": aggregate(results),
            "runs": [str(p.relative_to(self.out)) for p in runs],
        }
        if first.get("fid_space"):
            row["fid_space"] = first["fid_space"]
        if first.get("modes_total"):
            row["modes_total"] = first["modes_total"]
        if selection is not None:
            row |= {"selected": m | t, "selection": selection}
        return row


def compare(
    models: Sequence[str],
    data: Sequence[str],
    out: str | Path,
    *,
    steps: int | None = None,
    max_minutes: float | None = None,
    seeds: int = 1,
    grid: dict[str, list[str]] | None = None,
    cv: int = 0,
    train_options: dict[str, Any] | None = None,
    model_configs: dict[str, dict[str, Any]] | None = None,
    sample_options: dict[str, dict[str, Any]] | None = None,
    eval_options: dict[str, Any] | None = None,
    data_dir: str | None = None,
    report: bool = True,
    command: str = "",
    say: Callable[[str], None] = _say,
    progress: bool = True,
) -> dict[str, Any]:
    """Train, evaluate and rank ``models`` on each dataset of ``data``; write the leaderboard
    (``leaderboard.json`` / ``.md``) and ``report.html`` into ``out``. Returns the leaderboard.

    Exactly one of ``steps`` and ``max_minutes`` (TrainConfig's time budget) sets the budget of
    every run. A model name that is not registered is an error that lists the registered ones; a
    model that cannot take the data is listed as "not applicable", one that fails as "failed"
    with the reason, and the others go on. ``progress`` shows each run's phases (training,
    summary, figures, evaluation) on stderr: a bar on a terminal, a line every ~10 s otherwise.
    """
    if (steps is None) == (max_minutes is None):
        raise ConfigError("give the budget of every run: either --steps N or --max-minutes M")
    if steps is not None and steps < 1:
        raise ConfigError(f"--steps must be at least 1, not {steps}")
    if max_minutes is not None and not max_minutes > 0:
        raise ConfigError(f"--max-minutes must be positive, not {max_minutes}")
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, not {seeds}")
    if cv == 1 or cv < 0:
        raise ConfigError(f"--cv takes the number of folds, at least 2, not {cv}")
    if not models or not data:
        raise ConfigError("name at least one model and one dataset to compare")
    grid = dict(grid or {})
    models = list(dict.fromkeys(models))
    for m in models:
        get(m)  # an unknown name is an error that lists the registered ones
    for key in grid:
        if not any(grid_points(get(m), {key: grid[key]})[0][0] != "default" for m in models):
            raise ConfigError(f"--grid key {key!r} is neither a training option nor a "
                              "hyperparameter of any of the models compared")  # fmt: skip
    if cv and not grid:
        raise ConfigError("--cv chooses among --grid settings; give --grid KEY=V1,V2 as well")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    job = _Comparison(
        out=out, steps=steps, max_minutes=max_minutes, seeds=seeds, grid=grid, cv=cv,
        train_options=dict(train_options or {}), model_configs=dict(model_configs or {}),
        sample_options=dict(sample_options or {}), eval_options=dict(eval_options or {}),
        data_dir=data_dir, say=say, progress=progress,
    )  # fmt: skip
    doc: dict[str, Any] = {
        "dgm_version": __version__,
        "command": command,
        "budget": {"steps": steps} if steps is not None else {"minutes": max_minutes},
        "seeds": seeds,
        "grid": grid,
        "cv": cv,
        "model_config": job.model_configs,
        "sample_options": job.sample_options,
        "tables": [],
        "complete": False,
    }
    failed = []
    for d in data:
        dataset = load_dataset(d, data_dir=data_dir)
        table: dict[str, Any] = {"data": d, "rows": []}
        doc["tables"].append(table)
        for name in models:
            t0 = time.perf_counter()
            try:
                row = job.row(name, d, dataset)
            except Exception as e:  # one model's failure does not stop the others
                reason = str(e) if isinstance(e, DgmError) else f"{type(e).__name__}: {e}"
                reason = reason.splitlines()[0][:400] if reason else type(e).__name__
                row = {"model": name, "family": get(name).family, "status": "failed"}
                row["reason"] = reason
                failed.append(f"{name} on {d}")
                say(f"{name} on {d} failed: {reason}")
            row["seconds"] = round(time.perf_counter() - t0, 1)
            table["rows"].append(row)
            table["rank_by"] = rank_rows(table["rows"])
            write_leaderboard(out, doc)
    doc["complete"] = True
    doc["failed"] = failed
    write_leaderboard(out, doc)
    if report:
        write_report(
            job.run_dirs, out / "report.html", leaderboard=doc, base=out, progress=progress
        )
    return doc


def write_leaderboard(out: Path, doc: dict[str, Any]) -> None:
    """``leaderboard.json`` and ``leaderboard.md`` in ``out`` (each replaced atomically)."""
    atomic_write_text(out / "leaderboard.json", json.dumps(doc, indent=2) + "\n")
    atomic_write_text(out / "leaderboard.md", document_markdown(doc))
