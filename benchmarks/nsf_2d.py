"""Neural spline flow (and RealNVP) on the analytic 2-D densities.

KL gap KL(p || q) = E_p[log p - log q] in nats on 10,000 exact test samples, after 2000 steps of
batch 512, and milliseconds per training step (median over the run's logged intervals).

    .venv/bin/python benchmarks/nsf_2d.py [--steps 2000] [--models nsf realnvp]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

import dgm
from _common import median, report  # noqa: I001
from dgm.api import load_run
from dgm.eval.run import evaluate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--models", nargs="+", default=["nsf", "realnvp"])
    ap.add_argument("--data", nargs="+", default=["8gaussians", "checkerboard", "rings"])
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = []
    for model_name in args.models:
        for data_name in args.data:
            data = dgm.data.load(data_name)
            out = Path(tempfile.mkdtemp()) / f"{model_name}-{data_name}"
            dgm.train(
                model_name, data, out, steps=args.steps, batch_size=args.batch_size, lr=1e-3,
                schedule="cosine", progress=False, checkpoint_every=0, log_every=100,
            )  # fmt: skip
            run = load_run(out)
            res = evaluate(run.model, data, run.preprocessor, grid_size=400, metrics=["nll", "kl"])
            logs = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
            rates = [r["steps_per_s"] for r in logs if "steps_per_s" in r]
            rows.append(
                {
                    "model": model_name,
                    "data": data_name,
                    "steps": args.steps,
                    "kl_gap_nats": res["kl"],
                    "kl_sem": res["kl_sem"],
                    "test_nll": res["test_nll"],
                    "grid_integral": res["grid_integral"],
                    "ms_per_step": 1000.0 / median(rates),
                    "params": sum(p.numel() for p in run.model.parameters()),
                }
            )
            print(rows[-1], flush=True)
    report(
        "nsf_2d",
        rows,
        [
            "model",
            "data",
            "steps",
            "kl_gap_nats",
            "kl_sem",
            "test_nll",
            "grid_integral",
            "ms_per_step",
            "params",
        ],
    )


if __name__ == "__main__":
    main()
