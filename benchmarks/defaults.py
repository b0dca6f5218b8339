"""What a user gets from ``dgm train MODEL --data D`` with nothing else, for every 2-D model.

For every registered model that takes 2-D vectors and every chosen analytic density:
``dgm.train(MODEL, D)`` with the model's own defaults (its ``Config`` and its ``train_defaults``
over :class:`dgm.train.TrainConfig`; only the progress bar is turned off), then
:func:`dgm.eval.run.evaluate` on the first ``--test-n`` test points:

* C2ST accuracy of 2000 model samples against as many test points (0.5: indistinguishable);
* for a model with a likelihood, the gap of its test NLL (exact, or its named bound) to the true
  cross-entropy of the same test points, ``NLL - mean(-log p(x))``: for an exact model this is
  the forward KL(p || q) estimate (the JSON's ``kl``; ``dgm eval``'s kl metric is not run: its
  total variation and density integral on a grid cost the ODE models minutes), for a bound it is
  KL plus the bound's own slack, so it is an upper bound on the KL in expectation;
* the differential entropy ``H(p) = -E_p log p`` of the density by Monte Carlo (10^6 exact
  samples), which the NLL approaches from above;
* modes captured and high-quality samples where the density is made of modes;
* time of ``dgm.train`` (training, the run's summary and plots): the process CPU time of the
  one-thread run (what it takes on a free core; the table) and the wall time on the shared
  machine, with its load average (the JSON); and the wall time of the evaluation.

The Markdown table has one row per model (every density side by side); the JSON keeps one row per
(model, density) under ``runs``. ``--set MODEL.key=value`` / ``--train-set MODEL.key=value``
probe other settings (the JSON records them; a published table has none).

    .venv/bin/python benchmarks/defaults.py [--models nsf vae ...] [--data 8gaussians rings
        checkerboard] [--name defaults] [--threads 1]
    .venv/bin/python benchmarks/defaults.py --merge results/A.json results/B.json --name defaults
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import dgm.data
from _common import loadavg, parse_sets, report
from dgm.api import load_run, train
from dgm.core.spec import DataSpec
from dgm.eval.run import evaluate, not_applicable
from dgm.models import build, get, names
from dgm.train.config import TrainConfig

DATA = ["8gaussians", "rings", "checkerboard"]
ENTROPY_SAMPLES = 1_000_000
#: training options shown in the table when they differ from TrainConfig's defaults
SHOWN = ("steps", "epochs", "max_minutes", "batch_size", "lr", "schedule", "ema", "warmup_steps")


#: 2-D models left out of the default list, and why (the JSON's ``left_out``)
LEFT_OUT = {
    "reflow": "needs a trained teacher run (--set reflow.teacher=RUN); its default, an untrained "
    "in-process teacher, is for tests only",
}


def vector_models() -> list[str]:
    """Registered models that take continuous 2-D vectors."""
    out = []
    for name in names():
        if "continuous" not in get(name).data_kinds:
            continue
        try:
            build(name, DataSpec((2,)))
        except Exception:  # noqa: BLE001 - a model for images only says so by failing to build
            continue
        out.append(name)
    return out


def entropy(density: Any, n: int = ENTROPY_SAMPLES, seed: int = 12345) -> tuple[float, float]:
    """``H(p) = -E_p log p`` in nats by Monte Carlo, with its standard error."""
    g = torch.Generator().manual_seed(seed)
    lp = torch.cat(
        [density.log_prob(density.sample(n // 10, generator=g).double()) for _ in range(10)]
    )
    return float(-lp.mean()), float(lp.std() / math.sqrt(lp.numel()))


def settings(train_cfg: dict[str, Any]) -> str:
    """The training options of a run that differ from TrainConfig's defaults, e.g.
    ``steps 1000, batch 256, lr 0.001, ema 0.999`` (steps always shown)."""
    base = TrainConfig()
    parts = []
    for key in SHOWN:
        v = train_cfg.get(key)
        if key == "steps" and v is None and not train_cfg.get("epochs"):
            v = None if train_cfg.get("max_minutes") else 1000
            parts.append(f"steps {v}" if v else "steps by time")
            continue
        if v is not None and (key == "steps" or v != getattr(base, key)):
            label = {"batch_size": "batch", "max_minutes": "minutes", "warmup_steps": "warmup"}
            parts.append(f"{label.get(key, key)} {v}")
    return ", ".join(parts)


def run_one(
    model: str,
    data_name: str,
    *,
    test_n: int,
    model_config: dict[str, Any],
    train_options: dict[str, Any],
) -> dict[str, Any]:
    ds = dgm.data.load(data_name)
    out = Path(tempfile.mkdtemp()) / f"{model}-{data_name}"
    t0, c0 = time.perf_counter(), time.process_time()
    train(model, ds, out, model_config=model_config, progress=False, **train_options)
    wall_train, cpu_train = time.perf_counter() - t0, time.process_time() - c0
    run = load_run(out)
    metrics = ["c2st"]
    for m in ("nll", "modes"):  # the KL is the NLL gap below; evaluate's kl adds grid figures
        if not_applicable(run.model, ds, m) is None:
            metrics.append(m)
    t0 = time.perf_counter()
    res = evaluate(run.model, ds, run.preprocessor, metrics=metrics, max_test=test_n)
    wall_eval = time.perf_counter() - t0
    x = ds.test[:test_n].double()
    cross = float(-ds.density.log_prob(x).mean())  # mean -log p over the scored test points
    gap = None if res.get("test_nll") is None else res["test_nll"] - cross
    summary = json.loads((out / "summary.json").read_text())
    row = {
        "model": model,
        "family": get(model).family,
        "data": data_name,
        "settings": settings(run.config["train"]),
        "steps_done": summary.get("steps"),
        "wall_train_s": round(wall_train, 1),
        "cpu_train_s": round(cpu_train, 1),
        "wall_eval_s": round(wall_eval, 1),
        "c2st": res.get("c2st_accuracy"),
        "likelihood": res.get("likelihood"),
        "test_nll": res.get("test_nll"),
        "test_cross_entropy": cross,
        "gap": gap,
        # for an exact density the gap is the forward KL(p || q) on the scored test points
        "kl": None,  # set by save() where the density is exact
        "modes": res.get("modes_captured"),
        "modes_total": res.get("modes_total"),
        "high_quality": res.get("modes_high_quality"),
        "model_config_set": model_config,
        "train_set": train_options,
        "loadavg": loadavg(),
    }
    print(json.dumps(row), flush=True)
    return row


def exact(run: dict[str, Any]) -> bool:
    """The run's likelihood is an exact density (``log_prob ...``), not a bound or estimate."""
    return str(run.get("likelihood") or "").startswith("log_prob")


#: issue 24's targets at defaults: C2ST; the gap of an exact density (the KL) and of a bound or
#: estimate; spline flows (nsf) are held to a tighter KL
C2ST_MAX, KL_MAX, SPLINE_KL_MAX, BOUND_GAP_MAX = 0.60, 0.10, 0.02, 0.30
SPLINE_FLOWS = frozenset({"nsf"})


def misses(run: dict[str, Any]) -> list[str]:
    """The targets a run misses, each as one phrase (``"C2ST 0.612 > 0.60"``); empty if none."""
    out = []
    c2st = run.get("c2st")
    if c2st is not None and c2st > C2ST_MAX:
        out.append(f"C2ST {c2st:.3f} > {C2ST_MAX:.2f}")
    gap = run.get("gap")
    if gap is not None:
        if not exact(run):
            limit, what = BOUND_GAP_MAX, "bound gap"
        elif run["model"] in SPLINE_FLOWS:
            limit, what = SPLINE_KL_MAX, "KL"
        else:
            limit, what = KL_MAX, "KL"
        if gap > limit:
            out.append(f"{what} {gap:.3f} > {limit:.2f}")
    return out


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


#: training time of ``dgm train`` (with its summary and plots): the process CPU time of the
#: one-thread run, what the run takes on a free core (the wall times, on a shared machine, are in
#: the JSON)
TIME = "train s (1 thread)"


def _seconds(run: dict[str, Any]) -> str:
    """CPU seconds; a run that did not record them gives its wall time, marked as such."""
    if run.get("cpu_train_s") is None:
        return f"{run['wall_train_s']:.0f} wall"
    return f"{run['cpu_train_s']:.0f}"


def wide_rows(runs: list[dict[str, Any]], data: list[str]) -> tuple[list[dict], list[str]]:
    """One row per model with every density side by side: the Markdown table of the issue.

    ``gap`` is the NLL (or bound) minus the true cross-entropy of the scored test points
    (= the forward KL for an exact model), ``kl`` only where the model's density is exact.
    """
    columns = ["family", "model", "default settings", TIME]
    for d in data:
        columns += [f"C2ST {d}", f"gap {d}"]
    rows = []
    for model in dict.fromkeys(r["model"] for r in runs):
        mine = {r["data"]: r for r in runs if r["model"] == model}
        first = next(iter(mine.values()))
        row: dict[str, Any] = {
            "family": first["family"],
            "model": model,
            "default settings": first["settings"],
            TIME: " / ".join(_seconds(mine[d]) if d in mine else "–" for d in data),
        }
        for d in data:
            r = mine.get(d, {})
            row[f"C2ST {d}"] = _fmt(r.get("c2st"))
            gap = r.get("gap")
            if gap is not None and not exact(r):
                row[f"gap {d}"] = f"{gap:.3f} (bound)"
            else:
                row[f"gap {d}"] = _fmt(gap)
        rows.append(row)
    return rows, columns


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=None, help="default: every 2-D model")
    ap.add_argument("--data", nargs="+", default=DATA)
    ap.add_argument("--test-n", type=int, default=2000, help="test points scored")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="defaults")
    ap.add_argument("--set", nargs="*", default=[], help="MODEL.key=value (probes only)")
    ap.add_argument("--train-set", nargs="*", default=[], help="MODEL.key=value (probes only)")
    ap.add_argument("--note", nargs="*", default=[], help="sentences kept as the JSON's notes")
    ap.add_argument(
        "--merge", nargs="*", type=Path, default=None, help="results JSON files to join"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.merge is not None:
        # a later file's run of the same model and density replaces an earlier one
        latest = {
            (r["model"], r["data"]): r
            for f in args.merge
            for r in json.loads(f.read_text())["runs"]
        }
        runs = list(latest.values())
    else:
        available = vector_models()
        chosen = args.models or [m for m in available if m not in LEFT_OUT]
        unknown = set(chosen) - set(available)
        if unknown:
            raise SystemExit(f"not 2-D models: {sorted(unknown)}; choose from {available}")
        runs = []
        for data_name in args.data:
            for model in chosen:
                mc, to = parse_sets(args.set, model), parse_sets(args.train_set, model)
                runs.append(
                    run_one(model, data_name, test_n=args.test_n, model_config=mc, train_options=to)
                )
                save(args, runs)  # after every run: a stopped benchmark keeps what it finished
    save(args, runs)


_ENTROPY: dict[str, dict[str, float]] = {}


def save(args: argparse.Namespace, runs: list[dict[str, Any]]) -> None:
    for r in runs:
        r["kl"] = r["gap"] if exact(r) else None
    data = list(dict.fromkeys(r["data"] for r in runs))
    for d in data:
        if d not in _ENTROPY:
            h, sem = entropy(dgm.data.load(d).density)
            _ENTROPY[d] = {"entropy_nats": h, "entropy_sem": sem}
    rows, columns = wide_rows(runs, data)
    arguments = vars(args) | {"merge": [str(f) for f in args.merge or []]}
    missed = {f"{r['model']} {r['data']}": m for r in runs if (m := misses(r))}
    targets = (
        f"C2ST <= {C2ST_MAX}; exact KL <= {KL_MAX} (spline flows {SPLINE_KL_MAX}); "
        f"bound or estimate within {BOUND_GAP_MAX} nats of the true cross-entropy"
    )
    extra = {
        "entropy": {d: _ENTROPY[d] for d in data},
        "targets": targets,
        "misses": missed,
        "notes": list(args.note),
        "left_out": {m: why for m, why in LEFT_OUT.items() if m not in {r["model"] for r in runs}},
        "runs": runs,
        "args": arguments,
    }
    report(args.name, rows, columns, extra=extra)


if __name__ == "__main__":
    main()
