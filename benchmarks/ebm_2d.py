"""Energy-based models on the analytic 2-D densities at their defaults: every objective on every
dataset, trained as ``dgm train ebm --data D --steps 3000 --set objective=O`` trains it.

Each run builds ``ebm`` with only ``objective`` set (plus any ``--set``), so every other setting is
the objective's own default (``OBJECTIVE_DEFAULTS`` in ``dgm.models.ebm.ebm``), and trains it with
the engine at the training options of ``dgm train`` (the model's ``train_defaults`` under the
engine's) for ``--steps``. The KL gap KL(p || q) = E_p[log p - log q] is the forward KL of
``dgm eval --metrics kl``: in nats, on the 10,000 exact samples of the dataset's test split, with
the EBM's log Z by grid quadrature (exact up to quadrature error; the Richardson indicator
|log Z(n) - log Z(n/2)| is reported as ``quad_err``). ``train_s`` is the wall clock of training
alone; runs go ``--jobs`` at a time, one thread each, so it depends on the machine's load, which
is recorded.

    .venv/bin/python benchmarks/ebm_2d.py [--steps 3000] [--data 8gaussians rings checkerboard]
        [--objectives cd pcd sm ssm dsm nce fce] [--set KEY=VALUE ...] [--jobs 2] [--seed 0]
        [--tag T]
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
from pathlib import Path

import torch

import dgm.data
from _common import loadavg, parse_sets, report
from dgm.core.config import build_config, config_to_dict
from dgm.eval import kl_divergence
from dgm.models.ebm import EBM
from dgm.models.ebm.ebm import OBJECTIVES
from dgm.train.config import TrainConfig
from dgm.train.engine import Trainer


def run(job: tuple[str, str, int, int, dict[str, str]]) -> dict:
    """Train one objective on one dataset at its defaults; its KL gap and training time."""
    data_name, objective, steps, seed, sets = job
    torch.set_num_threads(1)
    data = dgm.data.load(data_name)
    cfg = build_config(EBM.Config, {"objective": objective, **sets}, what="model 'ebm'")
    train = EBM.train_defaults | {"steps": steps, "seed": seed, "progress": False,
                                  "checkpoint_every": 0}  # fmt: skip
    tcfg = build_config(TrainConfig, train, what="training")
    torch.manual_seed(seed)  # as dgm.train: the weights are drawn after seeding
    model = EBM(data.spec, cfg)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model, data.train, config=tcfg, out=Path(out))
        info = trainer.fit()
        model.load_state_dict(trainer.final_weights())
    x_test = data.split("test")[0]  # (10000, 2)
    model.eval()
    with model.inference():
        kl = kl_divergence(
            lambda x: data.density.log_prob(x.double()),
            lambda x: model.log_prob(x.to(model.dtype)).double(),
            x_test,
        )
        quad_err = float(model.log_z_quadrature()[1])
    return {
        "data": data_name,
        "objective": objective,
        "steps": info["steps"],
        "kl_gap_nats": kl["kl"],
        "kl_sem": kl["kl_sem"],
        "quad_err": quad_err,
        "train_s": info["train_seconds"],
        "ms_per_step": 1000 * info["train_seconds"] / max(info["steps"], 1),
        "config": config_to_dict(model.config),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--data", nargs="+", default=["8gaussians", "rings", "checkerboard"])
    ap.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="EBM settings for every run (default: none, the objective's own)")  # fmt: skip
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="", help="suffix of the results file (supplementary runs)")
    args = ap.parse_args()
    sets = parse_sets(args.set)
    jobs = [(d, o, args.steps, args.seed, sets) for o in args.objectives for d in args.data]
    load_start = loadavg()
    rows: list[dict] = []
    configs: dict[str, dict] = {}
    cols = ["data", "objective", "steps", "kl_gap_nats", "kl_sem", "quad_err", "train_s",
            "ms_per_step"]  # fmt: skip
    train = {k: v for k, v in config_to_dict(TrainConfig(**EBM.train_defaults)).items()
             if k in ("batch_size", "lr", "optimizer", "schedule", "grad_clip")}  # fmt: skip
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        for row in pool.imap(run, jobs):
            configs[row["objective"]] = row.pop("config")
            rows.append(row)
            print(row, flush=True)
            extra = {"loadavg_start": load_start, "loadavg_end": loadavg(), "jobs": args.jobs,
                     "train": train, "sets": sets, "configs": configs,
                     "complete": len(rows) == len(jobs)}  # fmt: skip
            report("ebm_2d" + args.tag, rows, cols, extra)  # after every run: partial results


if __name__ == "__main__":
    main()
