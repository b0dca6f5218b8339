"""How ``dgm compare`` carries out its runs: one run (:class:`RunJob`, :func:`run_job`), and where
it runs (:class:`LocalExecutor`: one after the other in this process; :class:`RayExecutor`: as
tasks of a Ray cluster, https://docs.ray.io/en/latest/ray-core/tasks.html).

A run is train (or resume, or reuse) then, when asked, evaluate; it writes only into its own run
directory, so the driver computes the leaderboard, the report and the model selection from those
directories whichever executor ran them. On Ray each run is one task with its CPUs (and a GPU when
the runs train on ``cuda``); a task whose worker dies (process killed, node lost) is retried by
Ray, and the retry resumes the run from its last checkpoint through the engine's ``resume``. A run
that fails for a reason of its own comes back as that reason, which the driver records.

Ray is optional (``pip install 'dgm[ray]'``) and imported only when the Ray executor is asked for.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from dgm import api
from dgm.compare.grid import cv_folds
from dgm.core.config import build_config, config_to_dict
from dgm.core.errors import ConfigError, DgmError
from dgm.core.io import atomic_write_text
from dgm.core.progress import Progress
from dgm.data import Dataset
from dgm.data import load as load_dataset
from dgm.eval.run import evaluate
from dgm.models import get
from dgm.train.checkpoint import latest_checkpoint
from dgm.train.config import TrainConfig

__all__ = [
    "EXECUTORS",
    "LocalExecutor",
    "RayExecutor",
    "RunJob",
    "failure_reason",
    "require_ray",
    "run_job",
]

#: the ``--executor`` choices
EXECUTORS = ("local", "ray")


def _say(text: str) -> None:
    print(f"dgm compare: {text}", file=sys.stderr, flush=True)


def failure_reason(e: BaseException) -> str:
    """The one line a failed run is recorded with in the leaderboard."""
    reason = str(e) if isinstance(e, DgmError) else f"{type(e).__name__}: {e}"
    return reason.splitlines()[0][:400] if reason.strip() else type(e).__name__


@dataclass(frozen=True)
class RunJob:
    """One run of a comparison: train ``model`` on ``data`` (fold ``fold[1]`` of ``fold[0]``
    when cross-validating) into ``path``, then evaluate it on the test split when ``evaluate``.
    Plain values only, so that a job travels to another process or node as it is."""

    path: str
    model: str
    data: str
    model_config: dict[str, Any]
    train_options: dict[str, Any]
    seed: int
    evaluate: bool
    fold: tuple[int, int] | None = None
    data_dir: str | None = None
    sample_options: dict[str, Any] = field(default_factory=dict)
    eval_options: dict[str, Any] = field(default_factory=dict)
    progress: bool = True

    @property
    def key(self) -> tuple[str, bool]:
        return (self.path, self.evaluate)


def _check_same(path: Path, name: str, model_cfg: dict, opts: dict) -> None:
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


def ensure_run(job: RunJob, data: Any, say: Callable[[str], None] = _say) -> str:
    """Train, resume or reuse the run of ``job`` on ``data`` (a dataset name, or the fold's
    :class:`~dgm.data.Dataset`); returns what was done."""
    path, name = Path(job.path), job.model
    cls = get(name)
    opts = job.train_options | {"progress": job.progress}
    full_cfg = config_to_dict(build_config(cls.Config, job.model_config, what=f"model {name!r}"))
    kwargs = {"model_config": job.model_config, "data_dir": job.data_dir}
    if (path / "config.yaml").is_file():
        _check_same(path, name, full_cfg, opts)
        if (path / "summary.json").is_file() and (path / "model.safetensors").is_file():
            return "reused"
        ckpt, _ = latest_checkpoint(path / "checkpoints")
        if ckpt is not None and isinstance(data, str):
            say(f"resuming {path} from {ckpt.name}")
            api.train(name, data, path, resume=True, progress=job.progress)
            return "resumed"
        api.train(name, data, path, overwrite=True, **kwargs, **opts)
        return "restarted"
    if path.exists() and any(path.iterdir()):
        raise DgmError(f"{path} holds files but no dgm run; delete it to let compare train there")
    say(f"training {name} -> {path}")
    api.train(name, data, path, **kwargs, **opts)
    return "trained"


def evaluate_run(job: RunJob, dataset: Dataset) -> dict[str, Any]:
    """``eval.json`` of the run (computed once), with the training figures added."""
    path = Path(job.path)
    target = path / "eval.json"
    if target.is_file():
        return json.loads(target.read_text())
    run = api.load_run(path)
    res = evaluate(
        run.model, dataset, run.preprocessor, seed=job.seed, data_dir=job.data_dir,
        sample_options=job.sample_options or None, progress=job.progress, **job.eval_options,
    )  # fmt: skip
    summary = json.loads((path / "summary.json").read_text())
    res["parameters"] = sum(p.numel() for p in run.model.parameters())
    res["steps"] = summary.get("steps")
    res["train_seconds"] = summary.get("train_seconds_total", summary.get("train_seconds"))
    res["val_nll"] = summary.get("val_nll")
    res["seed"] = job.seed
    atomic_write_text(target, json.dumps(res, indent=2) + "\n")
    return res


def run_job(
    job: RunJob, dataset: Dataset | None = None, say: Callable[[str], None] = _say
) -> dict[str, Any]:
    """Carry out ``job`` (``dataset``: ``job.data`` already loaded, else it is loaded here when
    needed); returns ``{"done": "trained" | "resumed" | "restarted" | "reused", "eval": ...}``."""
    if dataset is None and (job.evaluate or job.fold is not None):
        dataset = load_dataset(job.data, data_dir=job.data_dir)
    data: Any = job.data
    if job.fold is not None:
        k, i = job.fold
        data = cv_folds(dataset, k)[i]
    done = ensure_run(job, data, say)
    return {"done": done, "eval": evaluate_run(job, dataset) if job.evaluate else None}


class LocalExecutor:
    """Every run in this process, one after the other, when the driver asks for its result
    (today's order: a comparison with the local executor is what it always was)."""

    parallel = False

    def __init__(self, datasets: dict[str, Dataset], say: Callable[[str], None] = _say) -> None:
        self.datasets, self.say = datasets, say

    def submit(self, job: RunJob) -> None:
        """Nothing to do ahead: the run happens in :meth:`result`."""

    def result(self, job: RunJob) -> dict[str, Any]:
        return run_job(job, self.datasets.get(job.data), self.say)

    def close(self) -> None:
        pass


def _ray_task(job: RunJob, cpus: float) -> dict[str, Any]:
    """One run as a Ray task: torch gets as many threads as the task has CPUs; a failure of the
    run's own (bad config, non-finite loss) comes back as its reason, not as an exception."""
    torch.set_num_threads(max(1, int(cpus)))
    try:
        return {"ok": True, **run_job(job)}
    except Exception as e:  # the run's own failure: recorded by the driver, the others go on
        return {"ok": False, "reason": failure_reason(e)}


def require_ray() -> Any:
    """The ``ray`` module, or the one-sentence error that says how to install it."""
    try:  # reason: an optional dependency, loaded only for --executor ray
        import ray
    except ImportError:
        raise ConfigError(
            "--executor ray needs Ray, which is not installed; install it with "
            "`pip install 'dgm[ray]'` or use --executor local"
        ) from None
    return ray


class RayExecutor:
    """Runs as Ray tasks: on the cluster at ``address`` (``"auto"``: the one running on this
    machine; ``None``: a local Ray started for the comparison, unless Ray is already initialised
    in this process), at most ``jobs`` at a time (``None``: as many as the cluster's CPUs allow),
    each with ``cpus`` CPUs and ``gpus`` GPUs. ``retries``: how often Ray retries a run whose
    worker died. The driver's progress shows runs done / running / failed and the time left."""

    parallel = True

    def __init__(
        self,
        address: str | None = None,
        *,
        jobs: int | None = None,
        cpus: float = 1,
        gpus: float = 0,
        retries: int = 3,
        progress: bool = True,
        say: Callable[[str], None] = _say,
    ) -> None:
        ray = self.ray = require_ray()
        self.started = not ray.is_initialized()
        if self.started:
            try:
                ray.init(address=address, include_dashboard=False, logging_level="error")
            except (ConnectionError, ValueError, RuntimeError) as e:
                why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                if address is None:
                    raise DgmError(f"a local Ray did not start ({why})") from None
                raise ConfigError(
                    f"no Ray cluster at --address {address} ({why}); start one with "
                    "`ray start --head`, or leave --address out for a local one"
                ) from None
        self.jobs, self.cpus, self.gpus, self.say = jobs, cpus, gpus, say
        self.task = ray.remote(_ray_task).options(num_cpus=cpus, num_gpus=gpus, max_retries=retries)
        self.queue: deque[RunJob] = deque()
        self.inflight: dict[Any, RunJob] = {}
        self.known: set[tuple[str, bool]] = set()
        self.done: dict[tuple[str, bool], dict[str, Any]] = {}
        self.failed = 0
        self.t0 = time.perf_counter()
        # lines, not a bar: the number of runs grows as the driver plans them
        self.bar = Progress("runs", None, unit="runs", enabled=progress, bar=False, after=1.0)

    def submit(self, job: RunJob) -> None:
        if job.key in self.known:
            return
        self.known.add(job.key)
        self.queue.append(job)
        self.bar.total = len(self.known)
        self._pump()

    def _pump(self) -> None:
        while self.queue and (self.jobs is None or len(self.inflight) < self.jobs):
            job = self.queue.popleft()
            # the task runs quietly; the driver shows the progress of all of them
            ref = self.task.remote(replace(job, progress=False), self.cpus)
            self.inflight[ref] = job

    def _collect(self) -> None:
        ready, _ = self.ray.wait(list(self.inflight), num_returns=1)
        for ref in ready:
            job = self.inflight.pop(ref)
            try:
                out = self.ray.get(ref)
            except Exception as e:  # the retries ran out (a worker killed every time) or Ray failed
                out = {"ok": False, "reason": failure_reason(e)}
            self.done[job.key] = out
            self.failed += not out["ok"]
            if not out["ok"]:
                self.say(f"{job.path} failed: {out['reason']}")
        self._pump()  # refill first: "running" counts the runs now in flight
        finished = len(self.done)
        left = len(self.known) - finished
        took = time.perf_counter() - self.t0
        self.bar.update(
            len(ready), done=finished - self.failed, running=len(self.inflight),
            failed=self.failed, left=f"~{took * left / finished:.0f} s (estimate)",
        )  # fmt: skip

    def result(self, job: RunJob) -> dict[str, Any]:
        self.submit(job)
        while job.key not in self.done:
            self._collect()
        out = self.done[job.key]
        if not out["ok"]:
            raise DgmError(out["reason"])
        return out

    def close(self) -> None:
        self.bar.close()
        if self.started:
            self.ray.shutdown()
