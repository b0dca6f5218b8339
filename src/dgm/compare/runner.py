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

from dgm import __version__
from dgm.compare.executors import (
    EXECUTORS,
    LocalExecutor,
    RayExecutor,
    RunJob,
    failure_reason,
    require_ray,
)
from dgm.compare.grid import cv_folds, grid_points, slug, validation_score
from dgm.compare.leaderboard import aggregate, document_markdown, rank_rows, result_kind
from dgm.compare.report import write_report
from dgm.core.config import build_config
from dgm.core.errors import ConfigError, DgmError
from dgm.core.io import atomic_write_text
from dgm.data import default_preprocessor
from dgm.data import load as load_dataset
from dgm.models import get

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
    executor: LocalExecutor | RayExecutor = field(init=False)

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

    def job(
        self, path: Path, name: str, data: str, model_cfg: dict, opts: dict, *,
        seed: int = 0, evaluate: bool = False, fold: tuple[int, int] | None = None,
    ) -> RunJob:  # fmt: skip
        return RunJob(
            path=str(path), model=name, data=data, model_config=model_cfg, train_options=opts,
            seed=seed, evaluate=evaluate, fold=fold, data_dir=self.data_dir,
            sample_options=self.sample_options.get(name, {}), eval_options=self.eval_options,
            progress=self.progress,
        )  # fmt: skip

    def run(self, job: RunJob) -> dict[str, Any]:
        """The run of ``job`` carried out (or reused) by the executor."""
        return self.executor.result(job)

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

    # ------------------------------------------------------------------ selection
    def selection_jobs(self, name: str, data: str, settings: list) -> list[tuple[str, RunJob]]:
        """``(tag, job)`` of every run that scores a grid point (seed 0, or each CV fold)."""
        jobs = []
        for tag, m, t in settings:
            cfg = self.model_configs.get(name, {}) | m
            opts = self.train_options_for(0, t)
            if self.cv:
                for i in range(self.cv):
                    path = self.out / "cv" / slug(data) / name / tag / f"fold-{i + 1}"
                    jobs.append((tag, self.job(path, name, data, cfg, opts, fold=(self.cv, i))))
            else:
                path = self.out / "runs" / slug(data) / name / tag / "seed-0"
                jobs.append((tag, self.job(path, name, data, cfg, opts)))
        return jobs

    def select(self, name: str, data: str, dataset: Any, settings: list) -> tuple[tuple, dict]:
        folds = cv_folds(dataset, self.cv) if self.cv else []
        values: dict[str, list[float]] = {tag: [] for tag, _, _ in settings}
        by = ""
        jobs = self.selection_jobs(name, data, settings)
        for _, job in jobs:
            self.executor.submit(job)
        for tag, job in jobs:
            self.run(job)
            val = folds[job.fold[1]].val if job.fold is not None else dataset.val
            by, v = validation_score(Path(job.path), val)
            values[tag].append(v)
        scores = {tag: sum(v) / len(v) for tag, v in values.items()}
        best = min(settings, key=lambda s: scores[s[0]])
        how = by + (f", {self.cv}-fold cross-validation" if self.cv else "")
        return best, {"by": how, "scores": scores}

    # ------------------------------------------------------------------ one row
    def seed_jobs(self, name: str, data: str, selected: tuple) -> list[RunJob]:
        """The runs of the row's chosen setting, one per seed, each evaluated on the test split."""
        tag, m, t = selected
        cfg = self.model_configs.get(name, {}) | m
        jobs = []
        for seed in range(self.seeds):
            path = self.out / "runs" / slug(data) / name / tag / f"seed-{seed}"
            cfg = self.resolve_teacher(cfg, data, seed)
            opts = self.train_options_for(seed, t)
            jobs.append(self.job(path, name, data, cfg, opts, seed=seed, evaluate=True))
        return jobs

    def not_applicable(self, name: str, dataset: Any, settings: list) -> str | None:
        """Why the model cannot take this data at all (``None`` when it can)."""
        cls = get(name)
        try:
            spec = default_preprocessor(dataset.spec, cls.data_kinds).spec(dataset.spec)
            cfg = self.model_configs.get(name, {}) | settings[0][1]
            cls(spec, build_config(cls.Config, cfg, what=f"model {name!r}"))
        except DgmError as e:
            return str(e)
        return None

    def prefetch(self, name: str, data: str, dataset: Any) -> None:
        """Submit the runs of a row that are known before any of its runs ends (its grid
        points, or its seeds), so that a parallel executor runs rows side by side. A student
        waits for its teacher's row; whatever cannot be planned here waits for :meth:`row`."""
        settings = grid_points(get(name), self.grid)
        try:
            if self.not_applicable(name, dataset, settings) is not None:
                return
            cfg = self.model_configs.get(name, {}) | settings[0][1]
            if len(settings) > 1:
                jobs = [job for _, job in self.selection_jobs(name, data, settings)]
            elif str(cfg.get("teacher", "")).startswith("@"):
                return
            else:
                jobs = self.seed_jobs(name, data, settings[0])
        except DgmError:
            return  # row() meets the same error and records it
        for job in jobs:
            self.executor.submit(job)

    def row(self, name: str, data: str, dataset: Any) -> dict[str, Any]:
        cls = get(name)
        row: dict[str, Any] = {"model": name, "family": cls.family, "status": "ok"}
        settings = grid_points(cls, self.grid)
        reason = self.not_applicable(name, dataset, settings)
        if reason is not None:
            return row | {"status": "not applicable", "reason": reason}
        selected, selection = settings[0], None
        if len(settings) > 1:
            selected, selection = self.select(name, data, dataset, settings)
        jobs = self.seed_jobs(name, data, selected)
        for job in jobs:
            self.executor.submit(job)
        results = [self.run(job)["eval"] for job in jobs]
        runs = [Path(job.path) for job in jobs]
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
            _, m, t = selected
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
    executor: str = "local",
    address: str | None = None,
    jobs: int | None = None,
    cpus_per_run: float = 1,
) -> dict[str, Any]:
    """Train, evaluate and rank ``models`` on each dataset of ``data``; write the leaderboard
    (``leaderboard.json`` / ``.md``) and ``report.html`` into ``out``. Returns the leaderboard.

    Exactly one of ``steps`` and ``max_minutes`` (TrainConfig's time budget) sets the budget of
    every run. A model name that is not registered is an error that lists the registered ones; a
    model that cannot take the data is listed as "not applicable", one that fails as "failed"
    with the reason, and the others go on. ``progress`` shows each run's phases (training,
    summary, figures, evaluation) on stderr: a bar on a terminal, a line every ~10 s otherwise.

    ``executor`` says where the runs happen (:mod:`dgm.compare.executors`): ``"local"`` one
    after the other in this process; ``"ray"`` as tasks of the Ray cluster at ``address``
    (``"auto"``: the running one; ``None``: a local Ray started for the comparison), at most
    ``jobs`` at a time, each with ``cpus_per_run`` CPUs (and a GPU when ``train_options`` put
    the runs on ``cuda``). Either way the runs write into ``out`` and this process computes the
    leaderboard from them: the same seeds and steps give the same leaderboard.
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
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor is one of {', '.join(EXECUTORS)}, not {executor!r}")
    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, not {jobs}")
    if executor == "local" and (address is not None or (jobs or 1) > 1):
        raise ConfigError("--address and --jobs are for --executor ray (local runs one at a time)")
    if not cpus_per_run > 0:
        raise ConfigError(f"--cpus-per-run must be positive, not {cpus_per_run}")
    if executor == "ray":
        require_ray()  # before any work: without Ray, one sentence
    datasets = {d: load_dataset(d, data_dir=data_dir) for d in dict.fromkeys(data)}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    job = _Comparison(
        out=out, steps=steps, max_minutes=max_minutes, seeds=seeds, grid=grid, cv=cv,
        train_options=dict(train_options or {}), model_configs=dict(model_configs or {}),
        sample_options=dict(sample_options or {}), eval_options=dict(eval_options or {}),
        data_dir=data_dir, say=say, progress=progress,
    )  # fmt: skip
    if executor == "ray":
        device = str((train_options or {}).get("device") or "")
        job.executor = RayExecutor(
            address, jobs=jobs, cpus=cpus_per_run, gpus=1 if device.startswith("cuda") else 0,
            progress=progress, say=say,
        )  # fmt: skip
    else:
        job.executor = LocalExecutor(datasets, say)
    try:
        return _compare(job, doc_header(job, command), models, data, datasets, report)
    finally:
        job.executor.close()


def doc_header(job: _Comparison, command: str) -> dict[str, Any]:
    """The leaderboard document before any row."""
    return {
        "dgm_version": __version__,
        "command": command,
        "budget": {"steps": job.steps} if job.steps is not None else {"minutes": job.max_minutes},
        "seeds": job.seeds,
        "grid": job.grid,
        "cv": job.cv,
        "model_config": job.model_configs,
        "sample_options": job.sample_options,
        "tables": [],
        "complete": False,
    }


def _compare(
    job: _Comparison, doc: dict[str, Any], models: list[str], data: Sequence[str],
    datasets: dict[str, Any], report: bool,
) -> dict[str, Any]:  # fmt: skip
    out, say = job.out, job.say
    if job.executor.parallel:
        for d in data:
            for name in models:
                job.prefetch(name, d, datasets[d])
    failed = []
    for d in data:
        dataset = datasets[d]
        table: dict[str, Any] = {"data": d, "rows": []}
        doc["tables"].append(table)
        for name in models:
            t0 = time.perf_counter()
            try:
                row = job.row(name, d, dataset)
            except Exception as e:  # one model's failure does not stop the others
                reason = failure_reason(e)
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
            job.run_dirs, out / "report.html", leaderboard=doc, base=out, progress=job.progress
        )
    return doc


def write_leaderboard(out: Path, doc: dict[str, Any]) -> None:
    """``leaderboard.json`` and ``leaderboard.md`` in ``out`` (each replaced atomically)."""
    atomic_write_text(out / "leaderboard.json", json.dumps(doc, indent=2) + "\n")
    atomic_write_text(out / "leaderboard.md", document_markdown(doc))
