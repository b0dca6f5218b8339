"""Data-parallel training with ``torch.distributed``, launched by ``torchrun``.

Every rank holds the whole model and the whole (in-memory) dataset and draws the same global batch
in the same order; rank ``r`` of ``W`` trains on slice ``r`` of it, and gradients are averaged
across ranks with one all-reduce of a flat buffer per optimizer step. With equal slices this is
the same update as one process on the global batch, up to floating-point summation order. Only
rank 0 writes files. With one process (no ``WORLD_SIZE`` in the environment) every function here
is a no-op.

Launch: ``torchrun --nproc_per_node=2 -m dgm train nsf --data 8gaussians --out runs/ddp``.
Several machines: the same command on each with torchrun's rendezvous flags
(``--nnodes=2 --node_rank=R --rdzv_backend=c10d --rdzv_endpoint=HOST:PORT``).
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "all_reduce_grads",
    "all_true",
    "barrier",
    "broadcast_state",
    "is_main",
    "max_over_ranks",
    "mean_over_ranks",
    "rank",
    "setup",
    "teardown",
    "world_size",
]


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def setup(device: str = "cpu") -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes in the environment, once.

    Returns ``(rank, world_size)``; ``(0, 1)`` when not launched by torchrun.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
        if str(device).startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return rank(), world_size()


def teardown() -> None:
    """Leave the process group together: wait for every rank, then destroy it.

    A rank that exits while another still holds the group (rank 0 scoring and plotting at the
    end of a run) tears the shared connections down under it, and gloo aborts the other process
    at exit (SIGABRT). Every rank calls this once its work is done.
    """
    if dist.is_available() and dist.is_initialized():
        if dist.get_backend() == "gloo":
            # rank 0's end of run (scoring, plots) may outlast the group's default 30 minutes
            dist.monitored_barrier(timeout=timedelta(hours=24))
        else:
            dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def all_true(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True when ``flag`` holds on every rank (so all ranks take the same branch)."""
    if world_size() == 1:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def all_reduce_grads(params: list[torch.nn.Parameter]) -> None:
    """Average the gradients of ``params`` across ranks (one flat all-reduce)."""
    w = world_size()
    if w == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])  # (P,)
    dist.all_reduce(flat)
    flat /= w
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        if p.grad is None:
            p.grad = flat[offset : offset + n].view_as(p).clone()
        else:
            p.grad.copy_(flat[offset : offset + n].view_as(p))
        offset += n


def max_over_ranks(value: float, device: torch.device | str = "cpu") -> float:
    """The largest of every rank's ``value`` (itself with one process)."""
    if world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def mean_over_ranks(
    values: dict[str, float], device: torch.device | str = "cpu"
) -> dict[str, float]:
    """Average logged scalars across ranks."""
    if world_size() == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= world_size()
    return dict(zip(keys, t.tolist()))


def broadcast_state(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    if world_size() == 1:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


def shard(x: Tensor, r: int, w: int) -> Tensor:
    """Slice ``r`` of ``w`` equal slices of a global batch along dim 0."""
    n = x.shape[0] // w
    return x[r * n : (r + 1) * n]
