"""benchmarks/_kernels.py: what a step's floor replays (its products and Adam update, on copies)
and the FLOPs it counts, checked against the formula for a two-layer MLP; no timing is asserted."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def kernels(import_benchmark):
    return import_benchmark("_kernels")  # benchmarks/_kernels.py


def test_record_keeps_the_products_and_adam_and_counts_their_flops(kernels):
    torch.manual_seed(0)
    b, i, h, o = 5, 7, 11, 3
    net = torch.nn.Sequential(torch.nn.Linear(i, h), torch.nn.Tanh(), torch.nn.Linear(h, o))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, fused=True)
    x = torch.randn(b, i)

    def step() -> None:
        loss = net(x).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # Adam's state exists: the recorded step is a steady one
    k = kernels.record(step)
    # forward: two addmm; backward: the weight gradients of both layers and the input gradient
    # of the second (x needs none); one fused Adam update over all four tensors
    assert k.counts() == {"addmm": 2, "mm": 3, "_fused_adam_": 1}
    assert k.flops == 2 * b * (i * h + h * o) + 2 * b * (i * h) + 2 * 2 * b * (h * o)
    before = [p.detach().clone() for p in net.parameters()]
    assert k.floor_ms(repeats=2) > 0 and k.floor_ms(repeats=2, kinds=("product",)) > 0
    # the replay runs on copies: the model, its gradients and Adam's state are untouched
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), before))


def test_the_copies_keep_strides_and_values(kernels):
    w = torch.randn(4, 6).t()  # a transposed view, as F.linear hands its weight to addmm
    c = kernels._copy(w)
    assert c.stride() == w.stride() and torch.equal(c, w) and c.data_ptr() != w.data_ptr()
    k = kernels.record(lambda: torch.randn(3, 6) @ w)
    ((_, op, args, _),) = k.calls
    assert op.overloadpacket.__name__ == "mm" and args[1].stride() == w.stride()
    b = torch.randn(1, 6).expand(5, 6)  # a broadcast operand (stride 0), as autograd passes some
    c = kernels._copy(b)
    assert c.stride() == (0, 1) and torch.equal(c, b)
    assert c.untyped_storage().nbytes() == 6 * 4  # the span it reads, not 5 rows
