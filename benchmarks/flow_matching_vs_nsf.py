"""Flow matching's likelihood against dgm's best exact flow at the same training time (issue 26).

For each density and seed: ``dgm.train("nsf", density)`` at its defaults (the 2-D flows'
best, ``nsf_2d.json``), timed; then ``dgm.train("flow-matching", density)`` at its defaults with
that wall time as its budget (``max_minutes``, the cosine decay over the time clock), so both
get the same training time on the same machine. The figure is the KL gap
``E_p[log p(x) - log q(x)]`` in nats on the same ``--test`` exact samples of the density (held
out: the dataset's test split), ``log q`` exact for the NSF and by the probability-flow ODE for
flow matching (exact trace, dopri5 at the model's tolerance 1e-5): an estimate, with its
standard error. ``difference`` = flow matching's gap minus the NSF's, per seed; the table gives
the median over seeds.

    python flow_matching_vs_nsf.py [--densities 8gaussians rings checkerboard] [--seeds 0 1 2]
        [--test 2000] [--set key=value ...] [--name flow_matching_vs_nsf]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch

import dgm.data
from _common import loadavg, report, with_overrides
from dgm.api import load_run, train


def gap(model, density, x: torch.Tensor) -> tuple[float, float]:
    """KL gap (nats) on exact samples ``x`` and its standard error."""
    d = (density.log_prob(x.double()) - model.log_prob(x).detach().double()).double()
    return float(d.mean()), float(d.std() / math.sqrt(len(d)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--densities", nargs="+", default=["8gaussians", "rings", "checkerboard"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--set", nargs="*", default=[], help="flow-matching config overrides")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="flow_matching_vs_nsf")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    fm_config = with_overrides({}, args.set)
    rows, summary = [], []
    for name in args.densities:
        ds = dgm.data.load(name)
        x = ds.test[: args.test].float()
        per_seed = []
        for seed in args.seeds:
            out = Path(tempfile.mkdtemp())
            t0 = time.perf_counter()
            train("nsf", ds, out / "nsf", seed=seed, progress=False)
            seconds = time.perf_counter() - t0
            nsf = load_run(out / "nsf")
            train("flow-matching", ds, out / "fm", model_config=fm_config, seed=seed,
                  progress=False, max_minutes=seconds / 60, schedule_clock="time")  # fmt: skip
            fm = load_run(out / "fm")
            row = {"density": name, "seed": seed, "seconds": round(seconds, 1)}
            for label, run in (("nsf", nsf), ("fm", fm)):
                g, se = gap(run.model.eval(), ds.density, x)
                steps = json.loads((run.path / "summary.json").read_text()).get("steps")
                row |= {f"{label}_gap": round(g, 4), f"{label}_se": round(se, 4),
                        f"{label}_steps": steps}  # fmt: skip
            row["difference"] = round(row["fm_gap"] - row["nsf_gap"], 4)
            row["loadavg"] = loadavg()
            print(json.dumps(row), flush=True)
            rows.append(row)
            per_seed.append(row)
        med = {k: round(statistics.median(r[k] for r in per_seed), 4)
               for k in ("nsf_gap", "fm_gap", "difference")}  # fmt: skip
        summary.append({"density": name, "seeds": len(per_seed), **med})
    cols = ["density", "seed", "seconds", "nsf_steps", "nsf_gap", "nsf_se", "fm_steps", "fm_gap",
            "fm_se", "difference"]  # fmt: skip
    report(args.name, rows, cols, {"medians": summary, "fm_config": fm_config,
                                   "settings": vars(args)})  # fmt: skip
    for s in summary:
        print(s)


if __name__ == "__main__":
    main()
