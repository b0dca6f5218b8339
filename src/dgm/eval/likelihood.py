"""Likelihood metrics, the same for every family: NLL in nats and bits per dimension.

``nll`` asks the model for the best honest log-likelihood it has (:meth:`Model.log_likelihood`):
exact ``log_prob``, or a named lower bound (``elbo``, ``iwae_bound``). Data preprocessing enters
through its log-determinant, so a continuous model's figure on discrete data is the dequantization
bound on the discrete NLL (Theis et al., 2016), never an unbounded density value.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from dgm.core.model import Model

__all__ = ["bits_per_dim", "log_likelihood", "nll"]


def bits_per_dim(nll_nats: Tensor | float, num_dims: int) -> Tensor | float:
    """Convert a negative log-likelihood in nats per example to bits per dimension.

    ``bpd = nll / (D ln 2)``. One function, used by every family.

    >>> round(bits_per_dim(784 * math.log(2), 784), 6)
    1.0
    """
    return nll_nats / (num_dims * math.log(2.0))


def log_likelihood(
    model: Model,
    x: Tensor,
    y: Tensor | None = None,
    *,
    preprocessor: Any = None,
    batch_size: int = 1000,
    generator: torch.Generator | None = None,
    bound_options: dict[str, Any] | None = None,
) -> tuple[Tensor, str]:
    """Per-example log-likelihood of raw data ``x`` in nats, streamed in batches.

    Returns ``(values (N,), name)`` where ``name`` says what the values are: ``"log_prob"`` (exact),
    a bound's name, and ``" (dequantization bound)"`` appended when stochastic preprocessing makes
    the figure a lower bound on the discrete log-likelihood.
    """
    out = []
    name = ""
    model_dtype = model.dtype
    with model.inference():
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size].to(model.device, model_dtype)  # (b, *event)
            yb = None if y is None else y[start : start + batch_size].to(model.device)
            log_det = torch.zeros(xb.shape[0], device=xb.device, dtype=model_dtype)
            if preprocessor is not None:
                xb, log_det = preprocessor(xb, generator=generator)
            values, name = model.log_likelihood(xb, yb, **(bound_options or {}))
            out.append((values + log_det).to("cpu", torch.float64))
    note = getattr(preprocessor, "likelihood_note", None) if preprocessor is not None else None
    if note:
        name += f" ({note})"
    if not out:
        return torch.zeros(0, dtype=torch.float64), name
    return torch.cat(out), name


def nll(
    model: Model,
    x: Tensor,
    y: Tensor | None = None,
    *,
    preprocessor: Any = None,
    batch_size: int = 1000,
    generator: torch.Generator | None = None,
    bound_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Mean NLL in nats with its standard error, and bits per dimension.

    Returns ``{"nll", "nll_sem", "bpd", "likelihood", "n"}``; for a bound, ``nll`` is an upper
    bound on the true NLL.
    """
    ll, name = log_likelihood(
        model,
        x,
        y,
        preprocessor=preprocessor,
        batch_size=batch_size,
        generator=generator,
        bound_options=bound_options,
    )
    n = ll.numel()
    mean = float(-ll.mean()) if n else float("nan")
    sem = float(ll.std() / math.sqrt(n)) if n > 1 else float("nan")
    num_dims = math.prod(x.shape[1:])
    return {
        "nll": mean,
        "nll_sem": sem,
        "bpd": float(bits_per_dim(mean, num_dims)),
        "likelihood": name,
        "n": n,
    }
