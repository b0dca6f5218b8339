"""The Gated PixelCNN's gate ``tanh(t) * sigmoid(s)`` as dgm computes it (one ``sigmoid`` of
the map with its first half doubled: ``(2 sigmoid(2t) - 1) sigmoid(s)``) against the two-function
form with ``torch.tanh``: the kernel alone, then the training step of the binarized-MNIST recipe.

``torch.tanh`` on CPU float tensors goes through MKL's vector math library, slow on AMD
processors; the file records, per element on one thread, ``tanh`` and ``sigmoid`` on a
``(512, 256)`` tensor. Each row times the same work both ways, interleaved ``--repeats`` times
so that load on the shared cores hits both alike:

* the gate on the recipe's ``(32, 48, 28, 28)`` channels-last map, forward alone and forward
  plus backward (the output's gradient in its own layout, as in the model);
* one training step (``model.loss``, backward, fused Adam) of the Gated PixelCNN at the
  binarized-MNIST recipe (24 channels, 20 layers, head 64, batch 32, float32), the model built
  once and its gate swapped.

The process's heap is set as the ``dgm`` command sets it (:mod:`dgm.cli.malloc`). Figures:
medians of milliseconds (CPU time of the process with one thread; wall-clock time with more,
whose CPU time counts the threads' waiting), and the speed-up torch / dgm.

    python gate.py [--threads 1 2] [--repeats 7]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn

import dgm.models.autoregressive.gated_pixelcnn as gated_module
from _common import median, report
from dgm.cli import malloc
from dgm.core.spec import DataSpec
from dgm.models import build

#: dgm's gate (the module's name is swapped below)
gate = gated_module.gate


def paper_gate(a: torch.Tensor) -> torch.Tensor:
    t, s = a.chunk(2, dim=1)
    return torch.tanh(t) * torch.sigmoid(s)


def use(which: str) -> None:
    """The Gated PixelCNN computes its gate the two-function way (``"torch"``) or dgm's."""
    gated_module.gate = paper_gate if which == "torch" else gate


def timed(fn: Callable[[], object], n: int, threads: int) -> float:
    """Milliseconds per call of ``fn`` over ``n`` calls after one warm-up call: CPU time with
    one thread, wall-clock time with more."""
    fn()
    clock = time.process_time if threads == 1 else time.perf_counter
    t0 = clock()
    for _ in range(n):
        fn()
    return 1000 * (clock() - t0) / n


def kernels() -> dict[str, tuple[Callable[[str], Callable[[], object]], int]]:
    """name -> (which -> a call of the kernel, calls per timing)."""
    a = torch.randn(32, 48, 28, 28, generator=torch.Generator().manual_seed(1))
    a = a.contiguous(memory_format=torch.channels_last)
    ag = a.clone().requires_grad_()
    fns = {"torch": paper_gate, "dgm": gate}

    def grad(f, v):  # the gradient of the output in the output's layout (channels-last maps)
        g = torch.randn_like(f(v).detach())
        return lambda: torch.autograd.grad(f(v), v, g)

    return {
        "gate (32, 48, 28, 28) forward": (lambda w: lambda: fns[w](a), 20),
        "gate (32, 48, 28, 28) forward+backward": (lambda w: grad(fns[w], ag), 20),
    }


def models() -> dict[str, tuple[nn.Module, Callable[[], object], int]]:
    """name -> (model, a call of its training step, calls per timing)."""
    torch.manual_seed(0)
    model = build("gated-pixelcnn", DataSpec((1, 28, 28), "discrete", levels=2),
                  width=24, depth=20, head=64)  # fmt: skip
    images = torch.randint(0, 2, (32, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)

    def step() -> None:
        loss = model.loss(images.float())["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return {"gated-pixelcnn step, MNIST recipe (24x20, batch 32)": (model, step, 3)}


def per_element_ns() -> dict[str, float]:
    """Nanoseconds per element of ``torch.tanh`` and ``torch.sigmoid`` on a ``(512, 256)`` tensor,
    one thread, median of 7 timings of 200 calls."""
    torch.set_num_threads(1)
    x = torch.randn(512, 256, generator=torch.Generator().manual_seed(0))
    out = {}
    for name, f in (("tanh", torch.tanh), ("sigmoid", torch.sigmoid)):
        ms = [timed(lambda f=f: f(x), 200, 1) for _ in range(7)]
        out[name] = round(1e6 * median(ms) / x.numel(), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--name", default="gate", help="results file name (without .json)")
    args = ap.parse_args()
    malloc.tune()  # the heap as the dgm command sets it: feature maps reused, not page-faulted anew
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        work = {k: (None, *v) for k, v in kernels().items()} | models()
        for name, (model, what, n) in work.items():
            runs: dict[str, list[float]] = {"torch": [], "dgm": []}
            for _ in range(args.repeats):
                for which in runs:
                    if model is None:
                        fn = what(which)
                    else:
                        use(which)
                        fn = what
                    runs[which].append(round(timed(fn, n, threads), 3))
            t, d = median(runs["torch"]), median(runs["dgm"])
            rows.append({"work": name, "threads": threads, "torch ms": round(t, 3),
                         "dgm ms": round(d, 3), "speed-up": round(t / d, 2),
                         "runs": runs})  # fmt: skip
            print(rows[-1]["work"], threads, rows[-1]["speed-up"], flush=True)
    columns = ["work", "threads", "torch ms", "dgm ms", "speed-up"]
    extra = {"repeats": args.repeats, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
             "ns_per_element": per_element_ns()}  # fmt: skip
    report(args.name, rows, columns, extra)


if __name__ == "__main__":
    main()
