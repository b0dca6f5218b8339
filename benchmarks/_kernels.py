"""The floor of a training step: its matrix products and optimizer update, each timed alone.

Two implementations of the same model doing the same float32 arithmetic call the same oneDNN /
MKL kernels for their matrix products and convolutions, and the same fused Adam update. Whatever
else a step does (activations, reshapes, autograd's bookkeeping, Python) is where one can beat
the other. :func:`record` runs one step under a ``TorchDispatchMode`` that keeps every product
(``mm``, ``addmm``, ``bmm``, ``baddbmm``, ``convolution``, ``convolution_backward``) and every
optimizer kernel (``_fused_adam_``, ``_fused_adamw_``) with copies of its arguments (same shapes,
strides and values), and counts the products' FLOPs by ``FlopCounterMode``'s formulas (the same
totals; the mode itself cannot be used, its module hooks break ``autograd.grad`` inside a step,
which the EBM samplers call). :meth:`Kernels.floor_ms` times each of those calls alone, warm,
and adds the times: an implementation that does the same products in float32 with these
kernels does not take less, so ``peer ms / floor ms`` of one's own step bounds the speed-up over
a peer that any rewrite keeping the step's arithmetic could reach.

    >>> k = record(lambda: torch.randn(8, 4) @ torch.randn(4, 3))
    >>> k.counts()
    {'mm': 1}
    >>> k.flops
    192
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import flop_registry

__all__ = ["Kernels", "record"]

aten = torch.ops.aten

#: the overload packets counted as products and as the optimizer update
PRODUCTS = {aten.mm, aten.addmm, aten.bmm, aten.baddbmm, aten.convolution,
            aten.convolution_backward}  # fmt: skip
OPTIMIZER = {aten._fused_adam_, aten._fused_adamw_}


def _copy(v: Any) -> Any:
    """A tensor with the same shape, strides, dtype and values: the span of storage the tensor
    reads is copied whole and viewed with its strides, so broadcast (stride 0) and transposed
    arguments reach the kernel as they did."""
    if not isinstance(v, torch.Tensor):
        return v
    v = v.detach()
    if v.numel() == 0:
        return torch.empty_strided(v.shape, v.stride(), dtype=v.dtype, device=v.device)
    span = 1 + sum((n - 1) * st for n, st in zip(v.shape, v.stride()))
    flat = v.as_strided((span,), (1,)).clone()  # from the same storage offset
    return flat.as_strided(v.shape, v.stride())


@dataclass
class Kernels:
    """The recorded calls of one step: ``(kind, op, args, kwargs)`` with copied tensors."""

    calls: list[tuple[str, Any, tuple, dict]] = field(default_factory=list)
    flops: int = 0

    def counts(self) -> dict[str, int]:
        """Calls by operator name, e.g. ``{'mm': 4, 'addmm': 2, '_fused_adam_': 1}``."""
        return dict(Counter(op.overloadpacket.__name__ for _, op, _, _ in self.calls))

    def floor_ms(self, repeats: int = 5, kinds: tuple[str, ...] = ("product", "optimizer"),
                 ) -> float:  # fmt: skip
        """The sum over the calls of ``kinds`` of each call's median wall time in ms, each call
        run ``repeats`` times in a row after a warm-up (its operands warm in cache: the most
        favourable case, so the floor errs low). Replaying the calls back to back instead read
        MADE's two weight-gradient products 1.7x slower than alone for dgm and 1.1x for its peer
        (the same shapes, strides and FLOPs): what runs before a kernel moves its time, and a
        floor should not depend on that."""
        total = 0.0
        with torch.no_grad():
            for kind, op, a, kw in self.calls:
                if kind not in kinds:
                    continue
                op(*a, **kw)  # warm-up
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    op(*a, **kw)
                    times.append(1000 * (time.perf_counter() - t0))
                total += sorted(times)[len(times) // 2]
        return total


class _Recorder(TorchDispatchMode):
    def __init__(self, out: Kernels) -> None:
        super().__init__()
        self.out = out

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        kind = "product" if packet in PRODUCTS else "optimizer" if packet in OPTIMIZER else None
        if kind is None:
            return func(*args, **kwargs)
        # copied before the call: in-place kernels see their inputs
        self.out.calls.append((kind, func, tree_map(_copy, args), tree_map(_copy, kwargs)))
        out = func(*args, **kwargs)
        if packet in flop_registry:
            self.out.flops += flop_registry[packet](*args, **kwargs, out_val=out)
        return out


def record(step: Callable[[], Any]) -> Kernels:
    """Run ``step()`` once, recording its products and optimizer kernels and counting the
    products' FLOPs (by ``torch.utils.flop_counter``'s formulas, forward and backward)."""
    out = Kernels()
    with _Recorder(out):
        step()
    return out
