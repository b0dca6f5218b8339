"""PixelCNN, Gated PixelCNN, Transformer and LSTM: sampling speed, NLL, anomaly AUROC, compression.

    .venv/bin/python benchmarks/autoregressive.py speed [--prefix 8] [--repeats 3]
    .venv/bin/python benchmarks/autoregressive.py likelihood [--minutes 3] [--digits-minutes 2]
    .venv/bin/torchrun --nproc_per_node=2 benchmarks/autoregressive.py likelihood --threads 1 ...

``speed`` (results/autoregressive_speed): time to draw 64 binarized-MNIST 28x28 samples with each
model's default configuration (untrained weights: the cost of sampling does not depend on them).
The fast sampler is timed on the full 784 pixels. The naive sampler runs one full forward pass per
pixel at constant cost, so it is timed on the first ``--prefix`` pixels and extrapolated linearly
to 784 (stated in the output as ``naive_s_est``); the same prefix is also timed for the fast path.

``likelihood`` trains each model with the common engine (``Trainer``, ``max_minutes`` budget,
validation NLL on ``--eval-size`` validation images every ``--eval-every`` steps, best weights
kept) on the fixed binarized MNIST and on the 8x8 digits (17 levels). ``--set [MODEL.]key=value``
changes a model hyperparameter, ``--train-set [MODEL.]key=value`` a training option; with a
decaying schedule (``--train-set schedule=cosine``) the number of steps is fitted to the budget
from the steady-state step rate of 40 timed steps (the budget counts
training steps, not validation); ``--train-set schedule_clock=time`` decays it over the budget
itself and needs no such estimate. Under ``torchrun`` the processes train data-parallel through
the engine (``--batch-size`` is the global batch, ``--threads`` per process; on 2 cores, two
one-thread processes train the Gated PixelCNN faster than one two-thread process: ``scale.py``),
and rank 0 alone scores, with the threads of all of them. It then reports
* test NLL in nats on the first ``--test-size`` test images, or with ``--test-spread`` on that many
  evenly spaced over the test set (results/autoregressive_nll<TAG>; MNIST's test set is ordered by
  writer population and its first images are easier),
* anomaly AUROC of bits/dim: clean binarized-MNIST test images against the same images with 5%
  of pixels flipped, and against the digits upsampled to 28x28 and binarized
  (results/autoregressive_anomaly<TAG>),
* lossless compression of ``--compress-size`` binarized-MNIST test images with ``dgm.models.autoregressive.coding``:
  compressed payload and file size against the model's NLL in bits, and gzip (level 9) of the
  same array as bytes and bit-packed (results/autoregressive_compression<TAG>).
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import dgm.data
from _common import (
    loadavg,
    mean_sem,
    median,
    parse_sets,
    read_log,
    report,
    step_rates,
)
from dgm.core.config import build_config, config_to_dict
from dgm.core.spec import DataSpec
from dgm.eval.anomaly import auroc, pixel_flips, resize_images
from dgm.eval.likelihood import bits_per_dim
from dgm.eval.likelihood import nll as nll_metric
from dgm.models import build
from dgm.models.autoregressive.coding import compress, decompress, nll_bits, payload_bytes
from dgm.train import distributed as ddp
from dgm.train.config import TrainConfig
from dgm.train.engine import Trainer

MODELS = ["pixelcnn", "gated-pixelcnn", "transformer", "rnn"]
BINARY = DataSpec((1, 28, 28), "discrete", levels=2)


# ------------------------------------------------------------------------------------ (a) speed
def time_prefix(model, n: int, prefix: int, sampler: str) -> float:
    """Seconds for the first ``prefix`` dimensions of ``n`` samples with one sampler."""
    torch.manual_seed(0)
    u = torch.rand(n, model.num_dims, dtype=torch.float64)
    t0 = time.perf_counter()
    with model.inference():
        dec = model.decoder(n, None, sampler)
        for d in range(prefix):
            probs = torch.softmax(dec.logits().double(), -1)
            dec.feed((probs.cumsum(-1) < u[:, d : d + 1]).sum(-1).clamp(max=model.levels - 1))
    return time.perf_counter() - t0


def speed(args: argparse.Namespace) -> None:
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        model = build(name, BINARY).eval()
        fast_full = []
        for _ in range(args.repeats):
            torch.manual_seed(1)
            t0 = time.perf_counter()
            with model.inference():
                model.sample(args.n, sampler="fast")
            fast_full.append(time.perf_counter() - t0)
        naive = [time_prefix(model, args.n, args.prefix, "naive") for _ in range(args.repeats)]
        fast = [time_prefix(model, args.n, args.prefix, "fast") for _ in range(args.repeats)]
        est = median(naive) * model.num_dims / args.prefix
        rows.append({
            "model": name,
            "params": sum(p.numel() for p in model.parameters()),
            "fast_s": median(fast_full),
            "naive_s_est": est,
            "speedup_est": est / median(fast_full),
            f"naive_s_first{args.prefix}": median(naive),
            f"fast_s_first{args.prefix}": median(fast),
            "prefix_speedup": median(naive) / median(fast),
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    cols = ["model", "params", "fast_s", "naive_s_est", "speedup_est",
            f"naive_s_first{args.prefix}", f"fast_s_first{args.prefix}", "prefix_speedup"]  # fmt: skip
    report("autoregressive_speed", rows, cols, extra={
        "n_samples": args.n, "prefix": args.prefix, "repeats": args.repeats,
        "threads": args.threads,
        "note": "untrained default-config models on binarized MNIST 28x28; fast timed on all 784 "
                "pixels, naive on the first `prefix` pixels and extrapolated linearly "
                "(each naive step is one full forward pass of constant cost); medians",
        "loadavg": loadavg(),
    })  # fmt: skip


# ------------------------------------------------------------------------------------ (b) NLL
LR = {"pixelcnn": 1e-3, "gated-pixelcnn": 1e-3, "transformer": 1e-3, "rnn": 2e-3}


def train(name: str, data, minutes: float, args: argparse.Namespace, out: Path):
    torch.set_num_threads(args.threads)  # rank 0 scores with more under torchrun
    torch.manual_seed(0)
    model_cfg = parse_sets(args.set, name)
    opts = {
        "steps": 10**7, "batch_size": args.batch_size, "lr": LR[name], "max_minutes": minutes,
        "eval_every": args.eval_every, "eval_size": args.eval_size, "checkpoint_every": 10**9,
        "progress": False, "log_every": 10, "grad_clip": 1.0,
    } | parse_sets(args.train_set, name)  # fmt: skip
    if opts.get("schedule", "constant") != "constant" and opts.get("schedule_clock") != "time":
        # a decaying schedule on the step clock needs its length: the steps that fit in the
        # budget (schedule_clock=time needs none: it decays over the budget itself). The budget
        # (max_minutes) counts training steps only, not validation, so the length comes from
        # the steady-state step rate of a short run: the median rate logged over steps 11-40,
        # past the slow first steps. max_minutes stays as a guard.
        probe_cfg = opts | {"steps": 40, "eval_every": 0, "log_every": 10, "schedule": "constant",
                            "warmup_steps": 0}  # fmt: skip
        # no validation data: the probe's rates are all it is for
        probe = Trainer(build(name, data.spec, **model_cfg), data.train, out=out / "probe",
                        config=build_config(TrainConfig, probe_cfg))  # fmt: skip
        probe_info = probe.fit()
        steps = 0
        if ddp.is_main():  # only rank 0 writes the log; every rank must plan the same schedule
            # the first interval holds the start-up cost; a budget too short for two intervals
            # falls back to the probe's overall rate
            rates = step_rates(read_log(out / "probe"))[1:] or [probe_info["steps_per_second"]]
            steps = max(1, int(0.98 * 60 * minutes * median(rates)))
        opts["steps"] = int(ddp.max_over_ranks(steps))  # rank 0's: the others hold 0
    torch.manual_seed(0)
    model = build(name, data.spec, **model_cfg)
    cfg = build_config(TrainConfig, opts, what="training")
    trainer = Trainer(model, data.train, config=cfg, out=out, val_x=data.val, val_metric=nll_metric)
    info = trainer.fit()
    if not ddp.is_main():  # rank 0 holds the best weights and the log
        return None, info, []
    model.load_state_dict(trainer.final_weights())
    curve = [
        (r["step"], round(r["train_seconds"] / 60, 2), round(r["val_nll"], 2))
        for r in read_log(out)
        if "val_nll" in r
    ]
    info["config"] = config_to_dict(model.config)
    # the options as the engine read them (``--train-set`` values arrive as strings)
    info["train"] = {k: getattr(cfg, k) for k in opts if k not in ("progress", "checkpoint_every")}
    info["params"] = sum(p.numel() for p in model.parameters())
    return model.eval(), info, curve


def test_images(test: torch.Tensor, size: int, spread: bool) -> torch.Tensor:
    """The first ``size`` test images, or ``size`` evenly spaced ones when ``spread``."""
    if not spread or size >= len(test):
        return test[:size]
    return test[torch.linspace(0, len(test) - 1, size).long()]


def test_nll(model, x: torch.Tensor) -> tuple[float, float]:
    with model.inference():
        lp = torch.cat([model.log_prob(x[i : i + 250]) for i in range(0, len(x), 250)])
    return mean_sem(-lp.double())


def bpd(model, x: torch.Tensor) -> torch.Tensor:
    with model.inference():
        lp = torch.cat([model.log_prob(x[i : i + 250]) for i in range(0, len(x), 250)])
    return bits_per_dim(-lp.double(), model.num_dims)


def likelihood(args: argparse.Namespace) -> None:
    # under torchrun every process trains (data parallel, --batch-size is the global batch);
    # rank 0 alone scores, with the threads of all of them, while the others wait or exit
    _, world = ddp.setup()
    tmp = Path(tempfile.mkdtemp())
    nll_rows, anomaly_rows, coding_rows = [], [], []
    bmnist, digits = dgm.data.load("binarized-mnist"), dgm.data.load("digits")
    g = torch.Generator().manual_seed(0)
    clean = bmnist.test[: args.anomaly_size]
    flipped = pixel_flips(clean, 0.05, generator=g)
    other = resize_images(digits.test[: args.anomaly_size], (28, 28), 17, 2)
    for name in args.models:
        budget = dict(kv.split("=") for kv in args.budget)
        bm_minutes = float(budget.get(name, args.minutes))
        for data, minutes in ((bmnist, bm_minutes), (digits, args.digits_minutes)):
            if minutes <= 0:
                continue
            model, info, curve = train(name, data, minutes, args, tmp / f"{name}-{data.name}")
            if model is None:
                continue
            torch.set_num_threads(args.threads * world)
            x = test_images(data.test, args.test_size, args.test_spread)
            nll, sem = test_nll(model, x)
            steps_per_epoch = data.train.shape[0] // args.batch_size
            row = {
                "model": name, "data": data.name, "minutes": minutes, "steps": info["steps"],
                "test_nll": nll, "test_nll_sem": sem, "test_images": len(x),
                "test_spread": args.test_spread,
                "s_per_epoch_est": steps_per_epoch / info["steps_per_second"],
                "epochs": info["steps"] / steps_per_epoch, "params": info["params"],
                "processes": world,
                "config": info["config"], "train": info["train"],
                "val_curve_step_min_nll": curve,
            }  # fmt: skip
            nll_rows.append(row)
            print(json.dumps(row), flush=True)
            if data is not bmnist:
                continue
            b_clean, b_flip, b_other = bpd(model, clean), bpd(model, flipped), bpd(model, other)
            anomaly_rows.append({
                "model": name, "bpd_clean": float(b_clean.mean()),
                "bpd_flipped5": float(b_flip.mean()), "bpd_digits28": float(b_other.mean()),
                "auroc_flipped5": auroc(b_flip, b_clean), "auroc_digits28": auroc(b_other, b_clean),
            })  # fmt: skip
            print(json.dumps(anomaly_rows[-1]), flush=True)
            arr = bmnist.test[: args.compress_size].numpy().astype(np.uint8)
            t0 = time.perf_counter()
            blob = compress(model, arr)
            t1 = time.perf_counter()
            exact = bool(np.array_equal(decompress(model, blob), arr))
            t2 = time.perf_counter()
            payload = 8 * payload_bytes(blob)
            model_bits = nll_bits(model, arr)
            coding_rows.append({
                "model": name, "images": len(arr), "nll_bits": model_bits,
                "payload_bits": payload, "file_bits": 8 * len(blob),
                "payload_over_nll": payload / model_bits,
                "gzip_bits": 8 * len(gzip.compress(arr.tobytes(), 9)),
                "gzip_packbits_bits": 8 * len(gzip.compress(np.packbits(arr).tobytes(), 9)),
                "round_trip_exact": exact, "encode_s": t1 - t0, "decode_s": t2 - t1,
            })  # fmt: skip
            print(json.dumps(coding_rows[-1]), flush=True)
    if not ddp.is_main():
        return
    common = {"batch_size": args.batch_size, "threads": args.threads,
              "processes": world}  # fmt: skip
    tag = args.tag
    report(f"autoregressive_nll{tag}", nll_rows,
           ["model", "data", "minutes", "steps", "epochs", "test_nll", "test_nll_sem",
            "test_images", "s_per_epoch_est"],
           extra=common | {"note": "model configs and training options per row (defaults "
                                   "unless --set/--train-set), best validated weights "
                                   "(eval_size val images); test NLL in nats on the first "
                                   "test_images test images; s_per_epoch extrapolated from "
                                   "steps/s"})  # fmt: skip
    if anomaly_rows:
        report(f"autoregressive_anomaly{tag}", anomaly_rows,
               ["model", "bpd_clean", "bpd_flipped5", "bpd_digits28", "auroc_flipped5",
                "auroc_digits28"],
               extra=common | {"images_per_set": args.anomaly_size})  # fmt: skip
    if coding_rows:
        report(f"autoregressive_compression{tag}", coding_rows,
               ["model", "images", "nll_bits", "payload_bits", "file_bits", "payload_over_nll",
                "gzip_bits", "gzip_packbits_bits", "round_trip_exact", "encode_s", "decode_s"],
               extra=common)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("part", choices=["speed", "likelihood"])
    ap.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    ap.add_argument("--n", type=int, default=64, help="samples to draw (speed)")
    ap.add_argument("--prefix", type=int, default=8, help="naive pixels timed (speed)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: the machine is shared)"
    )
    ap.add_argument("--minutes", type=float, default=3.0, help="budget on binarized MNIST")
    ap.add_argument("--digits-minutes", type=float, default=2.0, help="budget on digits")
    ap.add_argument(
        "--budget",
        action="append",
        default=[],
        metavar="MODEL=MINUTES",
        help="binarized-MNIST budget of one model (overrides --minutes)",
    )
    ap.add_argument(
        "--set", action="append", default=[], metavar="[MODEL.]KEY=VALUE",
        help="model hyperparameter (for every model, or only MODEL)",
    )  # fmt: skip
    ap.add_argument(
        "--train-set", action="append", default=[], metavar="[MODEL.]KEY=VALUE",
        help="TrainConfig option, e.g. schedule=cosine (its length is fitted to the budget)",
    )  # fmt: skip
    ap.add_argument("--tag", default="", help="suffix of the results files")
    ap.add_argument("--eval-size", type=int, default=300, help="validation images per check")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--test-size", type=int, default=1000)
    ap.add_argument(
        "--test-spread", action="store_true",
        help="test on --test-size images evenly spaced over the test set, not the first ones",
    )  # fmt: skip
    ap.add_argument("--anomaly-size", type=int, default=300)
    ap.add_argument("--compress-size", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    speed(args) if args.part == "speed" else likelihood(args)


if __name__ == "__main__":
    main()
