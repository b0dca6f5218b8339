"""Diffusion benchmarks: 2-D densities, digits samplers, and the U-Net beside diffusers.

``2d``: ``score-sde`` (and ``ddpm``) on the analytic 2-D densities. For score-sde the test NLL is the
probability-flow ODE log-likelihood (exact trace, dopri5 rtol=atol=1e-5) and the KL gap is
``KL(p || q) = E_p[log p - log q]`` on exact test samples (``dgm.eval.density.kl_divergence``),
the figure ``benchmarks/nsf_2d.py`` reports for the flows. For ddpm the NLL is the variational
bound (an upper bound on the NLL). Every model gets a classifier two-sample test
(``dgm.eval.twosample.c2st``, MLP classifier, 0.5 = indistinguishable) of 2000 samples against
2000 test points.

``digits``: ddpm (U-Net) on the 8x8 digits (17 levels). The bound in bits/dim on the discrete test
data (discretized decoder, ``bound_terms`` stratified terms), and for 100 samples drawn with 1000
ancestral steps, DDIM 50 and DDIM 20 steps: wall and CPU seconds, and FID in the feature space of
the classifier dgm trains on the digits labels (``dgm.eval.features``; not Inception, comparable
only within this table). The FID of 100 real validation digits against the test set is the floor
at this sample size.

``unet``: one training step (noise, forward, MSE, backward, Adam) of dgm's U-Net with its schedule
and of diffusers' ``UNet2DModel`` with ``DDPMScheduler.add_noise`` of similar size, interleaved,
median over repeats; the ratio dgm / diffusers.

    .venv/bin/python benchmarks/diffusion.py 2d [--steps 2000] [--data 8gaussians checkerboard rings]
    .venv/bin/python benchmarks/diffusion.py digits [--steps 1000]
    .venv/bin/python benchmarks/diffusion.py unet [--repeats 15]

The machine this ran on was shared: each result records ``/proc/loadavg`` before and after, and
CPU seconds next to wall seconds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import dgm.data
from _common import median, report  # noqa: I001
from dgm.core.registry import build
from dgm.eval.density import kl_divergence
from dgm.eval.likelihood import bits_per_dim
from dgm.eval.twosample import c2st
from dgm.train.config import TrainConfig
from dgm.train.engine import Trainer


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split(" ")[:3].__str__()
    except OSError:
        return "n/a"


def fit(name: str, data: Any, steps: int, batch: int, lr: float, ema: float = 0.0, **cfg: Any):
    """Train ``name`` with the engine (no summary or plots); returns the model with its final
    (EMA if on) weights, in eval mode, and CPU/wall seconds."""
    torch.manual_seed(0)
    model = build(name, data.spec, **cfg)
    tc = TrainConfig(steps=steps, batch_size=batch, lr=lr, schedule="cosine", ema=ema,
                     progress=False, checkpoint_every=0, log_every=100)  # fmt: skip
    out = Path(tempfile.mkdtemp()) / name
    trainer = Trainer(model, data.train, config=tc, out=out)
    c0, w0 = time.process_time(), time.perf_counter()
    trainer.fit()
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    model.load_state_dict(trainer.final_weights())
    return model.eval(), cpu, wall


def timed(fn):
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c0, time.perf_counter() - w0


def bench_2d(args: argparse.Namespace) -> None:
    rows = []
    for data_name in args.data:
        data = dgm.data.load(data_name)
        x_test = data.split("test")[0][: args.n_eval].double()
        for name in args.models:
            cfg: dict[str, Any] = {"hidden": args.hidden}
            model, cpu, wall = fit(name, data, args.steps, 512, 1e-3, **cfg)
            model = model.double()
            row: dict[str, Any] = {"model": name, "data": data_name, "steps": args.steps,
                                   "train_cpu_s": cpu, "train_wall_s": wall}  # fmt: skip
            torch.manual_seed(1)
            with model.inference():
                ll, name_ll = model.log_likelihood(x_test)
            row["test_nll"] = float(-ll.mean())
            row["likelihood"] = name_ll
            if model.exact_likelihood:  # KL(p || q) on the exact test samples, log q computed once
                kl = kl_divergence(
                    lambda p, d=data: d.density.log_prob(p), lambda p, v=ll: v, x_test
                )
                row["kl_gap_nats"], row["kl_sem"] = kl["kl"], kl["kl_sem"]
            torch.manual_seed(2)
            with model.inference():
                s, scpu, swall = timed(lambda m=model: m.sample(args.n_eval))
            r = c2st(x_test.float(), s.float(), seed=0)
            row.update(c2st_accuracy=r.statistic, c2st_p=r.p_value, sample_cpu_s=scpu)
            row["loadavg"] = loadavg()
            rows.append(row)
            print(row, flush=True)
            write_2d(rows, args)


def write_2d(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    report("diffusion_2d", rows, ["model", "data", "steps", "test_nll", "kl_gap_nats", "kl_sem",
                                  "c2st_accuracy", "train_cpu_s", "train_wall_s", "sample_cpu_s"],
           {"n_eval": args.n_eval})  # fmt: skip


def bench_digits(args: argparse.Namespace) -> None:
    from dgm.eval.features import dataset_features
    from dgm.eval.fid import fid

    data = dgm.data.load("digits")
    load_start = loadavg()
    cfg = {"channels": args.channels, "bound_terms": args.bound_terms}
    model, cpu, wall = fit("ddpm", data, args.steps, 128, args.lr, ema=args.ema, **cfg)
    x_test = data.split("test")[0]
    torch.manual_seed(3)
    with model.inference():
        ll, name_ll = model.log_likelihood(x_test)
    bpd = float(bits_per_dim(-ll.mean(), 64))
    feats = dataset_features(data, seed=0)
    x_val = data.split("val")[0]
    floor = fid(x_val[: args.n], x_test, features=feats)
    rows = []
    for label, opts in (("ancestral-1000", {"sampler": "ancestral"}),
                        ("ddim-50", {"sampler": "ddim", "steps": 50}),
                        ("ddim-20", {"sampler": "ddim", "steps": 20})):  # fmt: skip
        torch.manual_seed(4)
        with model.inference():
            s, scpu, swall = timed(lambda o=opts: model.sample(args.n, **o))
        rows.append({"sampler": label, "n": args.n, "sample_wall_s": swall, "sample_cpu_s": scpu,
                     "fid": fid(s, x_test, features=feats), "fid_real_floor": floor,
                     "loadavg": loadavg()})  # fmt: skip
        print(rows[-1], flush=True)
        if label == "ancestral-1000":
            import numpy as np

            np.save(Path(tempfile.gettempdir()) / "ddpm_digits_samples.npy", s.numpy())
    base = rows[0]
    for r in rows:
        r["speedup_vs_ancestral_cpu"] = base["sample_cpu_s"] / r["sample_cpu_s"]
        r["fid_ratio_vs_ancestral"] = r["fid"] / base["fid"]
    extra = {"train_steps": args.steps, "train_cpu_s": cpu, "train_wall_s": wall, "ema": args.ema,
             "test_bpd_bound": bpd, "likelihood": name_ll, "loadavg_start": load_start,
             "params": sum(p.numel() for p in model.parameters())}  # fmt: skip
    print(extra)
    report("diffusion_digits", rows, ["sampler", "n", "sample_wall_s", "sample_cpu_s",
                                      "speedup_vs_ancestral_cpu", "fid", "fid_ratio_vs_ancestral",
                                      "fid_real_floor"], extra)  # fmt: skip


def bench_unet(args: argparse.Namespace) -> None:
    from diffusers import DDPMScheduler, UNet2DModel

    from dgm.models.diffusion.schedules import DiscreteSchedule
    from dgm.nn.unet import UNet

    torch.manual_seed(0)
    B, T = args.batch, 1000
    x = torch.rand(B, 1, 8, 8) * 2 - 1
    ours = UNet(1, 32, (1, 2), 1, 128)
    sched = DiscreteSchedule.named("linear", T)
    theirs = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                         block_out_channels=(32, 64), down_block_types=("DownBlock2D",) * 2,
                         up_block_types=("UpBlock2D",) * 2, norm_num_groups=8)  # fmt: skip
    their_sched = DDPMScheduler(num_train_timesteps=T, beta_schedule="linear")
    opt_a = torch.optim.Adam(ours.parameters(), 1e-3)
    opt_b = torch.optim.Adam(theirs.parameters(), 1e-3)

    def step_ours():
        t = torch.randint(0, T, (B,))
        noise = torch.randn_like(x)
        loss = ((ours(sched.add_noise(x, noise, t), t.float()) - noise) ** 2).mean()
        opt_a.zero_grad()
        loss.backward()
        opt_a.step()

    def step_theirs():
        t = torch.randint(0, T, (B,))
        noise = torch.randn_like(x)
        loss = ((theirs(their_sched.add_noise(x, noise, t), t).sample - noise) ** 2).mean()
        opt_b.zero_grad()
        loss.backward()
        opt_b.step()

    for f in (step_ours, step_theirs):  # warm-up
        f()
    res: dict[str, list[float]] = {"dgm_cpu": [], "dgm_wall": [], "diffusers_cpu": [],
                                   "diffusers_wall": []}  # fmt: skip
    for _ in range(args.repeats):
        for key, f in (("dgm", step_ours), ("diffusers", step_theirs)):
            _, c, w = timed(f)
            res[f"{key}_cpu"].append(c)
            res[f"{key}_wall"].append(w)
    row = {k: 1000 * median(v) for k, v in res.items()}
    rows = [
        {"network": "dgm UNet + DiscreteSchedule", "params": sum(p.numel() for p in ours.parameters()),
         "ms_cpu": row["dgm_cpu"], "ms_wall": row["dgm_wall"]},
        {"network": "diffusers UNet2DModel + DDPMScheduler",
         "params": sum(p.numel() for p in theirs.parameters()),
         "ms_cpu": row["diffusers_cpu"], "ms_wall": row["diffusers_wall"]},
    ]  # fmt: skip
    import diffusers

    extra = {"batch": B, "repeats": args.repeats, "diffusers": diffusers.__version__,
             "ratio_cpu_dgm_over_diffusers": row["dgm_cpu"] / row["diffusers_cpu"],
             "ratio_wall_dgm_over_diffusers": row["dgm_wall"] / row["diffusers_wall"],
             "loadavg": loadavg()}  # fmt: skip
    print(extra)
    report("diffusion_unet", rows, ["network", "params", "ms_cpu", "ms_wall"], extra)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("part", choices=["2d", "digits", "unet"])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--data", nargs="+", default=["8gaussians", "checkerboard", "rings"])
    ap.add_argument("--models", nargs="+", default=["score-sde", "ddpm"])
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--n-eval", type=int, default=2000)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--bound-terms", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ema", type=float, default=0.0)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    {"2d": bench_2d, "digits": bench_digits, "unet": bench_unet}[args.part](args)


if __name__ == "__main__":
    main()
