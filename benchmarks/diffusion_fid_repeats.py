"""FID of a trained MNIST/digits ddpm over several independent sample sets per sampler.

One set of ``--n`` samples gives one FID, whose sampling spread at small ``n`` is as large as the
differences between samplers. This script loads the weights ``diffusion.py images`` trained (its
engine checkpoint directory), draws ``--sets`` sets per sampler with different seeds, and reports
each sampler's FIDs, their mean and standard error, and the spread of the FID of real validation
subsets of the same size against the test set (the floor and its noise). Sampling time is CPU
seconds per set.

    .venv/bin/python benchmarks/diffusion_fid_repeats.py CHECKPOINT_DIR --dataset mnist
        --channels 16 --n 300 --sets 5 --ancestral-sets 2 --name diffusion_mnist_6000_fid_sets
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

import dgm.data
from _common import median, report  # noqa: I001
from dgm.core.registry import build
from dgm.eval.features import dataset_features
from dgm.eval.fid import fid

SAMPLERS = {
    "ddim-20": {"sampler": "ddim", "steps": 20},
    "ddim-50": {"sampler": "ddim", "steps": 50},
    "ancestral-1000": {"sampler": "ancestral"},
}


def mean_sem(v: list[float]) -> tuple[float, float]:
    m = sum(v) / len(v)
    if len(v) < 2:
        return m, float("nan")
    var = sum((x - m) ** 2 for x in v) / (len(v) - 1)
    return m, math.sqrt(var / len(v))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint", type=Path, help="engine checkpoint dir (with ema.safetensors)")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--sets", type=int, default=3)
    ap.add_argument("--ancestral-sets", type=int, default=0, help="default: --sets")
    ap.add_argument("--first-seed", type=int, default=4, help="diffusion.py drew set 0 with 4")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="diffusion_fid_sets")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = dgm.data.load(args.dataset)
    model = build("ddpm", data.spec, channels=args.channels)
    weights = args.checkpoint / "ema.safetensors"
    if not weights.is_file():
        weights = args.checkpoint / "model.safetensors"
    model.load_state_dict(load_file(weights))
    model.eval()
    feats = dataset_features(data, seed=0)
    x_test = data.split("test")[0]
    x_val = data.split("val")[0]
    real = [fid(x_val[i * args.n : (i + 1) * args.n], x_test, features=feats)
            for i in range(min(args.sets + 2, len(x_val) // args.n))]  # fmt: skip
    rows = []
    for label, opts in SAMPLERS.items():
        fids, cpus = [], []
        sets = args.ancestral_sets or args.sets if label.startswith("ancestral") else args.sets
        for k in range(sets):
            torch.manual_seed(args.first_seed + k)
            c0 = time.process_time()
            with model.inference():
                s = model.sample(args.n, **opts)
            cpus.append(time.process_time() - c0)
            fids.append(fid(s, x_test, features=feats))
            print(label, k, round(fids[-1], 3), round(cpus[-1], 1), flush=True)
        m, se = mean_sem(fids)
        rows.append({"sampler": label, "n": args.n, "sets": sets, "fid_mean": m,
                     "fid_sem": se, "fids": fids, "sample_cpu_s_median": median(cpus)})  # fmt: skip
        print(rows[-1], flush=True)
    base = rows[-1]["fid_mean"]
    for r in rows:
        r["fid_ratio_vs_ancestral"] = r["fid_mean"] / base
    rm, rse = mean_sem(real)
    extra = {"checkpoint": str(weights), "dataset": args.dataset, "channels": args.channels,
             "real_subset_fids": real, "real_fid_mean": rm, "real_fid_sem": rse}  # fmt: skip
    report(args.name, rows, ["sampler", "n", "sets", "fid_mean", "fid_sem",
                             "fid_ratio_vs_ancestral", "sample_cpu_s_median"], extra)  # fmt: skip


if __name__ == "__main__":
    main()
