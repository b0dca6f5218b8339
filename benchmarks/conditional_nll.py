"""Class-conditional against unconditional test NLL, exact, for MADE and the Gated PixelCNN on MNIST
binarized with a fixed threshold (``--preprocess binarize-static``: MNIST's own labels go with the
binary images), the same model, data, seed and time budget for both (issue 27).

``log p(x | y)`` of the conditional model and ``log p(x)`` of the unconditional one on the same
test images; the gap ``NLL(x) - NLL(x | y)`` in nats is at most ``log 10 = 2.30`` for the true
distributions plus what knowing the class helps the model fit (it estimates ``I(x; y)``).

    OMP_NUM_THREADS=1 python benchmarks/conditional_nll.py --models made gated-pixelcnn --minutes 10
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

import dgm.data
from _common import parse_sets, report
from dgm.api import load_run, train
from dgm.eval.likelihood import nll

PREPROCESS = {"name": "binarize", "mode": "static", "levels": 256}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["made", "gated-pixelcnn"])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument(
        "--test-size", type=int, default=10000, help="test images (spread over the set)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], help="[MODEL.]KEY=VALUE model option")
    ap.add_argument("--train-set", action="append", default=[], help="[MODEL.]KEY=VALUE")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = dgm.data.load("mnist")
    x_test, y_test = data.split("test")
    idx = torch.linspace(0, x_test.shape[0] - 1, min(args.test_size, x_test.shape[0])).long()
    x_test, y_test = x_test[idx], y_test[idx]
    rows = []
    for name in args.models:
        pair = {}
        for conditional in (False, True):
            model_cfg = {**parse_sets(args.set, name), "conditional": conditional}
            train_cfg = parse_sets(args.train_set, name)
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / name
                t0 = time.perf_counter()
                train(name, data, out, model_config=model_cfg, preprocess=PREPROCESS,
                      max_minutes=args.minutes, seed=args.seed, progress=False,
                      checkpoint_every=0, **train_cfg)  # fmt: skip
                wall = time.perf_counter() - t0
                steps = json.loads((out / "summary.json").read_text()).get("steps")
                run = load_run(out)
                with run.model.inference():
                    res = nll(run.model, x_test, y_test if conditional else None,
                              preprocessor=run.preprocessor, batch_size=200)  # fmt: skip
            pair[conditional] = res
            rows.append({
                "model": name,
                "conditional": conditional,
                "figure": "-log p(x given y)" if conditional else "-log p(x)",
                "test_nll_nats": round(res["nll"], 3),
                "nll_sem": round(res["nll_sem"], 3),
                "likelihood": res["likelihood"],
                "steps": steps,
                "minutes": args.minutes,
                "wall_minutes": round(wall / 60, 2),
                "test_images": int(res["n"]),
                "model_config": model_cfg,
                "train_config": train_cfg,
            })  # fmt: skip
            print(rows[-1], flush=True)
        gap = pair[False]["nll"] - pair[True]["nll"]
        rows.append({"model": name, "conditional": "gap", "figure": "NLL(x) - NLL(x given y)",
                     "test_nll_nats": round(gap, 3)})  # fmt: skip
        print(rows[-1], flush=True)
    cols = ["model", "conditional", "figure", "test_nll_nats", "nll_sem", "steps", "minutes",
            "test_images"]  # fmt: skip
    report(f"conditional_nll_mnist_static{args.tag}", rows, cols,
           {"preprocess": PREPROCESS, "seed": args.seed, "threads": args.threads})  # fmt: skip


if __name__ == "__main__":
    main()
