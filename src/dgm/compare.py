"""``dgm compare``: train several models on the same data with equal budgets and rank them.

Every model gets the same budget (``steps``, or ``budget_minutes`` of training time that spans
resumes), the same data split (2-D data is drawn with data seed 0 whatever the training seed) and
the same training seeds ``0 .. seeds-1``; each run is then scored by :func:`dgm.eval.run.evaluate`
(every metric that applies) and the figures are aggregated over seeds as mean ± std
(:mod:`dgm.eval.leaderboard`). The output directory holds::

    DIR/runs/<data>/<model>/<setting>/seed-<k>/   ordinary dgm run directories, plus eval.json
    DIR/cv/<data>/<model>/<setting>/fold-<i>/     cross-validation runs (--cv)
    DIR/leaderboard.json, leaderboard.md, report.html

Resumable: a finished run (``summary.json``) with its ``eval.json`` is reused as it is; an
interrupted one continues from its last checkpoint through the engine's ``resume``; a run with
other settings than those asked for is an error rather than silently mixed in.

Model selection (``grid``): each setting is trained with seed 0 and scored on the *validation*
split, by validation NLL where the model has a likelihood, else by the MMD^2 between its samples
and the validation data; with ``cv=K``, by the mean of that score over K folds of train+validation
(Stone, 1974). Only the chosen setting is evaluated on the test split, so the test split never
chooses.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dgm import __version__
from dgm.core.config import build_config, config_to_dict
from dgm.core.errors import ConfigError, DgmError
from dgm.core.io import atomic_write_text
from dgm.models import get
from dgm.models import names as registered_names
from dgm.presets import FAMILIES, PRESETS, Preset
from dgm.train.checkpoint import latest_checkpoint
from dgm.train.config import TrainConfig

__all__ = ["FAMILIES", "PRESETS", "Preset", "compare", "parse_grid"]

#: training steps when the budget is time: large, so that the time limit ends the run
_UNLIMITED = 10**9


def split_values(text: str) -> list[str]:
    """Split ``v1,v2`` on commas outside brackets: ``"[64,64],[32]"`` -> ``["[64,64]", "[32]"]``."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[({"
        depth -= ch in "])}"
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return [v for v in out if v]


def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """``["hidden=[64],[128]", "lr=1e-3,3e-4"]`` -> ``{"hidden": [...], "lr": [...]}``."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not split_values(values):
            raise ConfigError(
                f"--grid takes KEY=V1,V2,... (e.g. --grid lr=1e-3,3e-4), not {item!r}"
            )
        grid[key.strip()] = split_values(values)
    return grid


def _slug(text: str) -> str:
    text = Path(text).stem if ("/" in text or "." in text) else text
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_") or "data"


def _settings(cls: type, grid: dict[str, list[str]]) -> list[tuple[str, dict, dict]]:
    """``(tag, model_overrides, train_overrides)`` for every grid point that applies to ``cls``:
    a key of its ``Config`` goes to the model, a key of ``TrainConfig`` to training."""
    model_keys = {f.name for f in dataclasses.fields(cls.Config)}
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    keys = [k for k in grid if k in model_keys or k in train_keys]
    out = []
    for values in itertools.product(*(grid[k] for k in keys)):
        point = dict(zip(keys, values))
        tag = ",".join(f"{k}={v}" for k, v in point.items()) or "default"
        m = {k: v for k, v in point.items() if k in model_keys}
        t = {k: v for k, v in point.items() if k not in model_keys}
        out.append((_slug(tag.replace(" ", "")), m, t))
    return out


def _say(text: str) -> None:
    print(f"dgm compare: {text}", file=sys.stderr, flush=True)


@dataclass
class _Comparison:
    out: Path
    steps: int | None
    budget_minutes: float | None
    seeds: int
    grid: dict[str, list[str]]
    cv: int
    train_options: dict[str, Any]
    model_configs: dict[str, dict[str, Any]]
    sample_options: dict[str, dict[str, Any]]
    eval_options: dict[str, Any]
    data_dir: str | None
    say: Callable[[str], None]
    run_dirs: list[Path] = field(default_factory=list)

    # ------------------------------------------------------------------ one run
    def train_options_for(self, seed: int, extra: dict[str, Any]) -> dict[str, Any]:
        opts: dict[str, Any] = {"seed": seed, "progress": False, "eval_size": 1000}
        if self.steps is not None:
            opts |= {"steps": self.steps, "eval_every": max(1, self.steps // 10)}
            opts["checkpoint_every"] = max(1, self.steps // 4)
        else:
            opts |= {"steps": _UNLIMITED, "max_minutes": self.budget_minutes, "eval_every": 100}
            opts["checkpoint_every"] = 200
        return opts | self.train_options | extra

    def _check_same(self, path: Path, name: str, model_cfg: dict, opts: dict) -> None:
        from dgm.api import read_run_config

        saved = read_run_config(path)
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
        from dgm.api import train

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
                train(name, data, path, resume=True, progress=False)
                return "resumed"
            train(name, data, path, overwrite=True, **kwargs, **opts)
            return "restarted"
        if path.exists() and any(path.iterdir()):
            raise DgmError(
                f"{path} holds files but no dgm run; delete it to let compare train there"
            )
        self.say(f"training {name} -> {path}")
        train(name, data, path, **kwargs, **opts)
        return "trained"

    def evaluate_run(self, path: Path, dataset: Any, seed: int) -> dict[str, Any]:
        """``eval.json`` of the run (computed once), with the training figures added."""
        from dgm.api import load_run
        from dgm.eval.run import evaluate

        target = path / "eval.json"
        if target.is_file():
            return json.loads(target.read_text())
        run = load_run(path)
        res = evaluate(
            run.model, dataset, run.preprocessor, seed=seed, data_dir=self.data_dir,
            sample_options=self.sample_options.get(run.model.name), **self.eval_options,
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
    def validation_score(self, path: Path, val_x: torch.Tensor) -> tuple[str, float]:
        """Validation NLL from the run's summary, else MMD^2 of its samples to ``val_x``."""
        summary = json.loads((path / "summary.json").read_text())
        if summary.get("val_nll") is not None:
            return "validation NLL", float(summary["val_nll"])
        cache = path / "validation.json"
        if cache.is_file():
            return "validation MMD²", float(json.loads(cache.read_text())["mmd2"])
        from dgm.api import load_run
        from dgm.eval.twosample import mmd2_unbiased

        run = load_run(path)
        n = min(1000, val_x.shape[0])
        with torch.random.fork_rng(devices=[]), run.model.inference():
            torch.manual_seed(0)
            s = run.preprocessor.inverse(run.model.sample(n)).to("cpu", torch.float32)
        value = float(mmd2_unbiased(val_x[:n].flatten(1), s.flatten(1)))
        atomic_write_text(cache, json.dumps({"mmd2": value}) + "\n")
        return "validation MMD²", value

    def folds(self, dataset: Any) -> list[Any]:
        from dgm.data import Dataset

        x = torch.cat([dataset.train, dataset.val])  # (N, *event)
        y = None
        if dataset.train_labels is not None and dataset.val_labels is not None:
            y = torch.cat([dataset.train_labels, dataset.val_labels])
        perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
        parts = perm.chunk(self.cv)
        out = []
        for i, held in enumerate(parts):
            rest = torch.cat([p for j, p in enumerate(parts) if j != i])
            pick = (lambda idx: None) if y is None else (lambda idx: y[idx])  # noqa: B023
            out.append(
                Dataset(
                    name=f"{dataset.name} (fold {i + 1} of {self.cv})",
                    spec=dataset.spec,
                    train=x[rest],
                    val=x[held],
                    test=x[held],
                    train_labels=pick(rest),
                    val_labels=pick(held),
                    test_labels=pick(held),
                )  # fmt: skip
            )
        return out

    def select(self, name: str, data: str, dataset: Any, settings: list) -> tuple[tuple, dict]:
        base = self.out / "runs" / _slug(data) / name
        scores: dict[str, float] = {}
        by = ""
        folds = self.folds(dataset) if self.cv else []
        for tag, m, t in settings:
            cfg = self.model_configs.get(name, {}) | m
            if self.cv:
                values = []
                for i, fold in enumerate(folds):
                    path = self.out / "cv" / _slug(data) / name / tag / f"fold-{i + 1}"
                    self.ensure_run(path, name, fold, cfg, self.train_options_for(0, t))
                    by, v = self.validation_score(path, fold.val)
                    values.append(v)
                scores[tag] = sum(values) / len(values)
            else:
                path = base / tag / "seed-0"
                self.ensure_run(path, name, data, cfg, self.train_options_for(0, t))
                by, scores[tag] = self.validation_score(path, dataset.val)
        best = min(settings, key=lambda s: scores[s[0]])
        how = by + (f", {self.cv}-fold cross-validation" if self.cv else "")
        return best, {"by": how, "scores": scores}

    # ------------------------------------------------------------------ one row
    def row(self, name: str, data: str, dataset: Any) -> dict[str, Any]:
        from dgm.data import default_preprocessor
        from dgm.eval.leaderboard import aggregate, likelihood_kind

        cls = get(name)
        row: dict[str, Any] = {"model": name, "family": cls.family, "status": "ok"}
        settings = _settings(cls, self.grid)
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
            path = self.out / "runs" / _slug(data) / name / tag / f"seed-{seed}"
            self.ensure_run(path, name, data, cfg, self.train_options_for(seed, t))
            results.append(self.evaluate_run(path, dataset, seed))
            runs.append(path)
        self.run_dirs += runs
        first = results[0]
        row |= {
            "likelihood": first.get("likelihood"),
            "likelihood_kind": likelihood_kind(first.get("likelihood")),
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


def _missing(name: str) -> dict[str, Any]:
    return {
        "model": name,
        "family": "",
        "status": "not available",
        "reason": "not registered in this version of dgm (its family has not landed yet)",
    }


def compare(
    models: Sequence[str],
    data: Sequence[str],
    out: str | Path,
    *,
    steps: int | None = None,
    budget_minutes: float | None = None,
    seeds: int = 1,
    grid: dict[str, list[str]] | None = None,
    cv: int = 0,
    train_options: dict[str, Any] | None = None,
    model_configs: dict[str, dict[str, Any]] | None = None,
    sample_options: dict[str, dict[str, Any]] | None = None,
    eval_options: dict[str, Any] | None = None,
    data_dir: str | None = None,
    missing_ok: bool = False,
    report: bool = True,
    command: str = "",
    say: Callable[[str], None] = _say,
) -> dict[str, Any]:
    """Train, evaluate and rank ``models`` on each dataset of ``data``; write the leaderboard
    (``leaderboard.json`` / ``.md``) and ``report.html`` into ``out``. Returns the leaderboard.

    Exactly one of ``steps`` and ``budget_minutes`` sets the budget of every run. Model names that
    are not registered are an error, unless ``missing_ok`` (presets): then they are listed as
    "not available". A model that fails is listed as "failed" with the reason, and the others go on.
    """
    from dgm.data import load as load_dataset
    from dgm.eval.leaderboard import rank_rows

    if (steps is None) == (budget_minutes is None):
        raise ConfigError("give the budget of every run: either --steps N or --budget-minutes M")
    if steps is not None and steps < 1:
        raise ConfigError(f"--steps must be at least 1, not {steps}")
    if budget_minutes is not None and not budget_minutes > 0:
        raise ConfigError(f"--budget-minutes must be positive, not {budget_minutes}")
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, not {seeds}")
    if cv == 1 or cv < 0:
        raise ConfigError(f"--cv takes the number of folds, at least 2, not {cv}")
    if not models or not data:
        raise ConfigError("name at least one model and one dataset to compare")
    grid = dict(grid or {})
    registered = set(registered_names())
    known = [m for m in dict.fromkeys(models) if m in registered or not missing_ok]
    for m in known:
        get(m)  # an unknown name is an error that lists the registered ones
    for key in grid:
        if not any(_settings(get(m), {key: grid[key]})[0][0] != "default" for m in known):
            raise ConfigError(f"--grid key {key!r} is neither a training option nor a "
                              "hyperparameter of any of the models compared")  # fmt: skip
    if cv and not grid:
        raise ConfigError("--cv chooses among --grid settings; give --grid KEY=V1,V2 as well")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    job = _Comparison(
        out=out, steps=steps, budget_minutes=budget_minutes, seeds=seeds, grid=grid, cv=cv,
        train_options=dict(train_options or {}), model_configs=dict(model_configs or {}),
        sample_options=dict(sample_options or {}), eval_options=dict(eval_options or {}),
        data_dir=data_dir, say=say,
    )  # fmt: skip
    doc: dict[str, Any] = {
        "dgm_version": __version__,
        "command": command,
        "budget": {"steps": steps} if steps is not None else {"minutes": budget_minutes},
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
        for name in dict.fromkeys(models):
            if name not in known:
                table["rows"].append(_missing(name))
                continue
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
        from dgm.plots.report import write_report

        write_report(job.run_dirs, out / "report.html", leaderboard=doc, base=out)
    return doc


def write_leaderboard(out: Path, doc: dict[str, Any]) -> None:
    """``leaderboard.json`` and ``leaderboard.md`` in ``out`` (each replaced atomically)."""
    from dgm.eval.leaderboard import document_markdown

    atomic_write_text(out / "leaderboard.json", json.dumps(doc, indent=2) + "\n")
    atomic_write_text(out / "leaderboard.md", document_markdown(doc))
