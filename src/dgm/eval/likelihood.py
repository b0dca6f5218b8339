"""Likelihood metrics, the same for every family: NLL in nats and bits per dimension.

``nll`` asks the model for the best honest log-likelihood it has (:meth:`Model.log_likelihood`):
exact ``log_prob``, or a named lower bound (``elbo``, ``iwae_bound``); an energy model with an
intractable log Z (a :class:`~dgm.core.protocols.LikelihoodEstimator`) gets an AIS estimate
(:mod:`dgm.eval.ais`), whose error includes the error of log Z. Data preprocessing enters through
its log-determinant, so a continuous model's figure on dequantized discrete data is the
dequantization bound on the discrete NLL (Theis et al., 2016), never an unbounded density value.

What each figure is comes from :func:`likelihood_of` (a :class:`~dgm.core.likelihood.Likelihood`:
its kind, exact, bound, estimate, ...), and every label is made from it by
:func:`dgm.core.likelihood.describe`.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor

from dgm.core.errors import DgmError
from dgm.core.likelihood import Likelihood
from dgm.core.model import Model
from dgm.core.protocols import LikelihoodEstimator
from dgm.core.spec import inference_batch
from dgm.data.preprocess import Dequantize
from dgm.eval.ais import LogZEstimate, estimate_log_z, nll_stderr

__all__ = [
    "ais_estimated",
    "bits_per_dim",
    "has_likelihood",
    "likelihood_of",
    "log_likelihood",
    "nll",
]


def bits_per_dim(nll_nats: Tensor | float, num_dims: int) -> Tensor | float:
    """Convert a negative log-likelihood in nats per example to bits per dimension.

    ``bpd = nll / (D ln 2)``. One function, used by every family.

    >>> round(bits_per_dim(784 * math.log(2), 784), 6)
    1.0
    """
    return nll_nats / (num_dims * math.log(2.0))


def ais_estimated(model: Model) -> bool:
    """No exact likelihood and no bound, but an AIS estimate of log Z (an EBM on images)."""
    bound_or_exact = model.exact_likelihood or model.likelihood_bound
    return not bound_or_exact and isinstance(model, LikelihoodEstimator)


def has_likelihood(model: Model) -> bool:
    """The model gives a likelihood figure of some kind: exact, a bound or an AIS estimate."""
    return bool(model.exact_likelihood or model.likelihood_bound or ais_estimated(model))


def likelihood_of(
    model: Model,
    preprocessor: Any = None,
    *,
    bound_options: dict[str, Any] | None = None,
    log_z: LogZEstimate | None = None,
    chains: int = 256,
    n_temps: int = 200,
) -> Likelihood:
    """What :func:`log_likelihood` gives for this model and preprocessing, before computing it:
    the model's own :meth:`~dgm.core.model.Model.likelihood_info`, an AIS estimate for an energy
    model on data where log Z is intractable, and on dequantized discrete data the kind that
    figure takes (:meth:`Likelihood.dequantized`)."""
    if ais_estimated(model):
        if log_z is None:
            log_z = LogZEstimate(math.nan, math.nan, math.nan, chains, n_temps, math.nan)
        info = log_z.likelihood()
    else:
        info = model.likelihood_info(**(bound_options or {}))
    if isinstance(preprocessor, Dequantize):
        info = info.dequantized()
    return info


def log_likelihood(
    model: Model,
    x: Tensor,
    y: Tensor | None = None,
    *,
    preprocessor: Any = None,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    bound_options: dict[str, Any] | None = None,
    log_z: LogZEstimate | None = None,
) -> tuple[Tensor, Likelihood]:
    """Per-example log-likelihood of raw data ``x`` in nats, streamed in batches of
    ``batch_size`` (default: the model's :meth:`~dgm.core.model.Model.inference_batch`, which
    keeps each batch's feature maps small enough to be reused rather than page-faulted in anew).

    Returns ``(values (N,), likelihood)`` where ``likelihood`` (:func:`likelihood_of`) says what
    the values are. For an AIS-estimated model, ``log_z`` (:func:`dgm.eval.ais.estimate_log_z`)
    is shared by every call that passes it; without it, one is estimated with ``generator``.
    """
    if ais_estimated(model) and log_z is None:
        with model.inference():
            log_z = estimate_log_z(model, generator=generator)
    info = likelihood_of(model, preprocessor, bound_options=bound_options, log_z=log_z)
    if info.kind == "none":
        raise DgmError(
            f"model {model.name!r} has no likelihood (neither exact nor a bound); "
            "judge it by its samples with `dgm eval`"
        )
    out = []
    model_dtype = model.dtype
    if not batch_size:  # the model's own (a duck-typed model without one: by the example size)
        own = getattr(model, "inference_batch", None)
        batch_size = own() if callable(own) else inference_batch(math.prod(x.shape[1:]))
    with model.inference():
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size].to(model.device, model_dtype)  # (b, *event)
            yb = None if y is None else y[start : start + batch_size].to(model.device)
            log_det = torch.zeros(xb.shape[0], device=xb.device, dtype=model_dtype)
            if preprocessor is not None:
                xb, log_det = preprocessor(xb, generator=generator)
            if log_z is not None:
                with torch.enable_grad():  # an energy may need autograd inside; values detached
                    values = model.unnormalized_log_prob(xb).detach() - log_z.log_z
            else:
                values, _ = model.log_likelihood(xb, yb, **(bound_options or {}))
            out.append((values + log_det).to("cpu", torch.float64))
    if not out:
        return torch.zeros(0, dtype=torch.float64), info
    return torch.cat(out), info


def nll(
    model: Model,
    x: Tensor,
    y: Tensor | None = None,
    *,
    preprocessor: Any = None,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    bound_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Mean NLL in nats with its standard error, and bits per dimension.

    Returns ``{"nll", "nll_sem", "bpd", "likelihood", "likelihood_kind", "likelihood_info",
    "n"}``: ``likelihood`` is the figure's name with the words for log p (e.g.
    ``"iwae_bound(k=100): a lower bound on log p"``), ``likelihood_kind`` its kind and
    ``likelihood_info`` the fields of its :class:`~dgm.core.likelihood.Likelihood`. For a bound,
    ``nll`` is an upper bound on the true NLL. For an AIS estimate, ``nll_sem`` includes the
    standard error of log Z (shared by every example; ``nll_sem_data`` is the data's part alone)
    and the AIS diagnostics are added (``log_z``, ``log_z_stderr``, ``ess``, ``chains``,
    ``temps``, ``acceptance_rate`` and a one-sentence ``warning`` when the effective sample size
    is small).
    """
    log_z = None
    if ais_estimated(model):
        with model.inference():
            log_z = estimate_log_z(model, generator=generator)
    ll, info = log_likelihood(
        model,
        x,
        y,
        preprocessor=preprocessor,
        batch_size=batch_size,
        generator=generator,
        bound_options=bound_options,
        log_z=log_z,
    )
    n = ll.numel()
    mean = float(-ll.mean()) if n else float("nan")
    sem = float(ll.std() / math.sqrt(n)) if n > 1 else float("nan")
    num_dims = math.prod(x.shape[1:])
    out: dict[str, Any] = {
        "nll": mean,
        "nll_sem": sem,
        "bpd": float(bits_per_dim(mean, num_dims)),
        "likelihood": str(info),
        "likelihood_kind": info.kind,
        "likelihood_info": asdict(info),
        "n": n,
    }
    if log_z is not None:
        out |= {
            "nll_sem": nll_stderr(sem, log_z.stderr),
            "nll_sem_data": sem,
            "log_z": log_z.log_z,
            "log_z_stderr": log_z.stderr,
            "ess": log_z.ess,
            "chains": log_z.chains,
            "temps": log_z.n_temps,
            "acceptance_rate": log_z.acceptance_rate,
        }
        if log_z.warning():
            out["warning"] = log_z.warning()
    return out
