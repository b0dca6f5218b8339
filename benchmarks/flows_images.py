"""Image flows (realnvp, glow) on dequantized digits and MNIST: test bits/dim under a time budget.

Each model trains on uniformly dequantized data (``dgm.data.Dequantize``; the model's logit front
end and the dequantization's ``-D log L`` are both in the figure), with Adam and a batch of
``--batch``, for ``--minutes`` of wall-clock training time. Every ``--val-every`` seconds of
training the clock stops and the validation bits/dim is measured on up to ``--eval-size``
validation images; the weights with the best validation figure are kept (early stopping: the
digits have 1000 training images, which a flow overfits within minutes). At ``--checkpoints``
evenly spaced moments the test bits/dim of the current weights is also measured on
``--eval-size`` test images: the curve over time, for information only (it selects nothing). At
the end the full test set is scored with the selected weights (``test_bpd``) and with the last
ones (``test_bpd_last``). One dequantization draw per image; every figure is the dequantization
bound, a true upper bound on the discrete data's bits/dim.

    .venv/bin/python benchmarks/flows_images.py digits --minutes 4
    .venv/bin/python benchmarks/flows_images.py mnist --minutes 5 --models glow
    .venv/bin/python benchmarks/flows_images.py digits --set dequantization=variational

Published anchors (MNIST, GPUs, days of training): RealNVP 1.06, Glow 1.05, FFJORD 0.99 bits/dim.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

import dgm.data
from _common import report, with_overrides
from dgm.data import Dequantize
from dgm.eval.likelihood import nll
from dgm.models import build

PRESETS = {
    "digits": {
        "realnvp": {"levels": 2, "width": 64},
        "glow": {"levels": 2, "depth": 8, "width": 64},
    },
    "mnist": {
        "realnvp": {"levels": 3, "width": 64},
        "glow": {"levels": 2, "depth": 8, "width": 64},
    },
}


def run(name: str, data, cfg: dict, args) -> dict:
    torch.manual_seed(args.seed)
    pre = Dequantize(data.spec.levels)
    if cfg.get("dequantization") == "variational":
        cfg = {"dequantization_levels": data.spec.levels} | cfg
    model = build(name, pre.spec(data.spec), **cfg)
    noise = torch.Generator().manual_seed(args.seed + 1)
    train_x, test_x = data.train, data.test
    n = train_x.shape[0]
    model.train()
    model.on_train_start(pre(train_x[: args.batch], generator=noise)[0])
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    budget = args.minutes * 60
    marks = [budget * (i + 1) / args.checkpoints for i in range(args.checkpoints)]
    curve, clock, steps = [], 0.0, 0

    def evaluate(x: torch.Tensor) -> float:
        model.eval()
        g = torch.Generator().manual_seed(12345)
        res = nll(model, x, preprocessor=pre, generator=g, batch_size=500)
        model.train()
        return res["bpd"]

    val_x = data.val[: args.eval_size]
    best = {"val_bpd": math.inf, "steps": 0, "minutes": 0.0, "state": None}
    next_val = args.val_every
    while clock < budget:
        t0 = time.perf_counter()
        idx = torch.randint(0, n, (args.batch,))
        x, _ = pre(train_x[idx], generator=noise)
        loss = model.loss(x)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 50.0)
        opt.step()
        clock += time.perf_counter() - t0
        steps += 1
        if not math.isfinite(float(loss.detach())):
            raise RuntimeError(f"{name}: non-finite loss at step {steps}")
        if clock >= next_val or clock >= budget:
            next_val += args.val_every
            val = evaluate(val_x)
            if val < best["val_bpd"]:
                state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                best = {"val_bpd": val, "steps": steps, "minutes": clock / 60, "state": state}
            if marks and clock >= marks[0]:
                marks.pop(0)
                bpd = evaluate(test_x[: args.eval_size])
                curve.append(
                    {"minutes": round(clock / 60, 2), "steps": steps, "val_bpd": val,
                     "test_bpd": bpd}
                )  # fmt: skip
                print(f"{name}: {clock / 60:.2f} min, {steps} steps, val bpd {val:.4f}, "
                      f"test bpd {bpd:.4f}", flush=True)  # fmt: skip
    last = evaluate(test_x)
    if best["state"] is not None:  # no finite validation figure: the last weights stand
        model.load_state_dict(best["state"])
    final = evaluate(test_x) if best["state"] is not None else last
    return {
        "model": name,
        "config": str(cfg),
        "parameters": sum(p.numel() for p in model.parameters()),
        "minutes": round(clock / 60, 2),
        "steps": steps,
        "ms_per_step": 1000 * clock / steps,
        "test_bpd": final,
        "best_val_bpd": best["val_bpd"],
        "selected_minutes": round(best["minutes"], 2),
        "selected_steps": best["steps"],
        "test_bpd_last": last,
        "curve": curve,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", choices=sorted(PRESETS))
    ap.add_argument("--models", nargs="+", default=["realnvp", "glow"])
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--checkpoints", type=int, default=6)
    ap.add_argument("--eval-size", type=int, default=1000)
    ap.add_argument("--val-every", type=float, default=30.0, help="seconds of training")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], help="model key=value (every model)")
    ap.add_argument("--tag", default="", help="suffix of the results file name")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = dgm.data.load(args.data)
    rows = []
    for name in args.models:
        cfg = with_overrides(PRESETS[args.data][name], args.set)
        rows.append(run(name, data, cfg, args))
    columns = ["model", "parameters", "minutes", "steps", "ms_per_step", "best_val_bpd",
               "selected_minutes", "test_bpd", "test_bpd_last"]  # fmt: skip
    report(
        f"flows_images_{args.data}{args.tag}",
        rows,
        columns,
        {"args": vars(args)},
    )


if __name__ == "__main__":
    main()
