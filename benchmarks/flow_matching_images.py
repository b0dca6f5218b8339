"""Flow matching on MNIST (issue 26): test bits/dim by the probability-flow ODE beside the ddpm
bound, and sample quality against the number of network evaluations (NFE) for flow matching,
reflow, consistency distillation and ddpm (DDIM) trained for the same time.

Runs live in ``--runs`` and are reused, so the parts can run one at a time:

* ``train``: ``flow-matching`` and ``ddpm`` for ``--minutes`` each (the engine's time budget;
  default: their MNIST recipes' 30), at the models' defaults otherwise (``--set``/``--train-set``
  change every model alike, ``MODEL.KEY=VALUE`` one model), then ``reflow`` and ``consistency``
  (distillation, ``objective=cd``) with the flow-matching run as their teacher, ``--few-minutes``
  each (default: their recipes' budgets).
* ``bpd``: the test bits/dim of every run with a likelihood on ``--test-n`` test images (a seeded
  random subset: MNIST's test set is ordered by writer population), with its standard error: for
  flow matching a Hutchinson estimate of the ODE log-likelihood at the model's tolerance (recorded),
  dequantization bound included; for ddpm its variational bound.
* ``fid``: FID* (the feature network dgm trains on MNIST's labels, not Inception; comparable only
  within this table) of ``--fid-n`` samples against the test images, at each NFE of ``--nfe``,
  mean and standard error over ``--fid-sets`` sample sets, with the seconds each set took. Flow
  matching and reflow use Euler steps (NFE = steps); consistency maps with ``steps = NFE``; ddpm
  uses DDIM with ``steps = NFE``; a multistep consistency model (``segments`` S > 1) is scored
  at NFE = S only.

    OMP_NUM_THREADS=1 DGM_DATA=../../shared/data python flow_matching_images.py train --runs R
    OMP_NUM_THREADS=1 DGM_DATA=../../shared/data python flow_matching_images.py bpd fid --runs R
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

import dgm
import dgm.data
from _common import loadavg, mean_sem, report, with_overrides
from dgm.api import load_run, train
from dgm.eval.features import dataset_features
from dgm.eval.fid import fid
from dgm.eval.likelihood import nll

FEW_STEP = ("reflow", "consistency")


def _train(args, runs: Path) -> None:
    teacher = runs / "flow-matching"
    plan = [("flow-matching", {}, args.minutes), ("ddpm", {}, args.minutes),
            ("reflow", {"teacher": str(teacher), "pairs": args.pairs,
                        "teacher_method": args.teacher_method,
                        "teacher_steps": args.teacher_steps}, args.few_minutes),
            ("consistency", {"objective": "cd", "teacher": str(teacher)}, args.few_minutes)]  # fmt: skip
    for name, cfg, minutes in plan:
        cfg = {k: v for k, v in cfg.items() if v is not None}  # None: the model's default
        if name not in args.models or (runs / name / "summary.json").is_file():
            continue
        t0 = time.perf_counter()
        budget = {} if minutes is None else {"max_minutes": minutes}  # None: the model's own
        train(name, "mnist", runs / name, model_config=with_overrides(cfg, args.set, name),
              progress=False, seed=args.seed, overwrite=True,
              **with_overrides(budget, args.train_set, name))  # fmt: skip
        print({"trained": name, "minutes": minutes, "wall_s": round(time.perf_counter() - t0),
               "load": loadavg()}, flush=True)  # fmt: skip


def _test_images(data, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = data.split("test")
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[order][:n], y[order][:n]


def _bpd(args, runs: Path, data) -> list[dict]:
    rows = []
    x, _ = _test_images(data, args.test_n)
    for name in ("flow-matching", "ddpm"):
        if name not in args.models or not (runs / name / "summary.json").is_file():
            continue
        run = load_run(runs / name)
        torch.manual_seed(args.seed)
        t0 = time.perf_counter()
        with run.model.inference():
            res = nll(run.model, x, preprocessor=run.preprocessor, batch_size=args.batch)
        dims = x[0].numel()
        steps = json.loads((runs / name / "summary.json").read_text()).get("steps")
        rows.append({
            "model": name, "train_steps": steps, "test_images": int(res["n"]),
            "test_bpd": round(float(res["bpd"]), 4),
            "bpd_sem": round(float(res["nll_sem"]) / (dims * math.log(2)), 4),
            "likelihood": res["likelihood"],
            "tolerance": {k: getattr(run.model.config, k) for k in ("rtol", "atol")
                          if hasattr(run.model.config, k)},
            "eval_s": round(time.perf_counter() - t0), "load": loadavg(),
        })  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def _options(name: str, nfe: int, model) -> dict | None:
    if name in ("flow-matching", "reflow"):
        return {"method": "euler", "steps": nfe}
    if name == "consistency":  # a multistep model (segments > 1) samples in its segments' steps
        segments = model.config.segments
        return {"steps": nfe} if nfe <= 8 and (segments == 1 or nfe == segments) else None
    return {"sampler": "ddim", "steps": nfe} if nfe >= 2 else None  # ddpm: DDIM


def _fid(args, runs: Path, data) -> list[dict]:
    feats = dataset_features(data, seed=0)
    x_test, _ = _test_images(data, len(data.split("test")[0]))
    rows = []
    models = {n: dgm.load(runs / n) for n in args.models if (runs / n / "summary.json").is_file()}
    for nfe in args.nfe:
        for name, model in models.items():
            opts = _options(model.name, nfe, model)  # the kind, whatever the directory
            if opts is None:
                continue
            scores, secs = [], []
            for k in range(args.fid_sets):
                torch.manual_seed(1000 * k + nfe)
                t0 = time.perf_counter()
                s = model.sample(args.fid_n, **opts)
                secs.append(time.perf_counter() - t0)
                scores.append(fid(s.float(), x_test.float(), features=feats))
            m, se = mean_sem(scores)
            rows.append({"model": name, "nfe": nfe, "options": opts, "fid": round(m, 3),
                         "fid_sem": round(se, 3), "sets": args.fid_sets, "n": args.fid_n,
                         "s_per_set": round(sorted(secs)[len(secs) // 2], 1),
                         "load": loadavg()})  # fmt: skip
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("parts", nargs="+", choices=["train", "bpd", "fid"])
    ap.add_argument("--runs", required=True, help="directory of the runs (kept, reused)")
    ap.add_argument("--models", nargs="+", default=["flow-matching", "ddpm", *FEW_STEP])
    ap.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="flow matching's and ddpm's budget (default: their MNIST recipes')",
    )
    ap.add_argument(
        "--few-minutes",
        type=float,
        default=None,
        help="the few-step students' budget (default: their MNIST recipes')",
    )
    ap.add_argument("--set", action="append", default=[], help="model key=value (every model)")
    ap.add_argument("--train-set", action="append", default=[],
                    help="training key=value (every model)")  # fmt: skip
    # reflow's pairs count in --few-minutes (at most half of it, then it trains on those drawn):
    # its MNIST default, 4000 pairs of 5 rk4 steps, takes about 5 minutes of the 32-channel
    # teacher on two cores (None: the model's default)
    ap.add_argument("--pairs", type=int, default=None, help="reflow's (noise, sample) pairs")
    ap.add_argument("--teacher-method", default=None, help="the solver of each pair")
    ap.add_argument("--teacher-steps", type=int, default=None, help="the solver's steps per pair")
    ap.add_argument("--test-n", type=int, default=200)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--nfe", nargs="+", type=int, default=[1, 2, 4, 8, 16, 50])
    ap.add_argument("--fid-n", type=int, default=500)
    ap.add_argument("--fid-sets", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="flow_matching_mnist")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    runs = Path(args.runs)
    data = dgm.data.load("mnist")
    if "train" in args.parts:
        _train(args, runs)
    bpd = _bpd(args, runs, data) if "bpd" in args.parts else []
    fids = _fid(args, runs, data) if "fid" in args.parts else []
    summaries = {
        n: {k: v for k, v in json.loads((runs / n / "summary.json").read_text()).items()
            if k in ("steps", "train_seconds", "train_seconds_total", "stopped_by_time")}
        for n in args.models if (runs / n / "summary.json").is_file()
    }  # fmt: skip
    rows = [{"part": "bpd", **r} for r in bpd] + [{"part": "fid", **r} for r in fids]
    cols = ["part", "model", "train_steps", "test_bpd", "bpd_sem", "nfe", "fid", "fid_sem",
            "s_per_set"]  # fmt: skip
    report(args.name, rows, cols, {"runs": summaries, "args": vars(args)})


if __name__ == "__main__":
    main()
