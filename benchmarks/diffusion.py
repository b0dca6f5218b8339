"""Diffusion benchmarks: 2-D densities, image samplers (digits, MNIST), the U-Net beside diffusers.

``2d``: ``score-sde``, ``ddpm`` and ``ncsn`` on the analytic 2-D densities, with ``nsf`` trained by
the same engine call as the flows' reference. For score-sde (and nsf) the test NLL is the exact
log-likelihood (score-sde: probability-flow ODE, exact trace, dopri5 at the model's rtol/atol) and
the KL gap is ``KL(p || q) = E_p[log p - log q]`` on exact test samples
(``dgm.eval.density.kl_divergence``), the figure ``benchmarks/nsf_2d.py`` reports for the flows.
For ddpm the NLL is the variational bound (an upper bound on the NLL), so its "KL gap" column is
an upper bound on the KL. ncsn has no likelihood: only its samples are judged. Every model gets a
classifier two-sample test (``dgm.eval.twosample.c2st``, MLP classifier, 0.5 = indistinguishable)
and a kernel MMD^2 (median bandwidth) of 2000 samples against 2000 test points. A model may carry
config overrides, ``score-sde:weighting=likelihood,width=256`` (numbers parsed, the rest strings).

``digits`` / ``mnist`` (``images --dataset``): ddpm (U-Net) on the 8x8 digits (17 levels) or MNIST
(256 levels), trained for ``--steps`` or until ``--max-minutes`` (engine budget, wall minutes of
training). The bound in bits/dim on (``--test-n``) discrete test images (discretized decoder,
``bound_terms`` stratified terms), a PNG grid of samples, and for ``--n`` samples drawn with 1000
ancestral steps, DDIM 50 and DDIM 20 steps: wall and CPU seconds (median of ``--repeats`` timings,
the samplers interleaved), the time ratio against ancestral sampling, and FID in the feature space
of the classifier dgm trains on the dataset's labels (``dgm.eval.features``; not Inception,
comparable only within one table) of the first repeat's samples. The FID of ``--n`` real
validation images against the test set is the floor at this sample size.

``unet``: one training step (noise, forward, MSE, backward, Adam) of dgm's U-Net with its schedule
and of diffusers' ``UNet2DModel`` with ``DDPMScheduler.add_noise`` of similar size, interleaved,
median over repeats; the ratio dgm / diffusers.

    .venv/bin/python benchmarks/diffusion.py 2d [--steps 2000] [--data 8gaussians checkerboard rings]
    .venv/bin/python benchmarks/diffusion.py digits [--steps 1000] [--repeats 3]
    .venv/bin/python benchmarks/diffusion.py mnist --max-minutes 15 --unet-width 16 --test-n 1000
    .venv/bin/python benchmarks/diffusion.py unet [--repeats 15]

The machine this ran on was shared: each result records ``/proc/loadavg`` before and after, and
CPU seconds next to wall seconds.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import dgm.data
from _common import RESULTS, loadavg, median, parse_sets, report
from dgm.eval.density import kl_divergence
from dgm.eval.features import dataset_features
from dgm.eval.fid import fid
from dgm.eval.likelihood import bits_per_dim
from dgm.eval.twosample import c2st, mmd
from dgm.models import build
from dgm.models.diffusion.schedules import DiscreteSchedule
from dgm.nn.unet import UNet
from dgm.plots.figures import save_samples
from dgm.train.config import TrainConfig
from dgm.train.engine import Trainer


def fit(name: str, data: Any, steps: int, batch: int, lr: float, ema: float = 0.0,
        max_minutes: float = 0.0, **cfg: Any):  # fmt: skip
    """Train ``name`` with the engine (no summary or plots); returns the model with its final
    (EMA if on) weights, in eval mode, CPU/wall seconds and the steps taken."""
    torch.manual_seed(0)
    model = build(name, data.spec, **cfg)
    tc = TrainConfig(steps=steps, batch_size=batch, lr=lr, schedule="cosine", ema=ema,
                     max_minutes=max_minutes, progress=False, checkpoint_every=0,
                     log_every=100)  # fmt: skip
    out = Path(tempfile.mkdtemp()) / name
    trainer = Trainer(model, data.train, config=tc, out=out)
    c0, w0 = time.process_time(), time.perf_counter()
    trainer.fit()
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    model.load_state_dict(trainer.final_weights())
    return model.eval(), cpu, wall, int(getattr(trainer, "step", steps))


def timed(fn):
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c0, time.perf_counter() - w0


def parse_model(entry: str) -> tuple[str, dict[str, str]]:
    """``"name:k=v,k=v"`` -> ``(name, {k: v})``; dgm parses the values against the config."""
    name, _, rest = entry.partition(":")
    return name, parse_sets(list(filter(None, rest.split(","))))


def bench_2d(args: argparse.Namespace) -> None:
    rows: list[dict[str, Any]] = []
    for data_name in args.data:
        data = dgm.data.load(data_name)
        x_test = data.split("test")[0][: args.n_eval].double()
        for entry in args.models:
            name, over = parse_model(entry)
            cfg: dict[str, Any] = {} if name == "nsf" else {"width": args.width}
            cfg.update(over)
            model, cpu, wall, _ = fit(name, data, args.steps, 512, 1e-3, **cfg)
            model = model.double()
            row: dict[str, Any] = {"model": entry, "data": data_name, "steps": args.steps,
                                   "train_cpu_s": cpu, "train_wall_s": wall}  # fmt: skip
            if model.exact_likelihood or model.likelihood_bound:
                torch.manual_seed(1)
                with model.inference():
                    (ll, name_ll), lcpu, _ = timed(lambda m=model, x=x_test: m.log_likelihood(x))
                row.update(test_nll=float(-ll.mean()), likelihood=name_ll, nll_cpu_s=lcpu)
                # KL(p || q) on the exact test samples, log q computed once; for a bound this is
                # E_p[log p - bound] >= KL
                kl = kl_divergence(
                    lambda p, d=data: d.density.log_prob(p), lambda p, v=ll: v, x_test
                )
                key = "kl_gap_nats" if model.exact_likelihood else "kl_gap_upper_nats"
                row[key], row["kl_sem"] = kl["kl"], kl["kl_sem"]
            else:
                row["likelihood"] = "none (judged by samples only)"
            torch.manual_seed(2)
            with model.inference():
                s, scpu, swall = timed(lambda m=model: m.sample(args.n_eval))
            r = c2st(x_test.float(), s.float(), seed=0)
            k = mmd(x_test.float(), s.float(), num_permutations=100, seed=0)
            row.update(c2st_accuracy=r.statistic, c2st_p=r.p_value, mmd2=k.statistic,
                       mmd_p=k.p_value, sample_cpu_s=scpu)  # fmt: skip
            row["loadavg"] = loadavg()
            rows.append(row)
            print(row, flush=True)
            write_2d(rows, args)


def write_2d(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    report(args.out or "diffusion_2d", rows,
           ["model", "data", "steps", "test_nll", "kl_gap_nats", "kl_gap_upper_nats", "kl_sem",
            "c2st_accuracy", "mmd2", "train_cpu_s", "nll_cpu_s", "sample_cpu_s"],
           {"n_eval": args.n_eval, "width": args.width, "batch": 512, "lr": 1e-3,
            "threads": args.threads})  # fmt: skip


def chunked_bound(model: Any, x: Any, chunk: int = 250) -> tuple[Any, str]:
    """``model.log_likelihood`` over chunks of ``x`` (memory), values concatenated."""
    parts = [model.log_likelihood(c) for c in x.split(chunk)]
    return torch.cat([v for v, _ in parts]), parts[0][1]


SAMPLERS = (("ancestral-1000", {"sampler": "ancestral"}),
            ("ddim-50", {"sampler": "ddim", "steps": 50}),
            ("ddim-20", {"sampler": "ddim", "steps": 20}))  # fmt: skip


def bench_images(args: argparse.Namespace) -> None:
    dataset = args.part
    name = args.out or f"diffusion_{dataset}"
    data = dgm.data.load(dataset)
    load_start = loadavg()
    cfg: dict[str, Any] = {"unet_width": args.unet_width, "bound_terms": args.bound_terms}
    model, cpu, wall, steps_done = fit("ddpm", data, args.steps, args.batch_size, args.lr,
                                       ema=args.ema, max_minutes=args.max_minutes,
                                       **cfg)  # fmt: skip
    print({"train_cpu_s": cpu, "train_wall_s": wall, "steps": steps_done}, flush=True)
    # random subsets (seeded): MNIST's test set is ordered by writer population (its first
    # 5000 images come from NIST SD-3, the rest from SD-1), so a prefix is a biased sample
    x_all = data.split("test")[0]
    x_test = x_all[torch.randperm(len(x_all), generator=torch.Generator().manual_seed(0))]
    x_test = x_test[: args.test_n or None]
    torch.manual_seed(3)
    with model.inference():
        (ll, name_ll), bcpu, _ = timed(lambda: chunked_bound(model, x_test))
    dims = x_test[0].numel()
    bpd = float(bits_per_dim(-ll.mean(), dims))
    bpd_sem = float(ll.std() / ll.shape[0] ** 0.5 / (dims * math.log(2)))
    print({"test_bpd_bound": bpd, "sem": bpd_sem, "cpu_s": bcpu}, flush=True)
    feats = dataset_features(data, seed=0)
    x_val = data.split("val")[0]
    pick = torch.randperm(len(x_val), generator=torch.Generator().manual_seed(1))[: args.n]
    floor = fid(x_val[pick], x_test, features=feats)
    times: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in SAMPLERS}
    fids: dict[str, float] = {}
    for rep in range(args.repeats):  # the samplers interleaved, so load drifts hit all alike
        for label, opts in SAMPLERS:
            torch.manual_seed(4 + rep)
            with model.inference():
                s, scpu, swall = timed(lambda o=opts: model.sample(args.n, **o))
            times[label].append((scpu, swall))
            if rep == 0:
                fids[label] = fid(s, x_test, features=feats)
                if label == "ancestral-1000":
                    save_samples(s[:100], RESULTS / f"{name}_samples.png",
                                 levels=data.spec.levels,
                                 title=f"ddpm on {dataset}, ancestral 1000 steps")  # fmt: skip
                if label == "ddim-50":
                    save_samples(s[:100], RESULTS / f"{name}_samples_ddim50.png",
                                 levels=data.spec.levels,
                                 title=f"ddpm on {dataset}, DDIM 50 steps")  # fmt: skip
            print(label, rep, f"cpu {scpu:.2f} wall {swall:.2f}", loadavg(), flush=True)
    rows = []
    base_cpu = median([c for c, _ in times["ancestral-1000"]])
    for label, _ in SAMPLERS:
        cpus, walls = [c for c, _ in times[label]], [w for _, w in times[label]]
        rows.append({"sampler": label, "n": args.n, "repeats": args.repeats,
                     "sample_wall_s": median(walls), "sample_cpu_s": median(cpus),
                     "cpu_s_all": cpus, "speedup_vs_ancestral_cpu": base_cpu / median(cpus),
                     "fid": fids[label], "fid_ratio_vs_ancestral": fids[label] / fids["ancestral-1000"],
                     "fid_real_floor": floor})  # fmt: skip
        print(rows[-1], flush=True)
    extra = {"dataset": dataset, "train_steps_max": args.steps, "train_steps_done": steps_done,
             "max_minutes": args.max_minutes, "batch": args.batch_size, "lr": args.lr,
             "unet_width": args.unet_width, "train_cpu_s": cpu, "train_wall_s": wall, "ema": args.ema,
             "test_n": int(x_test.shape[0]), "test_bpd_bound": bpd, "test_bpd_sem": bpd_sem,
             "bound_cpu_s": bcpu, "bound_terms": args.bound_terms, "likelihood": name_ll,
             "loadavg_start": load_start, "loadavg_end": loadavg(),
             "params": sum(p.numel() for p in model.parameters())}  # fmt: skip
    print(extra)
    report(name, rows,
           ["sampler", "n", "repeats", "sample_wall_s", "sample_cpu_s", "speedup_vs_ancestral_cpu",
            "fid", "fid_ratio_vs_ancestral", "fid_real_floor"], extra)  # fmt: skip


def bench_unet(args: argparse.Namespace) -> None:
    import diffusers  # optional: the ``bench`` extra
    from diffusers import DDPMScheduler, UNet2DModel

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
    extra = {"batch": B, "repeats": args.repeats, "diffusers": diffusers.__version__,
             "ratio_cpu_dgm_over_diffusers": row["dgm_cpu"] / row["diffusers_cpu"],
             "ratio_wall_dgm_over_diffusers": row["dgm_wall"] / row["diffusers_wall"],
             "loadavg": loadavg()}  # fmt: skip
    print(extra)
    report("diffusion_unet", rows, ["network", "params", "ms_cpu", "ms_wall"], extra)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("part", choices=["2d", "digits", "mnist", "unet"])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--max-minutes", type=float, default=0.0, help="training budget (wall)")
    ap.add_argument("--data", nargs="+", default=["8gaussians", "checkerboard", "rings"])
    ap.add_argument("--models", nargs="+", default=["score-sde", "ddpm", "ncsn", "nsf"])
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--n-eval", type=int, default=2000)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--test-n", type=int, default=0, help="test images for the bound (0: all)")
    ap.add_argument("--unet-width", type=int, default=32)
    ap.add_argument("--bound-terms", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ema", type=float, default=0.0)
    ap.add_argument("--batch-size", type=int, default=128, help="training batch (images)")
    ap.add_argument("--batch", type=int, default=128, help="batch of the unet timing")
    ap.add_argument("--repeats", type=int, default=0, help="timing repeats (unet: 15, images: 3)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="", help="results name (default diffusion_<part>)")
    args = ap.parse_args()
    args.repeats = args.repeats or (15 if args.part == "unet" else 3)
    torch.set_num_threads(args.threads)
    {"2d": bench_2d, "digits": bench_images, "mnist": bench_images, "unet": bench_unet}[args.part](
        args
    )


if __name__ == "__main__":
    main()
