"""Scale and memory: training throughput with 1 process of 2 threads and 2 processes of 1 thread
(torchrun, gloo), the scaling efficiency, and the peak memory of `dgm score` on 100k and 1M rows
(it streams in batches). Two workloads: `dgm train nsf` on 8gaussians at batch 1024, and the
engine training the benchmarked Gated PixelCNN (24 channels, 20 layers) on binarized MNIST at
batch 8 (`autoregressive.py likelihood`'s setting; a small script, since `dgm train` would also
score the whole data set at the end).

    .venv/bin/python benchmarks/scale.py [--steps 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from _common import median, report

VENV_BIN = Path(sys.executable).parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


GATED = """
import json, sys
from pathlib import Path
import torch, dgm.data
from dgm.models import build
from dgm.train import distributed as ddp
from dgm.train.config import TrainConfig
from dgm.train.engine import Trainer

out, steps = Path(sys.argv[1]), int(sys.argv[2])
data = dgm.data.load("binarized-mnist")
torch.manual_seed(0)
model = build("gated-pixelcnn", data.spec, width=24, depth=20, head=64)
cfg = TrainConfig(steps=steps, batch_size=8, lr=3e-3, grad_clip=1.0, progress=False,
                  checkpoint_every=0)
info = Trainer(model, data.train, config=cfg, out=out).fit()
if ddp.is_main():
    (out / "summary.json").write_text(json.dumps(info))
"""

# name: (global batch, steps as a fraction of --steps)
WORKLOADS = {"nsf": (1024, 1.0), "gated-pixelcnn": (8, 0.25)}


def throughput(workload: str, nproc: int, steps: int, out: Path) -> float:
    steps = max(1, int(WORKLOADS[workload][1] * steps))
    if workload == "nsf":
        target = ["-m", "dgm", "train", "nsf", "--data", "8gaussians", "--out", str(out),
                  "--steps", str(steps), "--batch-size", "1024", "--no-progress",
                  "--checkpoint-every", "0"]  # fmt: skip
    else:
        script = out.parent / "gated.py"
        script.write_text(GATED)
        target = [str(script), str(out), str(steps)]
    env = {**os.environ, "OMP_NUM_THREADS": str(2 // nproc)}
    if nproc == 1:
        cmd = [sys.executable, *target]
    else:
        cmd = [str(VENV_BIN / "torchrun"), f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
               f"--master_port={_port()}", *target]  # fmt: skip
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return json.loads((out / "summary.json").read_text())["steps_per_second"]


def score_peak_rss_mb(run: Path, rows: int, tmp: Path) -> float:
    x = tmp / f"x{rows}.npy"
    np.save(x, np.random.default_rng(0).normal(size=(rows, 2)))
    code = (
        "import resource, sys; from dgm.cli.main import main; "
        f"rc = main(['score', {str(run)!r}, {str(x)!r}, '--out', {str(tmp / 'o.npy')!r}, "
        "'--batch-size', '10000']); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return int(proc.stdout.strip().splitlines()[-1]) / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    rows = []
    rates = {w: {1: [], 2: []} for w in WORKLOADS}
    for r in range(args.repeats):
        for w in WORKLOADS:
            for nproc in (1, 2):
                rates[w][nproc].append(throughput(w, nproc, args.steps, tmp / f"{w}{nproc}-{r}"))
    for w, (batch, _) in WORKLOADS.items():
        r1, r2 = median(rates[w][1]), median(rates[w][2])
        rows.append({"what": f"train {w}, global batch {batch}: steps/s with 1 (A) and 2 (B) "
                             "processes",
                     "A": r1, "B": r2, "B/A": r2 / r1, "efficiency": r2 / (2 * r1)})  # fmt: skip
    run = tmp / "nsf1-0"
    mem = {n: score_peak_rss_mb(run, n, tmp) for n in (100_000, 1_000_000)}
    rows.append({"what": "dgm score peak RSS in MB: 100k (A) and 1M (B) rows", "A": mem[100_000],
                 "B": mem[1_000_000], "B/A": mem[1_000_000] / mem[100_000]})  # fmt: skip
    report("scale", rows, ["what", "A", "B", "B/A", "efficiency"],
           {"rates": rates, "peak_rss_mb": mem})  # fmt: skip


if __name__ == "__main__":
    main()
