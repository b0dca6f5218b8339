"""Mode coverage of dgm's default GAN on ``ring8`` and ``grid25`` (the mode-collapse protocol).

For each dataset and seed: ``dgm.train("gan", data, steps=S, seed=s)`` with the model's defaults
(its ``train_defaults``: lr 1e-3, batch 256; its ``Config``: non-saturating loss, 4 discriminator
steps per generator step, R1 penalty 0.1 on every 4th of them, PacGAN pack 2, generator EMA
0.999), then 2,500 samples
from the trained model and :func:`dgm.eval.modes.mode_coverage`:
modes captured (a mode needs at least 1/5 of its expected share of high-quality samples) and the
fraction of high-quality samples (within 3 standard deviations of their nearest mode). The table
gives the mean over seeds and the worst seed, the wall time of each seed (training + sampling) and
``/proc/loadavg`` when it finished: the machine is shared, so wall times are upper bounds; the
process CPU time (one thread) is what the run would take on one free core.

Published anchors (Lin et al., PacGAN, NeurIPS 2018, Table 3): a plain GAN captures 1 to 6.3 of 8
ring modes and 3.3 to 17.3 of 25 grid modes; PacGAN 7.9 / 8 and 24.8 / 25 (mean of 5 or 10 seeds).

    .venv/bin/python benchmarks/gan_modes.py [--seeds 0 1 2 3 4] [--steps 12000]
        [--data ring8 grid25] [--set key=value ...] [--threads 1] [--name gan_modes]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

import dgm
from _common import report, with_overrides  # noqa: I001
from dgm.api import load_run
from dgm.eval.modes import mode_coverage

NUM_SAMPLES = 2500


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def run_one(data_name: str, seed: int, steps: int, model_config: dict, train: dict) -> dict:
    data = dgm.data.load(data_name)
    out = Path(tempfile.mkdtemp()) / f"gan-{data_name}-{seed}"
    t0, c0 = time.perf_counter(), time.process_time()
    dgm.train(
        "gan", data, out, model_config=model_config, steps=steps, seed=seed, progress=False,
        checkpoint_every=0, log_every=500, **train,
    )  # fmt: skip
    run = load_run(out)
    torch.manual_seed(10_000 + seed)
    with run.model.inference():
        s = run.preprocessor.inverse(run.model.sample(NUM_SAMPLES)).double()  # (2500, 2)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    d = data.density
    res = mode_coverage(s, d.modes, d.mode_std)
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in logs if "d_loss" in r][-1]
    return {
        "data": data_name,
        "seed": seed,
        "steps": steps,
        "modes": res["modes_captured"],
        "modes_total": res["modes_total"],
        "high_quality": res["high_quality"],
        "kl_uniform": res["kl_uniform"],
        "seconds": seconds,
        "cpu_seconds": cpu,
        "loadavg": loadavg(),
        "final_d_loss": last["d_loss"],
        "final_g_loss": last["g_loss"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--steps", type=int, default=12000)
    ap.add_argument("--data", nargs="+", default=["ring8", "grid25"])
    ap.add_argument("--set", nargs="*", default=[], help="model config overrides key=value")
    ap.add_argument("--train-set", nargs="*", default=[], help="training overrides key=value")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="gan_modes")
    args = ap.parse_args()
    # One thread: on this shared 2-core machine two threads were 9x slower per step (contention).
    torch.set_num_threads(args.threads)
    model_config = with_overrides({}, args.set)
    train = {k: json.loads(v) for k, v in with_overrides({}, args.train_set).items()}
    rows, summary = [], []
    for data_name in args.data:
        per_seed = []
        for seed in args.seeds:
            r = run_one(data_name, seed, args.steps, model_config, train)
            per_seed.append(r)
            print(json.dumps(r), flush=True)
        rows += per_seed
        summary.append(
            {
                "data": data_name,
                "seeds": len(per_seed),
                "steps": args.steps,
                "modes_mean": statistics.mean(r["modes"] for r in per_seed),
                "modes_min": min(r["modes"] for r in per_seed),
                "modes_total": per_seed[0]["modes_total"],
                "high_quality_mean": statistics.mean(r["high_quality"] for r in per_seed),
                "high_quality_min": min(r["high_quality"] for r in per_seed),
                "seconds_mean": statistics.mean(r["seconds"] for r in per_seed),
                "seconds_max": max(r["seconds"] for r in per_seed),
                "cpu_seconds_max": max(r["cpu_seconds"] for r in per_seed),
            }
        )
    report(
        args.name,
        summary,
        [
            "data", "seeds", "steps", "modes_mean", "modes_min", "modes_total",
            "high_quality_mean", "high_quality_min", "seconds_mean", "seconds_max",
            "cpu_seconds_max",
        ],
        extra={
            "per_seed": rows,
            "model_config": model_config,
            "train_overrides": train,
            "num_samples": NUM_SAMPLES,
            "command": "benchmarks/gan_modes.py " + " ".join(
                f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                for k, v in vars(args).items() if v not in ([], None)
            ),
        },
    )  # fmt: skip


if __name__ == "__main__":
    main()
