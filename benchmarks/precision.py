"""Training step time in float32 against bfloat16 mixed precision (``precision="bf16-mixed"``:
the loss's forward pass under ``torch.autocast``, float32 weights) on this CPU.

Each workload trains through the engine (``dgm.train.engine.Trainer``) for ``--steps`` steps,
float32 and bf16-mixed interleaved ``--repeats`` times (the 2 cores are shared: interleaving gives
both the same load). The figures are medians of milliseconds per step measured on this machine:
CPU time of the process (with one thread, little affected by the other users of the cores) and
wall-clock time; the ratio is bf16 / float32 of the CPU times (above 1: bf16 is slower), and,
for runs of more than one thread (whose CPU time counts the threads' waiting), of the wall times.
The machine record says whether this CPU computes bfloat16 on AMX tiles (``bf16_hardware``,
what ``precision="auto"`` decides by).

    .venv/bin/python benchmarks/precision.py [--steps 60] [--repeats 5] [--threads 1]
    DGM_DATA=../../shared/data .venv/bin/python benchmarks/precision.py --threads 2 \
        --workloads gated-pixelcnn-mnist transformer-mnist flow-matching-mnist --name NAME
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
from dgm.train.config import TrainConfig, bf16_hardware
from dgm.train.engine import Trainer

# name: (model, dataset, model options, batch size)
WORKLOADS = {
    "made-digits": ("made", "digits", {"hidden": [512, 512]}, 128),
    "pixelcnn-digits": ("pixelcnn", "digits", {}, 64),
    "nsf-8gaussians": ("nsf", "8gaussians", {}, 512),
    # the MNIST recipes' models and batches (``large_image_train_defaults``)
    "gated-pixelcnn-mnist": ("gated-pixelcnn", "binarized-mnist", {}, 32),
    "transformer-mnist": ("transformer", "binarized-mnist", {}, 16),
    "flow-matching-mnist": ("flow-matching", "mnist", {}, 64),
}


def ms_per_step(workload: str, precision: str, steps: int) -> tuple[float, float]:
    """CPU and wall-clock milliseconds per training step (after a warm-up of ``steps``)."""
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
        c0, t0 = time.process_time(), time.perf_counter()
        trainer.fit()
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        return 1000 * cpu / steps, 1000 * wall / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workloads", nargs="+", default=["made-digits", "pixelcnn-digits",
                    "nsf-8gaussians"], choices=list(WORKLOADS))  # fmt: skip
    ap.add_argument("--name", default="precision", help="results file name (without .json)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for w in args.workloads:
        cpu: dict[str, list[float]] = {"full": [], "bf16-mixed": []}
        wall: dict[str, list[float]] = {"full": [], "bf16-mixed": []}
        for _ in range(args.repeats):
            for precision in cpu:
                c, t = ms_per_step(w, precision, args.steps)
                cpu[precision].append(round(c, 2))
                wall[precision].append(round(t, 2))
        f32, bf16 = median(cpu["full"]), median(cpu["bf16-mixed"])
        rows.append({"workload": w, "float32 CPU ms/step": round(f32, 2),
                     "bf16-mixed CPU ms/step": round(bf16, 2), "bf16 / float32": round(bf16 / f32, 2),
                     "float32 wall ms/step": round(median(wall["full"]), 2),
                     "bf16-mixed wall ms/step": round(median(wall["bf16-mixed"]), 2),
                     "bf16 / float32 wall": round(median(wall["bf16-mixed"])
                                                  / median(wall["full"]), 2),
                     "cpu_runs": cpu, "wall_runs": wall})  # fmt: skip
    columns = ["workload", "float32 CPU ms/step", "bf16-mixed CPU ms/step", "bf16 / float32",
               "float32 wall ms/step", "bf16-mixed wall ms/step", "bf16 / float32 wall"]  # fmt: skip
    machine = {"bf16_hardware": bf16_hardware("cpu"),
               "cpu_capability": torch.backends.cpu.get_cpu_capability()}  # fmt: skip
    report(args.name, rows, columns, {"threads": args.threads, "steps": args.steps} | machine)


if __name__ == "__main__":
    main()
