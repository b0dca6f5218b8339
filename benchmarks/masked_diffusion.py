"""Masked (absorbing-state) diffusion on the 8x8 digits (17 levels): the negative ELBO in nats.

Trains ``masked-diffusion`` with the common engine within a wall-clock budget (validation bound
every ``--eval-every`` steps, best weights kept), then scores the full test set with the
count-form estimator of the same bound (the model's ``bound_estimator``, count by default: the masked count is drawn and ``t``
integrated out, so the terms are bounded; ``--k`` draws per image) and reports the mean negative
ELBO with two standard errors: over the test images (what a test set of this size allows) and the
Monte Carlo part alone (from the draws). It also times ``sample`` at several step counts.

``--fid-steps T ...``: sample quality against the number of steps, FID in dgm's feature space (the
dataset's locally trained classifier, :mod:`dgm.eval.features`; not comparable with Inception FIDs)
of ``--fid-n`` samples against the test set, mean and standard error over ``--fid-sets`` sample
sets, with the seconds each set took (T = the number of pixels: the order-agnostic
autoregressive sampler). ``--completion N``: N test images with the lower half hidden, completed
by the model (``--completion-steps``; 0: one pixel per step; ``--completion-order``: the
sampler's unmasking orders, one figure each); the share of completions whose class
by the feature classifier matches the true image's (its label where the data has labels, else the
classifier's class of the whole image), with its binomial standard error. ``--gated-minutes M``
trains a Gated PixelCNN (its defaults) for M minutes on the same data and reports the same
completion figure by its exact prefix completion, and its fast sampler's time and FID at the same
sample counts. ``--neighbours K`` adds a reference for the completion figure without a model: each
image's lower half taken from each of the K training images nearest to it on the observed upper
half (Euclidean), as K draws of the training set's empirical conditional; its class match says
how much of the class the upper half leaves open.

    OMP_NUM_THREADS=1 python benchmarks/masked_diffusion.py digits --minutes 15
    OMP_NUM_THREADS=1 python benchmarks/masked_diffusion.py binarized-mnist --minutes 30 --k 8
    OMP_NUM_THREADS=1 python benchmarks/masked_diffusion.py digits --minutes 15 \
        --fid-steps 10 20 50 64 --completion 447 --gated-minutes 15
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import torch

import dgm.data
from _common import read_log, report, with_overrides
from dgm.api import load_run
from dgm.eval.features import dataset_features
from dgm.eval.fid import fid
from dgm.eval.suite import model_samples

PRESETS = {
    "digits": dict(
        model={"width": 64, "depth": 6, "schedule": "linear", "estimator": "time"},
        train=dict(
            batch_size=128,
            lr=1e-3,
            grad_clip=1.0,
            steps=100000,
            eval_every=250,
            eval_size=350,
            schedule="constant",
            patience=0,
        ),  # fmt: skip
        sample_steps=(8, 16, 32, 64),
    ),
    # the tiny U-Net (16 channels, two downsamplings: a 7x7 level for global context) on 28x28
    # binary images, the model's own default there; 84.89 nats in 30 minutes on one thread
    "binarized-mnist": dict(
        model={
            "network": "unet",
            "width": 16,
            "depth": 1,
            "mults": [1, 2, 2],
            "bound_t_samples": 4,
        },
        train=dict(
            batch_size=64,
            lr=1e-3,
            grad_clip=1.0,
            steps=1000000,
            eval_every=500,
            eval_size=200,
            schedule="constant",
            patience=0,
        ),  # fmt: skip
        sample_steps=(10, 50),
    ),
}


def fid_by_steps(model, pre, feats, fr, steps_list, n, sets, seed=0, option="steps") -> list:
    """FID of ``n`` samples against test features ``fr`` at each step count, over ``sets`` sets."""
    rows = []
    for steps in steps_list:
        fids, secs = [], []
        for k in range(sets):
            t = time.perf_counter()
            opts = {option: steps} if option else {}
            x = model_samples(model, pre, n, seed + 1000 * k, options=opts)
            secs.append(time.perf_counter() - t)
            fids.append(fid(fr, feats(x)))
        f = torch.tensor(fids, dtype=torch.float64)
        se = float(f.std() / math.sqrt(sets)) if sets > 1 else math.nan
        rows.append({"steps": steps, "fid": round(float(f.mean()), 3), "fid_se": round(se, 3),
                     "sets": sets, "n": n, "seconds_per_set": round(sum(secs) / sets, 2)})  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def completion_match(model, pre, feats, x, y, options) -> dict:
    """Lower half hidden: the share of completions classified as the true image's class."""
    h = x.shape[-2]
    mask = torch.zeros(x.shape[1:], dtype=torch.bool)
    mask[..., : h // 2, :] = True  # the top rows observed (a prefix of the raster order)
    with torch.no_grad():
        ref = y if y is not None else feats.logits(pre.inverse(x)).argmax(1)
    t = time.perf_counter()
    outs = []
    with model.inference():
        for i in range(0, x.shape[0], 100):
            outs.append(model.complete(x[i : i + 100], mask, **options))
    secs = time.perf_counter() - t
    with torch.no_grad():
        pred = feats.logits(pre.inverse(torch.cat(outs))).argmax(1)
    rate = float((pred == ref).double().mean())
    n = x.shape[0]
    return {"images": n, "match": round(rate, 4),
            "match_se": round(math.sqrt(rate * (1 - rate) / n), 4),
            "reference": "test labels" if y is not None else "classifier on the whole image",
            "seconds": round(secs, 1)}  # fmt: skip


def neighbour_completion(train_x, feats, x, y, k: int) -> dict:
    """The completion figure of the K training images nearest on the observed upper half: each
    completion keeps the test image's upper half and takes a neighbour's lower half."""
    h = x.shape[-2]
    top = x[..., : h // 2, :].reshape(x.shape[0], -1).double()  # (N, P)
    top_train = train_x[..., : h // 2, :].reshape(train_x.shape[0], -1).double()  # (M, P)
    with torch.no_grad():
        ref = y if y is not None else feats.logits(x).argmax(1)
        near = torch.cdist(top, top_train).topk(k, largest=False).indices  # (N, K)
        hits = []
        for j in range(k):
            c = train_x[near[:, j]].clone()  # (N, ...)
            c[..., : h // 2, :] = x[..., : h // 2, :]
            hits.append(feats.logits(c).argmax(1) == ref)
    hit = torch.stack(hits, 1).double()  # (N, K)
    rate = float(hit.mean())
    per_image = hit.mean(1)  # (N,): the K draws of one image are not independent
    return {"images": x.shape[0], "neighbours": k, "match": round(rate, 4),
            "match_se": round(float(per_image.std()) / math.sqrt(x.shape[0]), 4),
            "match_nearest": round(float(hit[:, 0].mean()), 4)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", choices=sorted(PRESETS))
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--set", action="append", default=[], help="model key=value")
    ap.add_argument("--train-set", action="append", default=[], help="training key=value")
    ap.add_argument("--k", type=int, default=64, help="bound draws per test image")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--test-size", type=int, default=0, help="test images scored (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--reuse", action="store_true",
                    help="score the run already in --out instead of training (its training time "
                         "is reported as wall time)")  # fmt: skip
    ap.add_argument("--name", default=None)
    ap.add_argument("--fid-steps", nargs="*", type=int, default=[])
    ap.add_argument("--fid-n", type=int, default=500)
    ap.add_argument("--fid-sets", type=int, default=3)
    ap.add_argument("--completion", type=int, default=0, help="test images to complete")
    ap.add_argument("--completion-steps", type=int, default=0)
    ap.add_argument("--completion-order", nargs="+", default=["random"],
                    choices=["random", "confidence", "raster"],
                    help="unmasking orders of the completions (one figure each)")  # fmt: skip
    ap.add_argument("--gated-minutes", type=float, default=0.0)
    ap.add_argument("--neighbours", type=int, default=0,
                    help="completion reference: lower halves of the K nearest training images")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    preset = PRESETS[args.data]
    model_cfg = with_overrides(preset["model"], args.set)
    train_opts = with_overrides(preset["train"], args.train_set)
    data = dgm.data.load(args.data)
    out = Path(args.out or tempfile.mkdtemp()) / f"masked-diffusion-{args.data}"
    t0 = time.perf_counter()
    if args.reuse and (out / "summary.json").is_file():
        wall = float(json.loads((out / "summary.json").read_text())["train_seconds_total"])
    else:
        dgm.train("masked-diffusion", data, out, model_config=model_cfg, progress=False,
                  seed=args.seed, overwrite=True, max_minutes=args.minutes, checkpoint_every=0,
                  **train_opts)  # fmt: skip
        wall = time.perf_counter() - t0
    run = load_run(out)
    model = run.model
    torch.manual_seed(1234)
    x = data.test.to(model.dtype)
    if args.test_size and args.test_size < x.shape[0]:  # spread over the set, not its head
        x = x[torch.linspace(0, x.shape[0] - 1, args.test_size).long()]
    vals, ses = [], []
    with model.inference():
        for i in range(0, x.shape[0], 64):
            v, s = model.elbo_stats(x[i : i + 64], k=args.k)
            vals.append(v)
            ses.append(s)
    nelbo = -torch.cat(vals)  # (N,)
    se = torch.cat(ses)
    n = nelbo.shape[0]
    mc_se = math.sqrt(float((se**2).sum())) / n
    data_sem = float(nelbo.std()) / math.sqrt(n)
    timing = {}
    with model.inference():
        for steps in preset["sample_steps"]:
            t = time.perf_counter()
            model.sample(100, steps=steps)
            timing[f"sample100_s_steps{steps}"] = round(time.perf_counter() - t, 3)
    extra = {}
    if args.fid_steps or args.completion:
        feats = dataset_features(data)
        x_test, y_test = data.split("test")
        fr = feats(x_test)
        pre = run.preprocessor
        if args.fid_steps:
            extra["fid_by_steps"] = fid_by_steps(model, pre, feats, fr, args.fid_steps,
                                                 args.fid_n, args.fid_sets)  # fmt: skip
        idx = torch.linspace(0, x_test.shape[0] - 1, max(args.completion, 1)).long()
        xc, yc = x_test[idx].to(model.dtype), (None if y_test is None else y_test[idx])
        for order in args.completion_order if args.completion else []:
            key = "completion" if order == "random" else f"completion_{order}"
            torch.manual_seed(4321)
            extra[key] = completion_match(
                model, pre, feats, xc, yc, {"steps": args.completion_steps, "order": order}
            )
            print(key, extra[key], flush=True)
        if args.completion and args.neighbours:
            x_train = data.split("train")[0]
            extra["neighbour_completion"] = neighbour_completion(x_train, feats, xc.to(x_train.dtype),
                                                                 yc, args.neighbours)  # fmt: skip
            print(extra["neighbour_completion"], flush=True)
        if args.gated_minutes:
            g_out = out.parent / "gated-pixelcnn"
            dgm.train("gated-pixelcnn", data, g_out, progress=False, seed=args.seed,
                      overwrite=True, max_minutes=args.gated_minutes, checkpoint_every=0)  # fmt: skip
            gated = load_run(g_out)
            gated_row = {"minutes": args.gated_minutes}
            if args.completion:
                gated_row["completion"] = completion_match(gated.model, gated.preprocessor, feats,
                                                           xc, yc, {})  # fmt: skip
            if args.fid_steps:
                gated_row["fid_fast_sampler"] = fid_by_steps(
                    gated.model,
                    gated.preprocessor,
                    feats,
                    fr,
                    ["fast"],
                    args.fid_n,
                    args.fid_sets,
                    option="sampler",
                )
            extra["gated_pixelcnn"] = gated_row
            print(gated_row, flush=True)
    logs = read_log(out)
    val_curve = [(r["step"], r["val_nll"]) for r in logs if "val_nll" in r]
    steps_done = max((r["step"] for r in logs if "step" in r), default=0)
    row = {
        "data": args.data,
        "model_config": " ".join(f"{k}={v}" for k, v in model_cfg.items()),
        "training": " ".join(f"{k}={v}" for k, v in train_opts.items()),
        "steps": steps_done,
        "test_images": n,
        "k_draws": args.k,
        "test_nelbo_nats": round(float(nelbo.mean()), 3),
        "sem_over_images": round(data_sem, 3),
        "mc_stderr": round(mc_se, 4),
        "best_val_nelbo": min((v for _, v in val_curve), default=None),
        "wall_minutes": round(wall / 60, 2),
        "threads": args.threads,
        "seed": args.seed,
        **timing,
    }
    report(
        args.name or f"masked_diffusion_{args.data}",
        [row],
        list(row),
        {
            "val_curve": val_curve,
            "figure": "negative ELBO (upper bound on the NLL), nats/image",
            **extra,
        },  # fmt: skip
    )


if __name__ == "__main__":
    main()
