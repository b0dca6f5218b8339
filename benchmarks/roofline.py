"""How close dgm's training steps come to this machine's float32 matrix-multiply peak.

1. The peak: ``torch.mm`` of two ``N x N`` float32 matrices (N = 512, 1024, 2048), ``2 N^3``
   FLOPs per product, the best over sizes of the median over ``--repeats`` timings, on one thread
   and (``--threads 1 2``) on two.
2. For each training step (forward, backward, fused Adam step: what the engine runs), the FLOPs
   counted by ``torch.utils.flop_counter.FlopCounterMode``'s formulas over one step (matrix
   products and convolutions, forward and backward; elementwise work, normalisation and the
   optimizer count as 0, so the achieved figure is a lower bound on the arithmetic done), the
   median wall time of ``--repeats`` steps, the achieved FLOP/s and its fraction of the peak of
   the same thread count:

   * ``made``: MADE 784-3000-784 with the direct connection, batch 100 of binarized MNIST
     (the ``benchmarks/made.py`` preset without dropout's randomness mattering for FLOPs);
   * ``gated-pixelcnn``: the Gated PixelCNN of width 64 and depth 6 (the small-image default,
     the one ``roofline.json`` measured) on binarized MNIST, batch ``--ar-batch``;
   * ``unet``: the U-Net of ``dgm.nn.unet`` (width 32, mults (1, 2), one block, time dim 128)
     on 28x28 one-channel images, batch ``--unet-batch``, the DDPM epsilon loss;
   * ``vae``: the VAE of ``peers.py``'s pythae pair (784-300-300-40, ELU, Bernoulli decoder, one
     ELBO sample) on binarized MNIST, batch ``--vae-batch``, with ``N(0, I)`` and with the
     VampPrior (500 pseudo-inputs: their encoding is part of every step).
3. The ceiling: the step's matrix products and convolutions, and its fused Adam update, recorded
   with their arguments and each timed alone, warm (``_kernels.py``): ``products_fraction`` is the
   step's FLOPs over the products' own time (how fast these kernels run at these shapes),
   ``ceiling_fraction`` over products and Adam together, the highest fraction of the peak any
   rewrite of the step that keeps its float32 products and its optimizer could reach.
4. ``--profile``: a torch.profiler table (self CPU time by operator) of a few steps of each model,
   saved in the result, to say what limits the convolutional models.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/roofline.py [--threads 1 2] [--profile]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

import dgm.data
from _common import loadavg, median, report
from _kernels import record
from dgm.core.spec import DataSpec
from dgm.models import build
from dgm.models.diffusion.schedules import DiscreteSchedule
from dgm.nn.unet import UNet

BINARY = DataSpec((1, 28, 28), "discrete", levels=2)


def gemm_peak(repeats: int) -> tuple[float, dict[int, float]]:
    """The best float32 ``mm`` rate in FLOP/s over sizes, and the rate of each size."""
    rates = {}
    for n in (512, 1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - t0)
        rates[n] = 2 * n**3 / median(times)
    return max(rates.values()), rates


def made_step(batch: int) -> tuple[Callable[[], None], torch.nn.Module]:
    data = dgm.data.load("binarized-mnist").train.float()
    torch.manual_seed(0)
    model = build("made", DataSpec((784,), "discrete", levels=2), hidden=[3000], direct=True)
    x = data[:batch].reshape(batch, 784)
    return _step(model, lambda: model.loss(x)["loss"]), model


def vae_step(batch: int, prior: str = "standard") -> tuple[Callable[[], None], torch.nn.Module]:
    data = dgm.data.load("binarized-mnist").train.float()
    torch.manual_seed(0)
    model = build("vae", BINARY, latent_dim=40, hidden=[300, 300], activation="elu", prior=prior)
    with torch.no_grad():
        model.on_train_start(data[:500])  # the pseudo-inputs of the VampPrior: training images
    x = data[:batch]
    return _step(model, lambda: model.loss(x)["loss"]), model


def pixelcnn_step(batch: int) -> tuple[Callable[[], None], torch.nn.Module]:
    data = dgm.data.load("binarized-mnist").train.float()
    torch.manual_seed(0)
    model = build("gated-pixelcnn", BINARY, width=64, depth=6)
    x = data[:batch].reshape(batch, 1, 28, 28)
    return _step(model, lambda: model.loss(x)["loss"]), model


def unet_step(batch: int) -> tuple[Callable[[], None], torch.nn.Module]:
    torch.manual_seed(0)
    net = UNet(1, 32, (1, 2), 1, 128)
    sched = DiscreteSchedule.named("linear", 1000)
    x = torch.rand(batch, 1, 28, 28) * 2 - 1

    def loss() -> torch.Tensor:
        t = torch.randint(0, 1000, (batch,))
        noise = torch.randn_like(x)
        return ((net(sched.add_noise(x, noise, t), t.float()) - noise) ** 2).mean()

    return _step(net, loss), net


def _step(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)  # as the engine builds it

    def step() -> None:
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def time_step(step: Callable[[], None], repeats: int) -> list[float]:
    step()  # warm-up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        out.append(time.perf_counter() - t0)
    return out


def profile_table(step: Callable[[], None], steps: int = 3, rows: int = 12) -> str:
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--made-batch", type=int, default=100)
    ap.add_argument("--ar-batch", type=int, default=16)
    ap.add_argument("--unet-batch", type=int, default=32)
    ap.add_argument("--vae-batch", type=int, default=100)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--out", default="roofline")
    args = ap.parse_args()
    models = {
        "made 784-3000-784": lambda: made_step(args.made_batch),
        "gated-pixelcnn": lambda: pixelcnn_step(args.ar_batch),
        "unet 28x28": lambda: unet_step(args.unet_batch),
        "vae 784-300-300-40": lambda: vae_step(args.vae_batch),
        "vae 784-300-300-40 vamp": lambda: vae_step(args.vae_batch, "vamp"),
    }
    batches = {"made 784-3000-784": args.made_batch, "gated-pixelcnn": args.ar_batch}
    batches["unet 28x28"] = args.unet_batch
    batches["vae 784-300-300-40"] = batches["vae 784-300-300-40 vamp"] = args.vae_batch
    rows, peaks, profiles = [], {}, {}
    load_start = loadavg()
    for threads in args.threads:
        torch.set_num_threads(threads)
        peak, by_size = gemm_peak(args.repeats)
        peaks[threads] = {"peak_gflops": peak / 1e9} | {
            f"mm{n}_gflops": r / 1e9 for n, r in by_size.items()
        }
        print(threads, peaks[threads], loadavg(), flush=True)
        rows.append({"step": "float32 mm peak", "threads": threads, "gflops": peak / 1e9,
                     "fraction_of_peak": 1.0, "loadavg": loadavg()})  # fmt: skip
        for name, make in models.items():
            step, model = make()
            kern = record(step)  # counts the FLOPs too
            flops = kern.flops
            times = time_step(step, args.repeats)
            rate = flops / median(times)
            products = kern.floor_ms(args.repeats, kinds=("product",))
            floor = kern.floor_ms(args.repeats)
            rows.append({
                "step": name, "threads": threads, "batch": batches[name],
                "params": sum(p.numel() for p in model.parameters()),
                "gflop_per_step": flops / 1e9, "ms_per_step": 1000 * median(times),
                "ms_min": 1000 * min(times), "ms_max": 1000 * max(times),
                "gflops": rate / 1e9, "fraction_of_peak": rate / peak,
                "ms_products": products, "products_fraction": flops / (products / 1e3) / peak,
                "ms_floor": floor, "ceiling_fraction": flops / (floor / 1e3) / peak,
                "loadavg": loadavg(),
            })  # fmt: skip
            print(rows[-1], flush=True)
            if args.profile and threads == args.threads[0]:
                profiles[name] = profile_table(step)
                print(profiles[name], flush=True)
    cols = ["step", "threads", "batch", "params", "gflop_per_step", "ms_per_step", "ms_min",
            "ms_max", "gflops", "fraction_of_peak", "ms_products", "products_fraction", "ms_floor",
            "ceiling_fraction", "loadavg"]  # fmt: skip
    extra = {
        "peaks": peaks,
        "flops": "torch.utils.flop_counter.FlopCounterMode's formulas over one training step "
        "(matmuls and convolutions, forward and backward; elementwise ops and Adam count 0: a "
        "lower bound)",
        "peak": "best over N=512,1024,2048 of the median time of torch.mm(N x N, N x N), 2 N^3",
        "floor": "ms_products: the step's matrix products and convolutions with their recorded "
        "arguments (benchmarks/_kernels.py), each timed alone and warm, medians of --repeats "
        "summed; ms_floor: the "
        "same with the fused Adam update; products_fraction and ceiling_fraction: the step's "
        "FLOPs over those times, as fractions of the peak (the most the step could reach with "
        "these kernels, without and with its optimizer)",
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "profiles": profiles,
    }
    report(args.out, rows, cols, extra)


if __name__ == "__main__":
    main()
