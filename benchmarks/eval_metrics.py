"""Evaluation metrics: run time of each metric at 10k samples, and a table over trained runs.

Timing: each metric on two sets of 10,000 samples, in 2-D (points) and in 64-D (features), median of
``--repeats`` runs. Two-sample tests include their p-value (MMD: 200 permutations; C2ST: binomial).

    .venv/bin/python benchmarks/eval_metrics.py [--n 10000] [--repeats 3]

Cross-model table: every metric that applies, for run directories trained with ``dgm train``
(for example the commands in the resolving note of issue 9):

    .venv/bin/python benchmarks/eval_metrics.py --runs runs/nsf-8gaussians runs/made-digits ...
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from _common import median, report
from dgm.api import load_run
from dgm.data import get_density, load
from dgm.eval import (
    auprc,
    auroc,
    c2st,
    fid,
    kid,
    mmd,
    mmd2_unbiased,
    mode_coverage,
    precision_recall,
    reverse_kl,
)
from dgm.eval.run import evaluate


def timed(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return median(times)


def timing(n: int, repeats: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    ring = get_density("ring8")
    x2 = ring.sample(n, generator=g)  # (n, 2)
    y2 = ring.sample(n, generator=g) * 1.01
    x64 = torch.randn(n, 64, generator=g)  # features
    y64 = torch.randn(n, 64, generator=g) + 0.05
    scores_in, scores_out = torch.randn(n, generator=g), torch.randn(n, generator=g) - 0.5
    cases: dict[str, Callable[[torch.Tensor, torch.Tensor], object]] = {
        "c2st (logistic)": lambda a, b: c2st(a, b, classifier="logistic"),
        "c2st (mlp)": lambda a, b: c2st(a, b, classifier="mlp"),
        "c2st (knn)": lambda a, b: c2st(a, b, classifier="knn"),
        "mmd^2 statistic": lambda a, b: mmd2_unbiased(a, b),
        "mmd test (200 permutations)": lambda a, b: mmd(a, b, num_permutations=200),
        "mmd test, 5 bandwidths": lambda a, b: mmd(a, b, bandwidth="mixture", num_permutations=200),
        "fid": lambda a, b: fid(a, b),
        "kid (100 subsets of 1000)": lambda a, b: kid(a, b),
        "precision/recall (k=3)": lambda a, b: precision_recall(a, b),
    }
    rows = []
    for name, fn in cases.items():
        row = {"metric": name, "n": n}
        for dim, (a, b) in (("2-D", (x2, y2)), ("64-D", (x64, y64))):
            row[f"seconds_{dim}"] = timed(lambda a=a, b=b, fn=fn: fn(a, b), repeats)
        rows.append(row)
        print(row, flush=True)
    rows.append(
        {
            "metric": "mode coverage",
            "n": n,
            "seconds_2-D": timed(lambda: mode_coverage(x2, ring.modes, ring.mode_std), repeats),
        }
    )
    rows.append(
        {
            "metric": "reverse KL (2 log-densities)",
            "n": n,
            "seconds_2-D": timed(lambda: reverse_kl(ring.log_prob, ring.log_prob, x2), repeats),
        }
    )
    rows.append(
        {
            "metric": "auroc + auprc",
            "n": n,
            "seconds_2-D": timed(
                lambda: (auroc(scores_in, scores_out), auprc(-scores_out, -scores_in)), repeats
            ),
        }
    )
    return rows


TABLE = [
    "model", "data", "test_nll", "test_bpd", "kl", "reverse_kl", "tv", "c2st_accuracy",
    "c2st_p_value", "mmd2", "mmd_p_value", "fid", "kid", "precision", "recall",
    "modes_captured", "modes_high_quality", "modes_kl", "anomaly_noise_auroc",
    "anomaly_flips_auroc", "anomaly_fgsm_auroc", "anomaly_other_auroc",
]  # fmt: skip


def models(runs: list[str], num_samples: int | None) -> list[dict]:
    rows = []
    for path in runs:
        run = load_run(path)
        data_dir = run.config["data"].get("data_dir")
        data = load(run.config["data"]["name"], data_dir=data_dir)
        res = evaluate(
            run.model, data, run.preprocessor, num_samples=num_samples, data_dir=data_dir
        )
        rows.append({k: res.get(k) for k in TABLE} | {"run": path, "seconds": res["seconds"]})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", nargs="+", help="run directories for the cross-model table")
    ap.add_argument("--num-samples", type=int, help="model samples per run (default 2000)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.runs:
        rows = models(args.runs, args.num_samples)
        report("eval_models", rows, [c for c in TABLE if any(r.get(c) is not None for r in rows)])
    else:
        rows = timing(args.n, args.repeats)
        report("eval_metrics", rows, ["metric", "n", "seconds_2-D", "seconds_64-D"])


if __name__ == "__main__":
    main()
