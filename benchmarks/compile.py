"""Does ``torch.compile`` pay on CPU? One training step (the model's loss, backward, fused Adam)
eager against compiled (``TrainConfig(compile=True)`` compiles ``model.loss`` the same way),
interleaved step by step so that load hits both alike; median and range of ``--repeats`` steps,
the compile time (the first three compiled steps less three eager ones), and the number of steps
after which compiling has paid for itself.

    OMP_NUM_THREADS=1 DGM_DATA=../../shared/data python compile.py --repeats 21
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import dgm.data
from _common import loadavg, report
from dgm.core.spec import DataSpec
from dgm.models import build

BINARY = DataSpec((784,), "discrete", levels=2)
#: name -> (model, its options, batch size, data)
CASES = {
    "vae": ("vae", {"prior": "standard"}, 100, "binarized-mnist"),
    "made 784-3000-784": ("made", {"hidden": [3000], "direct": True}, 100, "binarized-mnist"),
    "nsf 2-D": ("nsf", {}, 512, "8gaussians"),
    "flow-matching 2-D": ("flow-matching", {}, 256, "8gaussians"),
}


def make(name: str, compiled: bool) -> Callable[[int], None]:
    model, opts, batch, data = CASES[name]
    ds = dgm.data.load(data)
    x = ds.train.float()
    x = x.reshape(-1, 784) if data == "binarized-mnist" else x
    spec = BINARY if data == "binarized-mnist" else DataSpec((2,))
    torch.manual_seed(0)
    m = build(model, spec, **opts)
    with torch.no_grad():
        m.on_train_start(x[:batch])
    loss = torch.compile(m.loss, dynamic=False) if compiled else m.loss
    opt = torch.optim.Adam(m.parameters(), lr=1e-3, fused=True)
    n = x.shape[0] // batch

    def step(i: int) -> None:
        out = loss(x[(i % n) * batch : (i % n + 1) * batch])["loss"]
        opt.zero_grad(set_to_none=True)
        out.backward()
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.cases:
        steps, first = {}, {}
        for compiled in (False, True):
            steps[compiled] = make(name, compiled)
            t0 = time.perf_counter()
            for i in range(3):
                steps[compiled](i)
            first[compiled] = time.perf_counter() - t0
        ms: dict[bool, list[float]] = {False: [], True: []}
        for r in range(args.repeats):
            for compiled, step in steps.items():
                t0 = time.perf_counter()
                step(3 + r)
                ms[compiled].append(1000 * (time.perf_counter() - t0))
        eager, comp = statistics.median(ms[False]), statistics.median(ms[True])
        compile_s = first[True] - first[False]
        saving = eager - comp
        rows.append({
            "case": name,
            "ms_eager": round(eager, 2),
            "ms_eager_range": f"{min(ms[False]):.1f}-{max(ms[False]):.1f}",
            "ms_compiled": round(comp, 2),
            "ms_compiled_range": f"{min(ms[True]):.1f}-{max(ms[True]):.1f}",
            "speedup": round(eager / comp, 3),
            "compile_s": round(compile_s, 1),
            "pays_after_steps": round(1000 * compile_s / saving) if saving > 0 else None,
            "loadavg": loadavg(),
        })  # fmt: skip
        print(rows[-1], flush=True)
    cols = ["case", "ms_eager", "ms_eager_range", "ms_compiled", "ms_compiled_range", "speedup",
            "compile_s", "pays_after_steps", "loadavg"]  # fmt: skip
    report("compile", rows, cols, {"threads": args.threads, "repeats": args.repeats})


if __name__ == "__main__":
    main()
