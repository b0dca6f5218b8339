"""The vae's IWAE bound against the number of importance samples decoded at once (the chunk).

``VAE.iwae_bound`` decodes ``k`` codes per example in chunks and combines them with a running
log-sum-exp, so the figure does not depend on the chunk; the time does. Chunks whose decoder
activations fit the CPU's caches (``CPU_CHUNK_BUDGET``, dgm's default on a CPU) against the
256 MB chunks of ``MEMORY_BUDGET`` (the default before, and on a GPU), and a sweep around them.
Each setting: the default ``vae`` (untrained weights: the work does not depend on them) on one
inference batch of the test set, the same noise for every chunk, ``--repeats`` interleaved
timings, the median (CPU time with one thread, wall-clock with more), the heap as the ``dgm``
command sets it.

    DGM_DATA=../../shared/data python iwae_chunks.py [--threads 1 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import torch

import dgm.data
import dgm.models.vae.vae as vae_module
from _common import median, report
from dgm.cli import malloc
from dgm.models import build

#: (data, importance samples k, extra chunk sizes of the sweep)
SETTINGS = (("binarized-mnist", 1000, (1, 4, 64)), ("8gaussians", 100, (1, 4, 16)))


def chunk_for(model, batch: int, k: int, budget: int) -> int:
    saved = vae_module.CPU_CHUNK_BUDGET
    vae_module.CPU_CHUNK_BUDGET = budget
    try:
        return model.chunk_size(batch, k)
    finally:
        vae_module.CPU_CHUNK_BUDGET = saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--name", default="iwae_chunks", help="results file name (without .json)")
    args = ap.parse_args()
    malloc.tune()
    rows = []
    for data_name, k, sweep in SETTINGS:
        data = dgm.data.load(data_name)
        torch.manual_seed(0)
        model = build("vae", data.spec)
        batch = model.inference_batch()
        x = data.test[:batch].float()
        eps = torch.randn(k, batch, model.latent_dim, generator=torch.Generator().manual_seed(1))
        default = chunk_for(model, batch, k, vae_module.CPU_CHUNK_BUDGET)
        before = chunk_for(model, batch, k, vae_module.MEMORY_BUDGET)
        chunks = sorted({default, before, *sweep})
        for threads in args.threads:
            torch.set_num_threads(threads)
            clock = time.process_time if threads == 1 else time.perf_counter
            secs: dict[int, list[float]] = {c: [] for c in chunks}
            values = {}
            with torch.inference_mode():
                model.iwae_bound(x, k=k, eps=eps, chunk_size=default)  # warm-up
                for _ in range(args.repeats):
                    for c in chunks:
                        t0 = clock()
                        values[c] = float(model.iwae_bound(x, k=k, eps=eps, chunk_size=c).mean())
                        secs[c].append(round(clock() - t0, 4))
            mb_per_code = batch * model.decoder.activation_size * 4 / 2**20
            for c in chunks:
                role = {default: "default (CPU budget)", before: "before (256 MB)"}.get(c, "sweep")
                rows.append({"data": data_name, "k": k, "batch": batch, "threads": threads,
                             "chunk": c, "role": role, "activations MB": round(c * mb_per_code, 1),
                             "seconds": median(secs[c]),
                             "speed-up over before": round(median(secs[before])
                                                           / median(secs[c]), 2),
                             "bound": values[c], "runs": secs[c]})  # fmt: skip
                print(rows[-1]["data"], threads, c, role, rows[-1]["seconds"], flush=True)
    columns = ["data", "k", "batch", "threads", "chunk", "role", "activations MB", "seconds",
               "speed-up over before", "bound"]  # fmt: skip
    report(args.name, rows, columns, {"repeats": args.repeats})


if __name__ == "__main__":
    main()
