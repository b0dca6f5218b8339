"""Energy-based models on the analytic 2-D densities: every objective, side by side with the neural
spline flow, and with torchebm (optional ``bench`` extra) where it has the same objective.

Every model trains in the same minimal loop (Adam, lr 1e-3 with a cosine decay, batch 512, the
same steps) on the dataset's training split; the KL gap KL(p || q) = E_p[log p - log q] is measured
in nats on 5,000 exact test samples with the EBM's log Z by grid quadrature
(``EBM.log_z_quadrature``; the Richardson indicator |log Z(n) - log Z(n/2)| is reported). torchebm
gets the same MLP energy (copied into a dgm EBM for the quadrature) and its own CD (persistent,
Langevin), sliced and denoising score-matching losses with the same hyperparameters; time per
step is the wall clock of the loop divided by the steps, and both libraries run in this process.

    .venv/bin/python benchmarks/ebm_2d.py [--steps 2000] [--data 8gaussians rings]
        [--objectives cd pcd sm ssm dsm nce fce] [--no-torchebm] [--no-flow]
        [--fourier 64 --fourier-scale 2]  (random Fourier features in the MLP energy)
"""

from __future__ import annotations

import argparse
import time

import torch

import dgm.data
from _common import loadavg, mean_sem, report
from dgm.core.spec import DataSpec
from dgm.models import build

HIDDEN = (128, 128)
OBJECTIVE_CONFIG = {
    "cd": {"mcmc_steps": 20, "mcmc_step_size": 0.01, "alpha": 0.01},
    "pcd": {"mcmc_steps": 20, "mcmc_step_size": 0.01, "alpha": 0.01},
    "sm": {},
    "ssm": {"ssm_projections": 1},
    "dsm": {"dsm_sigma": 0.05},
    "nce": {"noise": "gaussian", "noise_ratio": 4.0, "tether": 1.0},
    "fce": {"flow_depth": 2, "flow_hidden": (64, 64), "flow_mle": 0.1},
}


def loop(model, x_train: torch.Tensor, steps: int, batch: int, seed: int, loss_fn=None) -> float:
    """Adam + cosine decay over ``steps``; returns seconds per step. ``loss_fn(xb)`` replaces
    ``model.training_step`` (torchebm)."""
    groups = (
        model.param_groups()
        if loss_fn is None
        else [{"name": "model", "params": list(model.parameters())}]
    )
    opts = {g["name"]: torch.optim.Adam(g["params"], lr=1e-3) for g in groups}
    sch = {k: torch.optim.lr_scheduler.CosineAnnealingLR(o, steps) for k, o in opts.items()}

    def stepper(loss, group="model"):
        opts[group].zero_grad(set_to_none=True)
        loss.backward()
        opts[group].step()
        sch[group].step()

    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for step in range(steps):
        xb = x_train[torch.randint(0, x_train.shape[0], (batch,), generator=g)]
        if loss_fn is None:
            model.training_step(xb, step, stepper)
        else:
            stepper(loss_fn(xb))
    return (time.perf_counter() - t0) / steps


def kl_gap(model, density, x_test: torch.Tensor) -> dict[str, float]:
    with model.inference():
        log_q = model.log_prob(x_test.to(model.dtype)).double()
    diff = density.log_prob(x_test.double()) - log_q  # (N,)
    kl, sem = mean_sem(diff)
    out = {"kl_gap_nats": kl, "kl_sem": sem}
    if hasattr(model, "log_z_quadrature"):
        out["quad_err"] = float(model.log_z_quadrature()[1])
    return out


def torchebm_run(objective, data, x_train, x_test, steps, batch, seed):
    """The same MLP energy trained by torchebm's loss for ``objective``; scored by dgm's grid."""
    from torchebm.core import BaseModel  # optional peer: the ``bench`` extra
    from torchebm.losses import (
        ContrastiveDivergence,
        DenoisingScoreMatching,
        SlicedScoreMatching,
    )
    from torchebm.samplers import LangevinDynamics

    torch.manual_seed(seed)
    ebm = build("ebm", DataSpec((2,)), hidden=HIDDEN, **OBJECTIVE_CONFIG[objective])
    net = ebm.energy_net

    class Energy(BaseModel):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)

    energy = Energy()
    c = ebm.config
    if objective == "pcd":
        sampler = LangevinDynamics(energy, step_size=c.mcmc_step_size, noise_scale=1.0)
        loss = ContrastiveDivergence(
            energy, sampler, k_steps=c.mcmc_steps, persistent=True, buffer_size=c.buffer_size,
            new_sample_ratio=c.reinit_prob, energy_reg_weight=c.alpha, init_steps=0,
        )  # fmt: skip

        def loss_fn(xb):
            return loss(xb)[0]
    elif objective == "ssm":
        loss = SlicedScoreMatching(energy, n_projections=1, projection_type="gaussian")
        loss_fn = loss
    else:
        loss = DenoisingScoreMatching(energy, noise_scale=c.dsm_sigma)
        loss_fn = loss
    sec = loop(energy, x_train, steps, batch, seed, loss_fn=loss_fn)
    ebm.on_train_start(x_train[:batch].float())  # the same quadrature box as the dgm run
    return {"sec_per_step": sec, **kl_gap(ebm, data.density, x_test)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--data", nargs="+", default=["8gaussians", "rings"])
    ap.add_argument("--objectives", nargs="+", default=list(OBJECTIVE_CONFIG))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-torchebm", action="store_true")
    ap.add_argument("--no-flow", action="store_true")
    ap.add_argument("--tag", default="", help="suffix of the results files (supplementary runs)")
    ap.add_argument(
        "--fourier", type=int, default=0,
        help="random Fourier features of every dgm MLP energy (EBM fourier_features; 0: off)",
    )  # fmt: skip
    ap.add_argument("--fourier-scale", type=float, default=1.0, help="EBM fourier_scale")
    args = ap.parse_args()
    torch.set_num_threads(1)
    load_start = loadavg()
    rows, peer = [], []
    for data_name in args.data:
        data = dgm.data.load(data_name)
        x_train = data.split("train")[0].float()
        x_test = data.density.sample(5000, generator=torch.Generator().manual_seed(123)).float()
        models = [] if args.no_flow else [("nsf", {})]
        models += [("ebm", {"objective": o, **OBJECTIVE_CONFIG[o]}) for o in args.objectives]
        for name, cfg in models:
            torch.manual_seed(args.seed)
            extra = {"hidden": HIDDEN} if name == "ebm" else {}
            if name == "ebm" and args.fourier:
                extra |= {"fourier_features": args.fourier, "fourier_scale": args.fourier_scale}
            model = build(name, DataSpec((2,)), **extra, **cfg)
            model.on_train_start(x_train[: args.batch_size])
            sec = loop(model, x_train, args.steps, args.batch_size, args.seed)
            row = {
                "data": data_name,
                "model": name if name != "ebm" else f"ebm/{cfg['objective']}",
                "steps": args.steps,
                **kl_gap(model, data.density, x_test),
                "ms_per_step": 1000 * sec,
            }
            rows.append(row)
            print(row, flush=True)
        if not args.no_torchebm:
            for obj in [o for o in ("pcd", "ssm", "dsm") if o in args.objectives]:
                ours = next(
                    r for r in rows if r["data"] == data_name and r["model"] == f"ebm/{obj}"
                )
                theirs = torchebm_run(
                    obj, data, x_train, x_test, args.steps, args.batch_size, args.seed
                )
                p = {
                    "data": data_name,
                    "objective": obj,
                    "dgm_kl": ours["kl_gap_nats"],
                    "torchebm_kl": theirs["kl_gap_nats"],
                    "dgm_ms_per_step": ours["ms_per_step"],
                    "torchebm_ms_per_step": 1000 * theirs["sec_per_step"],
                }
                p["kl_ratio_dgm_over_torchebm"] = p["dgm_kl"] / p["torchebm_kl"]
                p["time_ratio_dgm_over_torchebm"] = p["dgm_ms_per_step"] / p["torchebm_ms_per_step"]
                peer.append(p)
                print(p, flush=True)
    cols = ["data", "model", "steps", "kl_gap_nats", "kl_sem", "quad_err", "ms_per_step"]
    extra = {"loadavg_start": load_start, "hidden": HIDDEN,
             "fourier_features": args.fourier, "fourier_scale": args.fourier_scale}  # fmt: skip
    report("ebm_2d" + args.tag, rows, cols, extra | {"configs": OBJECTIVE_CONFIG})
    if peer:
        cols = list(peer[0])
        report("ebm_vs_torchebm" + args.tag, peer, cols, {"loadavg_start": load_start})


if __name__ == "__main__":
    main()
