"""Masked (absorbing-state) diffusion on the 8x8 digits (17 levels): the negative ELBO in nats.

Trains ``masked-diffusion`` with the common engine within a wall-clock budget (validation bound
every ``--eval-every`` steps, best weights kept), then scores the full test set with the
count-form estimator of the same bound (the model's ``bound_estimator``, count by default: the masked count is drawn and ``t``
integrated out, so the terms are bounded; ``--k`` draws per image) and reports the mean negative
ELBO with two standard errors: over the test images (what a test set of this size allows) and the
Monte Carlo part alone (from the draws). It also times ``sample`` at several step counts.

    OMP_NUM_THREADS=1 python benchmarks/masked_diffusion.py digits --minutes 15
    OMP_NUM_THREADS=1 python benchmarks/masked_diffusion.py binarized-mnist --minutes 30 --k 8
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch

import dgm.data
from _common import read_log, report, with_overrides
from dgm.api import load_run

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
    # the tiny U-Net (32 channels, one downsampling) on 28x28 binary images
    "binarized-mnist": dict(
        model={"network": "unet", "width": 32, "depth": 1, "mults": [1, 2], "bound_t_samples": 4},
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
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    preset = PRESETS[args.data]
    model_cfg = with_overrides(preset["model"], args.set)
    train_opts = with_overrides(preset["train"], args.train_set)
    data = dgm.data.load(args.data)
    out = Path(args.out or tempfile.mkdtemp()) / f"masked-diffusion-{args.data}"
    t0 = time.perf_counter()
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
        {"val_curve": val_curve, "figure": "negative ELBO (upper bound on the NLL), nats/image"},
    )


if __name__ == "__main__":
    main()
