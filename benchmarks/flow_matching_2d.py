"""Flow matching on 2-D densities beside torchcfm (MIT) in the same run, and few-step W2.

For each density and seed, the *same* network (dgm's ``flow-matching`` time-conditioned MLP, in
the same standardised model space), batch, steps and optimizer are trained with

* dgm I-CFM and dgm OT-CFM (``coupling=independent`` / ``ot``; the exact assignment by scipy's
  solver warm-started by Sinkhorn potentials, ``dgm.core.assignment``);
* torchcfm's ``ExactOptimalTransportConditionalFlowMatcher`` (sigma=0: the same straight path
  and exact minibatch OT plan, solved by POT) driving that network;
* dgm ``reflow`` distilled from the dgm I-CFM run (Liu et al.'s 2-rectified flow);
* dgm ``consistency`` distilled from the dgm OT-CFM run (``objective=cd``) and trained without a
  teacher (``objective=ct``), sampled in 1 and 2 steps (no likelihood: no KL gap);
* dgm ``nsf`` (its default model config; the same batch, Adam and learning rate as the others)
  trained for the same summed step time as dgm OT-CFM: flow
  matching's KL gap against dgm's best exact flow at equal training time.

Figures (all on fresh samples of the analytic density, whose log-density is exact):

* ``kl_gap``: E_p[log p(x) - log q(x)] in nats with its standard error, ``log q`` by dgm's
  probability-flow ODE (exact trace, dopri5 at the tolerance recorded), an estimate from
  ``--test`` points;
* ``c2st``: held-out accuracy of dgm's MLP classifier telling model samples (rk4, 20 steps) from
  data (0.5 = indistinguishable);
* ``ms_step``: median milliseconds per training step (loss, backward, Adam step; every model
  with the engine's optimizer, fused Adam). dgm OT-CFM and torchcfm OT-CFM train in alternating
  chunks of ``--chunk`` steps (each on batches from its own generator, seeded alike), so the
  machine's load hits both alike;
* ``w2_1step`` / ``w2_2step``: the exact empirical 2-Wasserstein distance (assignment) between
  1-step (2-step) samples (Euler for the flows, the consistency sampler) and as many data points.

``breakdown`` times the pieces of one step on 50 fresh batches of each density (seed 0): dgm's
exact assignment warm-started (the default) and cold (scipy on the raw cost, the old path),
torchcfm's exact plan-and-draw (POT's ``emd``), and the whole I-CFM step (the network, its
backward and Adam, no coupling).

``--solver`` also times dgm's dopri5 against torchdiffeq's on the trained OT-CFM field at the same
tolerance, with the error of each against a tight (rtol 1e-9) dgm solve.
"""

from __future__ import annotations

import argparse
import math
import time
from functools import partial

import torch

from _common import median, report
from dgm.core.assignment import linear_assignment
from dgm.core.spec import DataSpec
from dgm.data.analytic import get_density
from dgm.eval.twosample import c2st
from dgm.models import build
from dgm.models.flow_matching import (
    Consistency,
    ConsistencyConfig,
    FlowMatching,
    FlowMatchingConfig,
    Reflow,
    ReflowConfig,
)
from dgm.models.flow_matching.paths import ot_pairs
from dgm.samplers.ode import odeint

#: steps per chunk when dgm's and torchcfm's OT-CFM train interleaved
CHUNK = 100


def w2(a: torch.Tensor, b: torch.Tensor) -> float:
    cost = torch.cdist(a.double(), b.double()).square().numpy()
    cols = linear_assignment(cost)  # exact
    return math.sqrt(float(cost[range(len(cols)), cols].mean()))


def adam(params, lr: float) -> torch.optim.Optimizer:
    """The engine's optimizer (``dgm train``): Adam with the fused kernel, for every model here."""
    return torch.optim.Adam(params, lr=lr, fused=True)


def one_step(opt: torch.optim.Optimizer, step_fn) -> float:
    """One step of ``opt`` on ``step_fn() -> loss``; its wall ms."""
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    step_fn().backward()
    opt.step()
    return 1000 * (time.perf_counter() - t0)


def train(step_fn, params, steps: int, lr: float, seconds: float | None = None) -> float:
    """Run ``steps`` steps of Adam on ``step_fn() -> loss`` (or as many as fit in ``seconds`` of
    summed step time); returns the median ms per step."""
    opt = adam(params, lr)
    times: list[float] = []
    while len(times) < steps if seconds is None else sum(times) < 1000 * seconds:
        times.append(one_step(opt, step_fn))
    return median(times)


def train_interleaved(runs: dict, steps: int, lr: float, chunk: int = CHUNK) -> dict[str, float]:
    """Train every ``runs[label] = (step_fn, params)`` for ``steps`` steps in alternating chunks
    of ``chunk`` steps (the order reversed every chunk), so the machine's load hits them alike;
    the median ms per step of each."""
    opts = {k: adam(params, lr) for k, (_, params) in runs.items()}
    times: dict[str, list[float]] = {k: [] for k in runs}
    order = list(runs)
    done = 0
    while done < steps:
        n = min(chunk, steps - done)
        for k in order:
            times[k] += [one_step(opts[k], runs[k][0]) for _ in range(n)]
        order.reverse()
        done += n
    return {k: median(v) for k, v in times.items()}


def figures(model, density, args, gen) -> dict:
    test = density.sample(args.test, generator=gen)
    out = {}
    with model.inference():
        if isinstance(model, Consistency):
            s = model.sample(args.test, steps=2)
            few = {k: model.sample(args.test, steps=k) for k in (1, 2)}
        else:
            gap = density.log_prob(test) - model.log_prob(test)
            out["kl_gap"] = round(float(gap.mean()), 4)
            out["kl_gap_se"] = round(float(gap.std() / math.sqrt(len(gap))), 4)
            if isinstance(model, FlowMatching):
                s = model.sample(args.test, method="rk4", steps=20)
                few = {k: model.sample(args.test, method="euler", steps=k) for k in (1, 2)}
            else:
                s, few = model.sample(args.test), {}
    data = density.sample(args.test, generator=gen)
    out["c2st"] = round(c2st(s, data, seed=0).statistic, 3)
    for k, x in few.items():
        out[f"w2_{k}step"] = round(w2(x, density.sample(args.test, generator=gen)), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--densities", nargs="+", default=["8gaussians", "checkerboard", "rings"])
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--rtol", type=float, default=1e-5)
    ap.add_argument("--pairs", type=int, default=10_000)
    ap.add_argument("--solver", action="store_true", help="time dgm's dopri5 against torchdiffeq")
    ap.add_argument("--chunk", type=int, default=CHUNK, help="steps per interleaved chunk")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from torchcfm.conditional_flow_matching import ExactOptimalTransportConditionalFlowMatcher

    pieces = breakdown(args.densities, args)
    print(pieces, flush=True)

    spec = DataSpec((2,))
    # the MLP without the Fourier features of the 2-D default (ee0d7a6): the network of the
    # record (178030d), torchcfm's examples' kind; flow_matching_vs_nsf.py measures the default
    net = {"width": args.width, "depth": args.depth, "rtol": args.rtol, "atol": args.rtol,
           "fourier_features": 0}  # fmt: skip
    rows, solver = [], None
    for name in args.densities:
        density = get_density(name)
        for seed in range(args.seeds):
            gen = torch.Generator().manual_seed(1000 + seed)
            first = density.sample(4096, generator=gen)

            def batches(density=density, gen=gen):
                return density.sample(args.batch, generator=gen)

            trained = {}
            torch.manual_seed(seed)
            m = FlowMatching(spec, FlowMatchingConfig(coupling="independent", **net))
            m.on_train_start(first)
            ms = train(lambda m=m, b=batches: m.loss(b())["loss"], m.parameters(), args.steps,
                       args.lr)  # fmt: skip
            trained["dgm I-CFM"] = (m, ms)
            # dgm's OT-CFM and torchcfm's loss on the same network, in the same model space,
            # trained in alternating chunks: their ms per step see the same load
            torch.manual_seed(seed)
            om = FlowMatching(spec, FlowMatchingConfig(coupling="ot", **net))
            om.on_train_start(first)
            torch.manual_seed(seed)
            tm = FlowMatching(spec, FlowMatchingConfig(**net))
            tm.on_train_start(first)
            fm = ExactOptimalTransportConditionalFlowMatcher(sigma=0.0)
            # each run draws its batches from its own generator, seeded alike
            gens = {k: torch.Generator().manual_seed(2000 + seed) for k in ("dgm", "torchcfm")}

            def cfm_step(tm=tm, fm=fm, g=gens["torchcfm"], density=density):
                x1, _ = tm.to_model_space(density.sample(args.batch, generator=g))
                t, xt, ut = fm.sample_location_and_conditional_flow(torch.randn_like(x1), x1)
                return (tm.velocity(xt, t) - ut).square().mean()

            def ot_step(om=om, g=gens["dgm"], density=density):
                return om.loss(density.sample(args.batch, generator=g))["loss"]

            ms = train_interleaved({"dgm OT-CFM": (ot_step, om.parameters()),
                                    "torchcfm OT-CFM": (cfm_step, tm.parameters())},
                                   args.steps, args.lr, args.chunk)  # fmt: skip
            trained["dgm OT-CFM"] = (om, ms["dgm OT-CFM"])
            trained["torchcfm OT-CFM"] = (tm, ms["torchcfm OT-CFM"])
            torch.manual_seed(seed)
            cfg = ReflowConfig(pairs=args.pairs, pair_seed=seed, **net)
            rf = Reflow(spec, cfg)
            rf.use_teacher(trained["dgm I-CFM"][0])
            rf.make_pairs()
            ms = train(lambda rf=rf: rf.loss(torch.zeros(args.batch, 2))["loss"],
                       rf.parameters(), args.steps, args.lr)  # fmt: skip
            trained["dgm reflow (of I-CFM)"] = (rf, ms)
            for label, objective in (("dgm consistency cd (of OT-CFM)", "cd"),
                                     ("dgm consistency ct", "ct")):  # fmt: skip
                torch.manual_seed(seed)
                cm = Consistency(spec, ConsistencyConfig(objective=objective, width=args.width,
                                                         depth=args.depth,
                                                         fourier_features=0))  # fmt: skip
                if objective == "cd":
                    cm.use_teacher(trained["dgm OT-CFM"][0])
                cm.on_train_start(first)
                ms = train(lambda cm=cm, b=batches: cm.loss(b())["loss"], cm.parameters(),
                           args.steps, args.lr)  # fmt: skip
                trained[label] = (cm, ms)
            # dgm's best exact flow (nsf at its defaults) for the OT-CFM run's training time
            torch.manual_seed(seed)
            nsf = build("nsf", spec)
            nsf.on_train_start(first)
            budget = trained["dgm OT-CFM"][1] * args.steps / 1000
            ms = train(lambda m=nsf, b=batches: m.loss(b())["loss"], nsf.parameters(), 0,
                       args.lr, seconds=budget)  # fmt: skip
            trained["dgm nsf (same time as OT-CFM)"] = (nsf, ms)
            for label, (m, ms) in trained.items():
                t0 = time.perf_counter()
                row = {"density": name, "seed": seed, "model": label, "ms_step": round(ms, 2)}
                row |= figures(m.eval(), density, args, gen)
                row["eval_s"] = round(time.perf_counter() - t0, 1)
                rows.append(row)
                print(row, flush=True)
            if args.solver and solver is None:
                solver = time_solvers(trained["dgm OT-CFM"][0], args.rtol)
                print(solver, flush=True)
    cols = ["density", "seed", "model", "kl_gap", "kl_gap_se", "c2st", "w2_1step", "w2_2step",
            "ms_step"]  # fmt: skip
    extra = {
        "settings": vars(args),
        "kl_gap_note": "estimate: mean over --test fresh points of exact log p minus dgm's "
        f"probability-flow log q (exact trace, dopri5 rtol=atol={args.rtol:g})",
        "not_measured": "torchcfm I-CFM; MNIST figures",
    }
    extra["breakdown"] = pieces
    if solver is not None:
        extra["solver"] = solver
    report(f"flow_matching_2d{args.tag}", rows, cols, extra)


def breakdown(densities: list[str], args, n: int = 50) -> dict:
    """Median ms of the pieces of one training step at batch ``args.batch``, per density."""
    from torchcfm.optimal_transport import OTPlanSampler

    spec = DataSpec((2,))
    plan = OTPlanSampler(method="exact")
    out = {}
    for name in densities:
        density = get_density(name)
        gen = torch.Generator().manual_seed(7)
        torch.manual_seed(0)
        m = FlowMatching(spec, FlowMatchingConfig(coupling="independent", width=args.width,
                                                  depth=args.depth, fourier_features=0))  # fmt: skip
        m.on_train_start(density.sample(4096, generator=gen))
        pieces: dict[str, list[float]] = {}
        opt = adam(m.parameters(), args.lr)
        for _ in range(n):
            x = density.sample(args.batch, generator=gen)
            x1, _ = m.to_model_space(x)
            x0 = torch.randn_like(x1)
            for label, fn in (
                ("dgm assignment (warm start, default)", partial(ot_pairs, x0, x1)),
                ("dgm assignment (cold: scipy on the raw cost)",
                 partial(ot_pairs, x0, x1, warm_start=False)),
                ("torchcfm plan (POT emd + draw)", partial(plan.sample_plan, x0, x1)),
            ):  # fmt: skip
                t0 = time.perf_counter()
                fn()
                pieces.setdefault(label, []).append(1000 * (time.perf_counter() - t0))
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            m.loss(x)["loss"].backward()
            opt.step()
            pieces.setdefault("I-CFM step (network, backward, Adam)", []).append(
                1000 * (time.perf_counter() - t0)
            )
        out[name] = {k: round(median(v), 2) for k, v in pieces.items()}
    return {"batch": args.batch, "batches": n, "ms_median": out}


def time_solvers(model, rtol: float, n: int = 1000) -> dict:
    """dgm's dopri5 against torchdiffeq's on the same field, tolerance and start points."""
    import torchdiffeq

    z = torch.randn(n, 2, generator=torch.Generator().manual_seed(5))
    calls = {"n": 0}

    def f(t, y):
        calls["n"] += 1
        return model._field(y, t)

    out = {}
    with torch.no_grad():
        model64 = model.double()
        ref = odeint(lambda t, y: model64._field(y, t), z.double(), 0.0, 1.0, rtol=1e-9, atol=1e-9)
        model.float()
        for label, solve in (
            ("dgm dopri5", lambda: odeint(f, z, 0.0, 1.0, rtol=rtol, atol=rtol)),
            ("torchdiffeq dopri5", lambda: torchdiffeq.odeint(
                f, z, torch.tensor([0.0, 1.0]), rtol=rtol, atol=rtol, method="dopri5")[-1]),
        ):  # fmt: skip
            times = []
            for _ in range(5):
                calls["n"] = 0
                t0 = time.perf_counter()
                y = solve()
                times.append(1000 * (time.perf_counter() - t0))
            out[label] = {
                "ms_median": round(median(times), 1),
                "nfe": calls["n"],
                "max_abs_error_vs_rtol1e-9": float((y.double() - ref).abs().max()),
            }
    return {"tolerance": rtol, "points": n, "field": "trained dgm OT-CFM", **out}


if __name__ == "__main__":
    main()
