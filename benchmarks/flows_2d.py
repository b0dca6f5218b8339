"""Every dgm flow side by side with zuko, nflows and normflows on the analytic 2-D densities.

For each density, every entry trains with the same loop: Adam (lr 1e-3, betas (0.9, 0.999), no
weight decay, ``fused=True``: the single-kernel CPU Adam dgm's engine uses, given to every entry
alike; cosine decay to 0), the same minibatches of ``--batch-size`` drawn from the dataset's training split, ``--steps`` steps
(``--cnf-steps`` for the continuous flow). Entries train round-robin in chunks of ``--chunk``
steps, so dgm and peer runs are interleaved on a shared, noisy machine; ms/step is the median
over chunks of wall time (and of process CPU time, less sensitive to other load). The KL gap
KL(p || q) = E_p[log p - log q] in nats uses ``--eval-samples`` exact samples of the density
(``dgm.eval.density.kl_divergence``).

Architectures (8 layers, 2 hidden layers of 64, ReLU, 8 bins, tail bound 5, reversal between
layers) are matched as far as each API allows; see ``NOTES`` in the output.

    .venv/bin/python benchmarks/flows_2d.py [--data 8gaussians ...] [--entries ...] [--steps 2000]
        [--seeds 0 1 2]  (several seeds: medians over seeds)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

import dgm.data
from _common import loadavg, median, report
from dgm.core.spec import DataSpec
from dgm.eval.density import kl_divergence
from dgm.models import build, names

LAYERS, HIDDEN, BINS, BOUND = 8, 64, 8, 5.0
SPEC = DataSpec((2,))

NOTES = {
    "dgm nsf-ar": "nsf variant=autoregressive, MADE (64, 64), reverse between layers",
    "dgm nsf-coupling": "nsf variant=coupling, MLP (64, 64) on half the dims, reverse",
    "dgm realnvp": "realnvp vector, affine coupling MLP (64, 64)",
    "dgm maf": "maf, affine MADE (64, 64)",
    "dgm iaf": "iaf, affine inverse-autoregressive: density needs D passes per layer",
    "dgm cnf": "cnf FFJORD, concatsquash MLP (64, 64, 64) tanh, rk4 8 steps (train), exact trace; "
    "KL scored with dopri5 rtol=atol=1e-5",
    "zuko nsf-ar": "zuko.flows.NSF(transforms=8, hidden_features=(64, 64), bins=8), bound 5",
    "zuko maf": "zuko.flows.MAF(transforms=8, hidden_features=(64, 64))",
    "zuko realnvp": "zuko.flows.RealNVP(transforms=8, hidden_features=(64, 64))",
    "nflows maf": "MaskedAffineAutoregressiveTransform, plain MADE (num_blocks=1: 64, 64), "
    "ReversePermutation",
    "nflows realnvp": "AffineCouplingTransform, MLP (64, 64) on half the dims, ReversePermutation",
    "normflows maf": "MaskedAffineAutoregressive(num_blocks=1, use_residual_blocks=False): plain "
    "MADE (64, 64), swap permutation",
    "normflows realnvp": "AffineCouplingBlock(MLP([1, 64, 64, 2], init_zeros=True)), swap "
    "permutation",
    "nflows nsf-ar": "MaskedPiecewiseRationalQuadraticAutoregressiveTransform, plain MADE "
    "(num_blocks=1: 64, 64), linear tails at 5, ReversePermutation",
    "nflows nsf-coupling": "PiecewiseRationalQuadraticCouplingTransform, MLP (64, 64), linear "
    "tails at 5, ReversePermutation",
    "normflows nsf-ar": "AutoregressiveRationalQuadraticSpline(num_blocks=1): residual MADE "
    "(64 + one residual block of 2x64, forced by the API), tail 5, swap permutation; its "
    "log_prob runs the D-pass inverse",
    "normflows nsf-coupling": "CoupledRationalQuadraticSpline(num_blocks=1): residual MLP, tail 5, "
    "swap permutation; it also maps the conditioning half by an unconditional spline (its "
    "wrapper sets apply_unconditional_transform=True)",
    # three hidden layers: the depth (and parameter count) of normflows' residual conditioners,
    # whose API has no two-layer form; every library that allows it gets the same
    "dgm nsf-ar h3": "as dgm nsf-ar with MADE (64, 64, 64)",
    "dgm nsf-coupling h3": "as dgm nsf-coupling with MLP (64, 64, 64)",
    "zuko nsf-ar h3": "as zuko nsf-ar with hidden_features=(64, 64, 64)",
    "nflows nsf-coupling h3": "as nflows nsf-coupling with MLP (64, 64, 64)",
    # "u": the conditioning half also goes through an unconditional spline (Durkan et al. 2019,
    # eqs. 4-6), as normflows' coupling does
    "dgm nsf-coupling h3u": "as dgm nsf-coupling h3 with unconditional=True",
    "nflows nsf-coupling h3u": "as nflows nsf-coupling h3 with apply_unconditional_transform=True",
}


class MLP(nn.Module):
    """The ReLU conditioner (``depth`` hidden layers of 64) nflows' coupling calls as
    ``net(x, context)``."""

    def __init__(self, n_in: int, n_out: int, depth: int = 2) -> None:
        super().__init__()
        sizes = [n_in] + [HIDDEN] * depth
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(sizes[-1], n_out))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.net(x)


Entry = tuple[nn.Module, Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]


def dgm_entry(name: str, **cfg) -> Callable[[], Entry]:
    def make() -> Entry:
        m = build(name, SPEC, **cfg)
        return m, lambda x: m.loss(x)["loss"], m.log_prob

    return make


def zuko_entry(kind: str, depth: int = 2) -> Callable[[], Entry]:
    def make() -> Entry:
        import zuko  # optional peer: the ``bench`` extra

        common = {"transforms": LAYERS, "hidden_features": (HIDDEN,) * depth}
        if kind == "nsf":
            f = zuko.flows.NSF(2, bins=BINS, **common)
        elif kind == "maf":
            f = zuko.flows.MAF(2, **common)
        else:
            f = zuko.flows.RealNVP(2, **common)
        return f, lambda x: -f().log_prob(x).mean(), lambda x: f().log_prob(x)

    return make


def nflows_entry(kind: str, depth: int = 2, unconditional: bool = False) -> Callable[[], Entry]:
    def make() -> Entry:
        from nflows.distributions import StandardNormal  # optional peer (``bench`` extra)
        from nflows.flows import Flow
        from nflows.transforms import (
            AffineCouplingTransform,
            CompositeTransform,
            MaskedAffineAutoregressiveTransform,
            MaskedPiecewiseRationalQuadraticAutoregressiveTransform,
            PiecewiseRationalQuadraticCouplingTransform,
            ReversePermutation,
        )

        layers = []
        for i in range(LAYERS):
            if i > 0:
                layers.append(ReversePermutation(2))
            if kind == "nsf-ar":
                layers.append(
                    MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
                        features=2,
                        hidden_features=HIDDEN,
                        num_bins=BINS,
                        tails="linear",
                        tail_bound=BOUND,
                        num_blocks=1,
                        use_residual_blocks=False,
                    )  # fmt: skip
                )
            elif kind == "maf":
                layers.append(
                    MaskedAffineAutoregressiveTransform(
                        features=2, hidden_features=HIDDEN, num_blocks=1, use_residual_blocks=False
                    )
                )
            elif kind == "realnvp":
                layers.append(AffineCouplingTransform(torch.tensor([1, 0]), MLP))
            else:
                layers.append(
                    PiecewiseRationalQuadraticCouplingTransform(
                        mask=torch.tensor([1, 0]),
                        transform_net_create_fn=lambda i, o: MLP(i, o, depth),
                        num_bins=BINS,
                        tails="linear",
                        tail_bound=BOUND,
                        apply_unconditional_transform=unconditional,
                    )  # fmt: skip
                )
        f = Flow(CompositeTransform(layers), StandardNormal([2]))
        return f, lambda x: -f.log_prob(x).mean(), f.log_prob

    return make


def normflows_entry(kind: str) -> Callable[[], Entry]:
    def make() -> Entry:
        import normflows as nf  # optional peer: the ``bench`` extra

        flows = []
        for _ in range(LAYERS):
            if kind == "nsf-ar":
                flows.append(
                    nf.flows.AutoregressiveRationalQuadraticSpline(
                        2, 1, HIDDEN, num_bins=BINS, tail_bound=BOUND
                    )
                )
            elif kind == "maf":
                flows.append(
                    nf.flows.MaskedAffineAutoregressive(
                        2, HIDDEN, num_blocks=1, use_residual_blocks=False
                    )
                )
            elif kind == "realnvp":
                net = nf.nets.MLP([1, HIDDEN, HIDDEN, 2], init_zeros=True)
                flows.append(nf.flows.AffineCouplingBlock(net))
            else:
                flows.append(
                    nf.flows.CoupledRationalQuadraticSpline(
                        2, 1, HIDDEN, num_bins=BINS, tail_bound=BOUND
                    )
                )
            flows.append(nf.flows.Permute(2, mode="swap"))
        f = nf.NormalizingFlow(nf.distributions.DiagGaussian(2, trainable=False), flows)
        return f, lambda x: f.forward_kld(x), f.log_prob

    return make


def entries() -> dict[str, Callable[[], Entry]]:
    arch = {"depth": LAYERS, "hidden": (HIDDEN, HIDDEN)}
    out = {
        "dgm nsf-ar": dgm_entry("nsf", variant="autoregressive", bins=BINS, **arch),
        "dgm nsf-coupling": dgm_entry("nsf", variant="coupling", bins=BINS, **arch),
        "dgm realnvp": dgm_entry("realnvp", **arch),
    }
    for name in ("maf", "iaf"):
        if name in names():
            out[f"dgm {name}"] = dgm_entry(name, **arch)
    deep = {"depth": LAYERS, "hidden": (HIDDEN,) * 3}
    out["dgm nsf-ar h3"] = dgm_entry("nsf", variant="autoregressive", bins=BINS, **deep)
    out["dgm nsf-coupling h3"] = dgm_entry("nsf", variant="coupling", bins=BINS, **deep)
    out["dgm nsf-coupling h3u"] = dgm_entry(
        "nsf", variant="coupling", bins=BINS, unconditional=True, **deep
    )
    out["dgm cnf"] = dgm_entry("cnf", hidden=(64, 64, 64), method="rk4", ode_steps=8)
    out |= {
        "zuko nsf-ar": zuko_entry("nsf"),
        "zuko maf": zuko_entry("maf"),
        "zuko realnvp": zuko_entry("realnvp"),
        "nflows nsf-ar": nflows_entry("nsf-ar"),
        "nflows nsf-coupling": nflows_entry("nsf-coupling"),
        "zuko nsf-ar h3": zuko_entry("nsf", depth=3),
        "nflows nsf-coupling h3": nflows_entry("nsf-coupling", depth=3),
        "nflows nsf-coupling h3u": nflows_entry("nsf-coupling", depth=3, unconditional=True),
        "nflows maf": nflows_entry("maf"),
        "nflows realnvp": nflows_entry("realnvp"),
        "normflows nsf-ar": normflows_entry("nsf-ar"),
        "normflows nsf-coupling": normflows_entry("nsf-coupling"),
        "normflows maf": normflows_entry("maf"),
        "normflows realnvp": normflows_entry("realnvp"),
    }
    return out


def run_density(
    data_name: str, chosen: list[str], args: argparse.Namespace, seed: int = 0
) -> list[dict]:
    """Train every chosen entry once (initialisation and minibatch order from ``seed``)."""
    ds = dgm.data.load(data_name)
    train = ds.train.float()
    g = torch.Generator().manual_seed(seed)
    batches = torch.randint(0, len(train), (args.steps, args.batch_size), generator=g)
    test = ds.density.sample(args.eval_samples, generator=torch.Generator().manual_seed(1))
    makers = entries()
    state = {}
    for name in chosen:
        torch.manual_seed(seed)
        module, loss_fn, logp_fn = makers[name]()
        total = args.cnf_steps if name == "dgm cnf" else args.steps
        opt = torch.optim.Adam(module.parameters(), lr=args.lr, fused=True)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
        state[name] = dict(
            module=module, loss=loss_fn, logp=logp_fn, opt=opt, sched=sched, total=total,
            done=0, wall=[], cpu=[], last=float("nan"),
        )  # fmt: skip
    load_start = loadavg()
    while any(s["done"] < s["total"] for s in state.values()):
        for s in state.values():  # round-robin: peers and dgm interleaved
            n = min(args.chunk, s["total"] - s["done"])
            if n <= 0:
                continue
            w0, c0 = time.perf_counter(), time.process_time()
            for i in range(s["done"], s["done"] + n):
                loss = s["loss"](train[batches[i]])
                s["opt"].zero_grad()
                loss.backward()
                s["opt"].step()
                s["sched"].step()
            s["wall"].append(1000 * (time.perf_counter() - w0) / n)
            s["cpu"].append(1000 * (time.process_time() - c0) / n)
            s["done"] += n
            s["last"] = float(loss.detach())
        print(data_name, {k: s["done"] for k, s in state.items()}, loadavg(), flush=True)
    rows = []
    for name, s in state.items():
        m = s["module"].eval()
        ctx = m.inference() if hasattr(m, "inference") else torch.no_grad()

        def log_q(x: Tensor, s=s, ctx=ctx) -> Tensor:
            with ctx:
                return torch.cat([s["logp"](c.float()).double() for c in x.split(4096)])

        kl = kl_divergence(ds.density.log_prob, log_q, test)
        rows.append(
            {
                "data": data_name,
                "entry": name,
                "seed": seed,
                "steps": s["total"],
                "kl_gap_nats": kl["kl"],
                "kl_sem": kl["kl_sem"],
                "ms_per_step_wall": median(s["wall"]),
                "ms_per_step_cpu": median(s["cpu"]),
                "params": sum(p.numel() for p in m.parameters()),
                "final_loss": s["last"],
                "loadavg_start": load_start,
                "loadavg_end": loadavg(),
            }
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--cnf-steps", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--chunk", type=int, default=100)
    ap.add_argument("--eval-samples", type=int, default=20000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", nargs="+", default=["8gaussians", "checkerboard", "rings"])
    ap.add_argument("--entries", nargs="+", default=None, help="default: every entry")
    ap.add_argument("--name", default="flows_2d")
    ap.add_argument(
        "--seeds", nargs="+", type=int, default=[0],
        help="one training run per seed (initialisation and minibatch order); with several, the "
        "table gives the median KL gap and step time over seeds and the per-seed rows are kept "
        "in the JSON",
    )  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    chosen = args.entries or list(entries())
    unknown = set(chosen) - set(entries())
    if unknown:
        raise SystemExit(f"unknown entries {sorted(unknown)}; choose from {list(entries())}")
    rows = []
    columns = [
        "data", "entry", "steps", "kl_gap_nats", "kl_sem", "ms_per_step_wall", "ms_per_step_cpu",
        "params", "loadavg_start", "loadavg_end",
    ]  # fmt: skip
    summary: list[dict] = []
    for data_name in args.data:
        per_seed = [r for seed in args.seeds for r in run_density(data_name, chosen, args, seed)]
        rows += per_seed
        if len(args.seeds) > 1:
            summary += summarise(per_seed)
        # written after every density, so a long run that is stopped keeps what it finished
        report(
            args.name,
            summary if len(args.seeds) > 1 else rows,
            SUMMARY_COLUMNS if len(args.seeds) > 1 else columns,
            extra={"args": vars(args), "notes": {k: NOTES[k] for k in chosen}, "runs": rows},
        )


SUMMARY_COLUMNS = [
    "data", "entry", "seeds", "steps", "kl_gap_median", "kl_gap_min", "kl_gap_max",
    "ms_per_step_cpu_median", "params",
]  # fmt: skip


def summarise(rows: list[dict]) -> list[dict]:
    """One row per (density, entry): the median, min and max KL gap over seeds."""
    out = []
    for entry in dict.fromkeys(r["entry"] for r in rows):
        mine = [r for r in rows if r["entry"] == entry]
        kls = [r["kl_gap_nats"] for r in mine]
        out.append(
            {
                "data": mine[0]["data"],
                "entry": entry,
                "seeds": len(mine),
                "steps": mine[0]["steps"],
                "kl_gap_median": median(kls),
                "kl_gap_min": min(kls),
                "kl_gap_max": max(kls),
                "ms_per_step_cpu_median": median([r["ms_per_step_cpu"] for r in mine]),
                "params": mine[0]["params"],
            }
        )
    return out


if __name__ == "__main__":
    main()
