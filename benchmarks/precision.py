"""Training step time in float32 against bfloat16 mixed precision (``precision="bf16-mixed"``:
the loss's forward pass under ``torch.autocast``, float32 weights) on this CPU.

Each workload trains through the engine (``dgm.train.engine.Trainer``) for ``--steps`` steps,
float32 and bf16-mixed interleaved ``--repeats`` times (the 2 cores are shared: interleaving gives
both the same load); the figure is the median wall-clock milliseconds per step (a measurement of
this machine, not a bound), and the ratio is bf16 / float32 (above 1: bf16 is slower).

    .venv/bin/python benchmarks/precision.py [--steps 60] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import dgm.data
from _common import median, report
from dgm.models import build
from dgm.train.config import TrainConfig
from dgm.train.engine import Trainer

# name: (model, dataset, model options, batch size)
WORKLOADS = {
    "made-digits": ("made", "digits", {"hidden": [512, 512]}, 128),
    "pixelcnn-digits": ("pixelcnn", "digits", {}, 64),
    "nsf-8gaussians": ("nsf", "8gaussians", {}, 512),
}


def ms_per_step(workload: str, precision: str, steps: int) -> float:
    model_name, data_name, options, batch = WORKLOADS[workload]
    data = dgm.data.load(data_name)
    pre = dgm.data.default_preprocessor(data.spec, dgm.models.get(model_name).data_kinds)
    torch.manual_seed(0)
    model = build(model_name, pre.spec(data.spec), **options)
    cfg = TrainConfig(steps=steps, batch_size=batch, precision=precision, progress=False,
                      checkpoint_every=0, log_every=10_000)  # fmt: skip
    with tempfile.TemporaryDirectory() as d:
        trainer = Trainer(model, data.train, preprocessor=pre, config=cfg, out=Path(d))
        trainer.fit()  # warm-up (first-call allocations, oneDNN kernel selection)
        trainer.total_steps = 2 * steps
        t0 = time.perf_counter()
        trainer.fit()
        return 1000 * (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for w in args.workloads:
        times: dict[str, list[float]] = {"full": [], "bf16-mixed": []}
        for _ in range(args.repeats):
            for precision in times:
                times[precision].append(ms_per_step(w, precision, args.steps))
        f32, bf16 = median(times["full"]), median(times["bf16-mixed"])
        rows.append({"workload": w, "float32 ms/step": round(f32, 2),
                     "bf16-mixed ms/step": round(bf16, 2), "bf16 / float32": round(bf16 / f32, 2),
                     "runs": times})  # fmt: skip
    report("precision", rows, ["workload", "float32 ms/step", "bf16-mixed ms/step",
                               "bf16 / float32"], {"threads": args.threads, "steps": args.steps})  # fmt: skip


if __name__ == "__main__":
    main()
