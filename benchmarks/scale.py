"""Scale and memory: training throughput with 1 and 2 processes (torchrun, gloo), the scaling
efficiency, and the peak memory of `dgm score` on 100k and 1M rows (it streams in batches).

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


def throughput(nproc: int, steps: int, out: Path) -> float:
    args = ["train", "nsf", "--data", "8gaussians", "--out", str(out), "--steps", str(steps),
            "--batch-size", "1024", "--no-progress", "--checkpoint-every", "0"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(2 // nproc)}
    if nproc == 1:
        cmd = [sys.executable, "-m", "dgm", *args]
    else:
        cmd = [str(VENV_BIN / "torchrun"), f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
               f"--master_port={_port()}", "-m", "dgm", *args]  # fmt: skip
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
    rates = {1: [], 2: []}
    for r in range(args.repeats):
        for nproc in (1, 2):
            rates[nproc].append(throughput(nproc, args.steps, tmp / f"p{nproc}-{r}"))
    r1, r2 = median(rates[1]), median(rates[2])
    rows.append({"what": "train nsf, global batch 1024: steps/s with 1 (A) and 2 (B) processes",
                 "A": r1, "B": r2, "B/A": r2 / r1, "efficiency": r2 / (2 * r1)})  # fmt: skip
    run = tmp / "p1-0"
    mem = {n: score_peak_rss_mb(run, n, tmp) for n in (100_000, 1_000_000)}
    rows.append({"what": "dgm score peak RSS in MB: 100k (A) and 1M (B) rows", "A": mem[100_000],
                 "B": mem[1_000_000], "B/A": mem[1_000_000] / mem[100_000]})  # fmt: skip
    report("scale", rows, ["what", "A", "B", "B/A", "efficiency"],
           {"rates": rates, "peak_rss_mb": mem})  # fmt: skip


if __name__ == "__main__":
    main()
