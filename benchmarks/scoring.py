"""Scoring and sampling images: the batch per forward pass and the ``dgm`` command's malloc.

For each model, ``--n`` binarized MNIST test images are scored by
``dgm.eval.likelihood.log_likelihood`` in four settings, each in a fresh process (malloc's
thresholds are per process), interleaved over ``--repeats`` rounds:

* ``batch``: ``1000`` (the fixed batch before 55bc8b0) or ``auto`` (the default since:
  ``Model.inference_batch``: 2^15 input values, 41 MNIST images, for image models; 1000
  for MADE, MAF and IAF since 5787dbb);
* ``malloc``: ``glibc`` (its own adaptive thresholds) or ``tuned`` (``dgm.cli.malloc.tune``, what
  the ``dgm`` command sets).

Each row: median wall seconds with the range, user and system CPU seconds and minor page faults
of the scoring call alone (``getrusage``), and the mean NLL (the same in every setting for the
exact models; the bounds draw their noise per batch). Models are built at their MNIST sizes
without training (speed does not depend on the weights), or ``--runs`` scores trained runs.

``--sample-models`` (task ``sample``): ``--sample-n`` images drawn in one call against calls of
the model's ``sample_batch()`` (the sampling loops of ``dgm sample`` and ``dgm eval`` since
e7327f2), with glibc's and the ``dgm`` command's malloc; ddpm by DDIM with 20 steps, flow matching by Euler
with 20, masked diffusion with 32 steps. Task ``features``: the FID feature network (untrained)
on the 10,000 test images in batches of 2000 (before 2d61e4c) against the default (41).

    DGM_DATA=../../shared/data python scoring.py [--models gated-pixelcnn ...] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from _common import loadavg, median, report

MODELS = ["gated-pixelcnn", "pixelcnn", "transformer", "rnn", "made", "vae"]
SETTINGS = [("1000", "glibc"), ("auto", "glibc"), ("1000", "tuned"), ("auto", "tuned")]
SAMPLE_MODELS = ["ddpm", "flow-matching", "masked-diffusion"]
SAMPLE_OPTIONS = {"ddpm": {"sampler": "ddim", "steps": 20}, "flow-matching": {"method": "euler",
                  "steps": 20}, "masked-diffusion": {"steps": 32}}  # fmt: skip


def child(args) -> None:
    """Score once and print one JSON line (run in a fresh process)."""
    if args.malloc == "tuned":
        from dgm.cli import malloc

        assert malloc.tune(), "malloc.tune() works on Linux with glibc only"
    import torch

    import dgm.data
    from dgm.core.spec import DataSpec
    from dgm.eval.likelihood import log_likelihood
    from dgm.models import build

    torch.set_num_threads(args.threads)
    if args.task == "sample":
        continuous = args.model in ("ddpm", "flow-matching")
        spec = DataSpec((1, 28, 28)) if continuous else DataSpec((1, 28, 28), "discrete", levels=2)
        torch.manual_seed(0)
        model = build(args.model, spec).eval()
        n = args.sample_n
        b = n if args.batch == "one" else model.sample_batch()
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        with model.inference():
            for start in range(0, n, b):
                model.sample(min(b, n - start), **SAMPLE_OPTIONS[args.model])
        _print(t0, r0, {"batch_used": b})
        return
    x, _ = dgm.data.load("binarized-mnist").split("test")
    if args.task == "features":
        from dgm.eval.features import FeatureExtractor, FeatureNet

        torch.manual_seed(0)
        batch = None if args.batch == "auto" else int(args.batch)
        fe = FeatureExtractor(FeatureNet((1, 28, 28), 10), {}, batch_size=batch)
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        fe(x)
        _print(t0, r0, {"batch_used": fe.batch_size})
        return
    x = x[: args.n]
    pre = None
    if args.model.startswith("run:"):
        from dgm.api import load_run

        run = load_run(args.model[4:])
        model, pre = run.model, run.preprocessor
    else:
        torch.manual_seed(0)
        model = build(args.model, DataSpec((1, 28, 28), "discrete", levels=2))
    model.eval()
    batch = None if args.batch == "auto" else int(args.batch)
    g = torch.Generator().manual_seed(0)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    ll, info = log_likelihood(model, x, preprocessor=pre, batch_size=batch, generator=g)
    _print(t0, r0, {"nll": float(-ll.mean()), "likelihood": str(info),
                    "batch_used": batch or model.inference_batch()})  # fmt: skip


def _print(t0: float, r0, extra: dict) -> None:
    """One JSON line: wall, user and system seconds and minor page faults since ``t0``/``r0``."""
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "wall_s": wall, "user_s": r1.ru_utime - r0.ru_utime, "sys_s": r1.ru_stime - r0.ru_stime,
        "faults": r1.ru_minflt - r0.ru_minflt, **extra,
    }))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--runs", nargs="*", default=[], help="trained run directories to score too")
    ap.add_argument("--n", type=int, default=2000, help="test images scored")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tasks", nargs="+", default=["score", "sample", "features"])
    ap.add_argument("--sample-models", nargs="+", default=SAMPLE_MODELS)
    ap.add_argument("--sample-n", type=int, default=400, help="images drawn per sampling run")
    ap.add_argument("--out", default="scoring")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--batch", help=argparse.SUPPRESS)
    ap.add_argument("--malloc", help=argparse.SUPPRESS)
    ap.add_argument("--task", default="score", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    jobs = []  # (task, model, settings)
    if "score" in args.tasks:
        jobs += [("score", m, SETTINGS) for m in [*args.models, *(f"run:{r}" for r in args.runs)]]
    if "sample" in args.tasks:
        sample = [("one", "glibc"), ("auto", "glibc"), ("one", "tuned"), ("auto", "tuned")]
        jobs += [("sample", m, sample) for m in args.sample_models]
    if "features" in args.tasks:
        jobs += [("features", "feature-net", [("2000", "tuned"), ("auto", "tuned")])]
    found: dict[tuple[str, str, str, str], list[dict]] = {}
    load0 = loadavg()
    for r in range(args.repeats):
        for task, model, settings in jobs:
            for batch, mall in settings if r % 2 == 0 else settings[::-1]:
                cmd = [sys.executable, __file__, "--child", "--task", task, "--model", model,
                       "--batch", batch, "--malloc", mall, "--n", str(args.n), "--threads",
                       str(args.threads), "--sample-n", str(args.sample_n)]  # fmt: skip
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                key = (task, model, batch, mall)
                found.setdefault(key, []).append(json.loads(out.splitlines()[-1]))
                print(*key, found[key][-1], flush=True)
    rows = []
    for (task, model, batch, mall), runs in found.items():
        walls = [v["wall_s"] for v in runs]
        n = {"score": args.n, "sample": args.sample_n, "features": 10000}[task]
        rows.append({
            "task": task, "model": model.removeprefix("run:"), "batch": batch,
            "batch_used": runs[0]["batch_used"], "malloc": mall, "n": n, "wall_s": median(walls),
            "wall_range": f"{min(walls):.3g}-{max(walls):.3g}",
            "user_s": median([v["user_s"] for v in runs]),
            "sys_s": median([v["sys_s"] for v in runs]),
            "faults": int(median([v["faults"] for v in runs])),
            "nll": runs[0].get("nll", ""), "likelihood": runs[0].get("likelihood", ""),
        })  # fmt: skip
    old = {"score": ("1000", "glibc"), "sample": ("one", "glibc"), "features": ("2000", "tuned")}
    for row in rows:  # against the old default of the same task and model
        base = next(r for r in rows if r["task"] == row["task"] and r["model"] == row["model"]
                    and (r["batch"], r["malloc"]) == old[row["task"]])  # fmt: skip
        row["speedup"] = base["wall_s"] / row["wall_s"]
    cols = ["task", "model", "batch", "batch_used", "malloc", "n", "wall_s", "wall_range", "user_s",
            "sys_s", "faults", "speedup", "nll"]  # fmt: skip
    extra = {"threads": args.threads, "repeats": args.repeats, "loadavg_start": load0,
             "loadavg_end": loadavg()}  # fmt: skip
    report(args.out, rows, cols, extra)


if __name__ == "__main__":
    main()
