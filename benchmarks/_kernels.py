"""The floor of a training step: its matrix products and optimizer update alone, replayed.

Two implementations of the same model doing the same float32 arithmetic call the same oneDNN /
MKL kernels for their matrix products and convolutions, and the same fused Adam update. Whatever
else a step does (activations, reshapes, autograd's bookkeeping, Python) is where one can beat
the other. :func:`record` runs one step under a ``TorchDispatchMode`` that keeps every product
(``mm``, ``addmm``, ``bmm``, ``baddbmm``, ``convolution``, ``convolution_backward``) and every
optimizer kernel (``_fused_adam_``, ``_fused_adamw_``) with copies of its arguments (same shapes,
strides and values), and counts the products' FLOPs by ``FlopCounterMode``'s formulas (the same
totals; the mode itself cannot be used, its module hooks break ``autograd.grad`` inside a step,
which the EBM samplers call). :meth:`Kernels.floor_ms` replays those calls back to back, nothing else, and times them: no implementation that does the
same products in float32 with these kernels takes less, so ``peer ms / floor ms`` of one's own
step is the largest speed-up over a peer that the step could reach by any rewrite that keeps its
arithmetic.

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
    """A tensor with the same shape, strides, dtype and values (views stay views-shaped)."""
    if not isinstance(v, torch.Tensor):
        return v
    out = torch.empty_strided(v.shape, v.stride(), dtype=v.dtype, device=v.device)
    return out.copy_(v.detach())


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
        """Median over ``repeats`` of the wall time of replaying the calls of ``kinds``, in ms
        (after one warm-up replay)."""
        calls = [(op, a, kw) for kind, op, a, kw in self.calls if kind in kinds]

        def replay() -> None:
            for op, a, kw in calls:
                op(*a, **kw)

        with torch.no_grad():
            replay()
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                replay()
                times.append(1000 * (time.perf_counter() - t0))
        return sorted(times)[len(times) // 2]


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
