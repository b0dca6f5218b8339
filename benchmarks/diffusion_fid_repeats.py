"""FID of a trained MNIST/digits ddpm over several independent sample sets per sampler.

One set of ``--n`` samples gives one FID, whose sampling spread at small ``n`` is as large as the
differences between samplers. This script loads the weights ``diffusion.py images`` trained (its
engine checkpoint directory), draws ``--sets`` sets per sampler with different seeds, and reports
each sampler's FIDs, their mean and standard error, and the same for real validation subsets of
the same size against the test set (the "real-val" row: the floor and its noise). FID is biased
upward at small ``n`` by an amount that grows with the spread of the features, so a sampler
whose FID falls below the real-val row is less diverse, not better than the data; the KID
column (unbiased, ``dgm.eval.fid.kid`` on subsets of ``n``) is the check. Sampling time is CPU
seconds per set.

    .venv/bin/python benchmarks/diffusion_fid_repeats.py CHECKPOINT_DIR --dataset mnist
        --unet-width 16 --n 300 --sets 5 --ancestral-sets 2 --name diffusion_mnist_6000_fid_sets
    .venv/bin/python benchmarks/diffusion_fid_repeats.py - --dataset mnist --n 300 --sets 5
        --real-only --name diffusion_mnist_fid_real
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

import dgm.data
from _common import mean_sem, median, report
from dgm.eval.features import dataset_features
from dgm.eval.fid import fid, kid
from dgm.models import build

SAMPLERS = {
    "ddim-20": {"sampler": "ddim", "steps": 20},
    "ddim-50": {"sampler": "ddim", "steps": 50},
    "ancestral-1000": {"sampler": "ancestral"},
}


def summary(fids: list[float], kids: list[float]) -> dict:
    """Mean and standard error of a list of FIDs and of KIDs, and the values themselves."""
    (fm, fs), (km, ks) = mean_sem(fids), mean_sem(kids)
    return {"fid_mean": fm, "fid_sem": fs, "kid_mean": km, "kid_sem": ks, "fids": fids,
            "kids": kids}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "checkpoint", type=Path,
        help="engine checkpoint dir (with ema.safetensors); unused with --real-only",
    )  # fmt: skip
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--unet-width", type=int, default=16)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--sets", type=int, default=3)
    ap.add_argument("--ancestral-sets", type=int, default=0, help="default: --sets")
    ap.add_argument("--first-seed", type=int, default=4, help="diffusion.py drew set 0 with 4")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="diffusion_fid_sets")
    ap.add_argument(
        "--real-only", action="store_true",
        help="only the real-val row (random validation subsets against the test set) and the FID "
        "of the first and of a random n test images against the whole test set",
    )  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = dgm.data.load(args.dataset)
    feats = dataset_features(data, seed=0)
    x_test = data.split("test")[0]
    x_val = data.split("val")[0]
    # random subsets: MNIST's splits are ordered by writer population (NIST SD-3, then SD-1),
    # so a contiguous slice is not a sample of the distribution
    perm = torch.randperm(len(x_val), generator=torch.Generator().manual_seed(0))
    subsets = [x_val[perm[i * args.n : (i + 1) * args.n]]
               for i in range(min(args.sets + 2, len(x_val) // args.n))]  # fmt: skip
    real = [fid(r, x_test, features=feats) for r in subsets]
    real_kid = [kid(r, x_test, features=feats, subset_size=args.n)[0] for r in subsets]
    if args.real_only:
        pick = torch.randperm(len(x_test), generator=torch.Generator().manual_seed(0))[: args.n]
        first, rand = x_test[: args.n], x_test[pick]
        rows = [{"reference": f"real-val, {len(real)} random subsets", "n": args.n,
                 **summary(real, real_kid)},
                {"reference": "first n test images", "n": args.n,
                 "fid_mean": fid(first, x_test, features=feats)},
                {"reference": "random n test images", "n": args.n,
                 "fid_mean": fid(rand, x_test, features=feats)}]  # fmt: skip
        report(args.name, rows, ["reference", "n", "fid_mean", "fid_sem", "kid_mean", "kid_sem"],
               {"dataset": args.dataset})  # fmt: skip
        return
    model = build("ddpm", data.spec, unet_width=args.unet_width)
    weights = args.checkpoint / "ema.safetensors"
    if not weights.is_file():
        weights = args.checkpoint / "model.safetensors"
    model.load_state_dict(load_file(weights))
    model.eval()
    rows = []
    for label, opts in SAMPLERS.items():
        fids, kids, cpus = [], [], []
        sets = args.ancestral_sets or args.sets if label.startswith("ancestral") else args.sets
        for k in range(sets):
            torch.manual_seed(args.first_seed + k)
            c0 = time.process_time()
            with model.inference():
                s = model.sample(args.n, **opts)
            cpus.append(time.process_time() - c0)
            fids.append(fid(s, x_test, features=feats))
            kids.append(kid(s, x_test, features=feats, subset_size=args.n)[0])
            print(label, k, round(fids[-1], 3), round(cpus[-1], 1), flush=True)
        rows.append({"sampler": label, "n": args.n, "sets": sets, **summary(fids, kids),
                     "sample_cpu_s_median": median(cpus)})  # fmt: skip
        print(rows[-1], flush=True)
    base = rows[-1]["fid_mean"]
    for r in rows:
        r["fid_ratio_vs_ancestral"] = r["fid_mean"] / base
    real_row = {"sampler": "real-val", "n": args.n, "sets": len(real), **summary(real, real_kid)}
    real_row["fid_ratio_vs_ancestral"] = real_row["fid_mean"] / base
    rows.append(real_row)
    extra = {"checkpoint": str(weights), "dataset": args.dataset, "unet_width": args.unet_width,
             "real_subset_fids": real, "real_fid_mean": real_row["fid_mean"],
             "real_fid_sem": real_row["fid_sem"]}  # fmt: skip
    report(args.name, rows, ["sampler", "n", "sets", "fid_mean", "fid_sem", "kid_mean", "kid_sem",
                             "fid_ratio_vs_ancestral", "sample_cpu_s_median"], extra)  # fmt: skip


if __name__ == "__main__":
    main()
