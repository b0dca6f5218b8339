"""VAE / IWAE on the fixed binarized MNIST and on the 8x8 digits: test NLL (IWAE bound, k = 5000),
negative ELBO and seconds per epoch.

Trains with the common engine (validation bound every epoch with the model's ``eval_k``, early
stopping, best weights kept) within a wall-clock budget, then evaluates the best-validated weights:

* the test NLL estimate ``-L_5000``: the IWAE bound with k = 5000 importance samples (Burda et al.,
  2016) on ``--test-n`` test images drawn at random (seed 0; the split is sorted by class) (an upper bound on the true NLL, up to Monte Carlo
  error; its standard error across images is reported);
* the negative ELBO on the whole test set (one reparameterized sample per image, KL in closed form).

    .venv/bin/python benchmarks/vae.py binarized-mnist [--model iwae] [--minutes 30] [--test-n 1000]
    .venv/bin/python benchmarks/vae.py digits
    .venv/bin/python benchmarks/vae.py binarized-mnist --model iwae --set prior=vamp \
        --name iwae_vamp_binarized_mnist   # the VampPrior (Tomczak & Welling 2018)

Published anchors on the static binarization (test NLL, nats): VAE about 88.7, IWAE (k = 50) about
87.1; a VAE with the VampPrior and 300-300 layers (Tomczak & Welling 2018: gated layers, hundreds
of epochs) 85.57. pythae is not compared here: it would pull dependencies dgm does not want.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import yaml

import dgm.data
from _common import mean_sem, median, read_log, report, step_rates, with_overrides
from dgm.api import load, train
from dgm.core.config import config_to_dict
from dgm.eval.likelihood import nll

PRESETS = {
    "binarized-mnist": dict(
        # Tomczak & Welling 2018; N(0, I) unless --set prior=vamp (the model's default there)
        model={"latent_dim": 40, "hidden": [300, 300], "eval_k": 10, "prior": "standard"},
        train=dict(batch_size=100, lr=1e-3, epochs=1000, patience=10, eval_size=5000),
    ),
    "digits": dict(
        model={"latent_dim": 8, "hidden": [256, 128], "eval_k": 50},
        train=dict(batch_size=50, lr=1e-3, epochs=2000, patience=30, eval_size=0),
    ),
}


def train_in_budget(args, data) -> tuple[Path, dict, float, float, int]:
    """Train ``args.model`` with the preset of ``args.data`` within ``args.minutes``; returns the
    run directory, its summary, the training seconds, the wall seconds and the steps per epoch."""
    preset = PRESETS[args.data]
    model_cfg = with_overrides(preset["model"], args.set)
    train_opts = dict(preset["train"])
    steps_per_epoch = data.train.shape[0] // train_opts["batch_size"]
    common = dict(
        model_config=model_cfg,
        progress=False,
        eval_every=steps_per_epoch,
        checkpoint_every=10 * steps_per_epoch,
    )
    out = Path(args.out or tempfile.mkdtemp()) / f"{args.model}-{args.data}"
    # the budget: train in segments of half the remaining time, re-measuring the seconds per epoch
    # (training plus validation) after each; stop early, or when not one more epoch fits
    budget = args.minutes * 60
    t0 = time.perf_counter()
    train(args.model, data, out, overwrite=True, **common, **(train_opts | {"epochs": 1}))
    trained = 0.0
    while True:
        summary = json.loads((out / "summary.json").read_text())
        trained += summary["train_seconds"]
        done = summary["steps"] // steps_per_epoch
        per_epoch = trained / done
        remaining = budget - trained
        if summary["stopped_early"] or remaining < per_epoch or done >= train_opts["epochs"]:
            break
        more = max(1, int(0.5 * remaining / per_epoch)) if remaining > 4 * per_epoch else 1
        train(args.model, data, out, resume=True, epochs=min(done + more, train_opts["epochs"]),
              progress=False)  # fmt: skip
    return out, summary, trained, time.perf_counter() - t0, steps_per_epoch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", choices=sorted(PRESETS))
    ap.add_argument("--model", choices=("vae", "iwae"), default="vae")
    ap.add_argument("--minutes", type=float, default=30.0, help="training budget (wall clock)")
    ap.add_argument("--test-n", type=int, default=1000, help="test images for the k=5000 bound")
    ap.add_argument("--k", type=int, default=5000, help="importance samples of the test bound")
    ap.add_argument("--set", action="append", default=[], help="model key=value")
    ap.add_argument("--out", default=None)
    ap.add_argument("--name", default=None, help="result file name (default MODEL_DATA)")
    ap.add_argument(
        "--run",
        default=None,
        help="score this run (e.g. of `dgm train iwae --data binarized-mnist`) instead of training",
    )
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = dgm.data.load(args.data)
    if args.run:
        out = Path(args.run)
        run_cfg = yaml.safe_load((out / "config.yaml").read_text())
        args.model = run_cfg["model"]
        steps_per_epoch = data.train.shape[0] // run_cfg["train"]["batch_size"]
        summary = json.loads((out / "summary.json").read_text())
        trained = wall = summary["train_seconds"]
    else:
        out, summary, trained, wall, steps_per_epoch = train_in_budget(args, data)
    train_minutes = trained / 60
    logs = read_log(out)
    rates = step_rates(logs)
    val_curve = [(r["step"] // steps_per_epoch, r["val_nll"]) for r in logs if "val_nll" in r]

    model = load(out).model  # the model itself (model space): its encoder and bound methods
    x_test = data.test.to(model.dtype)
    torch.manual_seed(0)
    with model.inference():
        neg_elbo = torch.cat([-model.elbo(xb) for xb in x_test.split(1000)])
    neg_elbo_mean, neg_elbo_sem = mean_sem(neg_elbo)
    # a fixed random subset: the binarized-MNIST test split is sorted by class, so its first
    # images are all zeros and ones
    n = min(args.test_n, x_test.shape[0])
    subset = torch.randperm(x_test.shape[0], generator=torch.Generator().manual_seed(0))[:n]
    torch.manual_seed(1)
    t2 = time.perf_counter()
    bound = nll(model, x_test[subset], batch_size=500, bound_options={"k": args.k})
    eval_minutes = (time.perf_counter() - t2) / 60
    row = {
        "data": args.data,
        "model": args.model,
        "config": json.dumps(config_to_dict(model.config), separators=(",", ":")),
        "epochs_run": summary["steps"] // steps_per_epoch,
        "stopped_early": summary["stopped_early"],
        f"test_nll_iwae{args.k}": bound["nll"],
        "test_nll_sem": bound["nll_sem"],
        "test_n": n,
        "test_subset": "random, seed 0" if n < x_test.shape[0] else "all",
        "test_neg_elbo": neg_elbo_mean,
        "test_neg_elbo_sem": neg_elbo_sem,
        f"best_val_nll_iwae{model.config.eval_k}": summary["best_val_nll"],
        "s_per_epoch": steps_per_epoch / median(rates),  # median rate, validation included
        "s_per_epoch_mean": trained / (summary["steps"] // steps_per_epoch),
        "train_minutes": train_minutes,
        "eval_minutes": eval_minutes,
        "wall_minutes": wall / 60,
    }
    columns = [c for c in row if c != "config"]
    name = args.name or f"{args.model}_{args.data.replace('-', '_')}"
    report(name, [row], columns, {"val_curve": val_curve, "likelihood": bound["likelihood"]})


if __name__ == "__main__":
    main()
