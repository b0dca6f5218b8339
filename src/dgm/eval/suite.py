"""The metrics of :func:`dgm.eval.run.evaluate`, one small function per metric family.

Each takes a model and tensors (test examples, model samples, features, a density) and returns a
flat dict of the keys it reports; none knows about datasets or run directories.

* likelihood: :func:`nll_metrics` (exact, a named bound or an AIS estimate), :func:`ais_metrics`;
* analytic 2-D densities: :func:`kl_metrics`;
* two-sample tests: :func:`c2st_metrics`, :func:`mmd_metrics`;
* feature space: :func:`fid_metrics`, :func:`kid_metrics`, :func:`prd_metrics`;
* modes: :func:`mode_metrics`;
* anomaly detection: :func:`anomaly_metrics`.

:func:`model_samples`, :func:`model_log_density` and :func:`likelihood_scorer` turn a model and its
preprocessing into the tensors and functions these take.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from dgm.core.errors import DgmError
from dgm.core.model import Model
from dgm.data import Density2D
from dgm.eval.anomaly import auprc, auroc
from dgm.eval.density import grid_integral, kl_divergence, reverse_kl, total_variation
from dgm.eval.fid import fid, kid, precision_recall
from dgm.eval.likelihood import log_likelihood, nll
from dgm.eval.modes import mode_coverage
from dgm.eval.twosample import c2st, mmd

__all__ = [
    "ais_metrics",
    "anomaly_metrics",
    "c2st_metrics",
    "fid_metrics",
    "kid_metrics",
    "kl_metrics",
    "likelihood_scorer",
    "mmd_metrics",
    "mode_metrics",
    "model_log_density",
    "model_samples",
    "nll_metrics",
    "prd_metrics",
]

Scorer = Callable[[Tensor, Tensor | None], Tensor]


# -------------------------------------------------------------------------- model -> tensors
def model_samples(
    model: Model,
    pre: Any,
    n: int,
    seed: int,
    y: Tensor | None = None,
    batch: int = 1000,
    options: dict[str, Any] | None = None,
) -> Tensor:
    """``n`` model samples mapped back to raw data space, ``(n, *event)``, deterministic.
    A conditional model is given the labels ``y (n,)`` (those of the reference examples);
    ``options`` go to ``model.sample`` (fields of its ``SampleOptions``)."""
    options = options or {}
    if options:
        model.sample_config(options)  # an unknown option, or one the sampler ignores, is an error
    out = []
    batch = min(batch, model.sample_batch())
    with torch.random.fork_rng(devices=[]), model.inference():
        torch.manual_seed(seed)
        for start in range(0, n, batch):
            b = min(batch, n - start)
            try:
                if model.conditional and y is not None:
                    s = model.sample(b, y[start : start + b].to(model.device), **options)
                else:
                    s = model.sample(b, **options)
            except NotImplementedError:
                raise DgmError(f"model {model.name!r} cannot draw samples") from None
            out.append((pre.inverse(s) if pre is not None else s).to("cpu", torch.float32))
    return torch.cat(out)


def model_log_density(model: Model, pre: Any) -> Callable[[Tensor], Tensor]:
    """The model's exact log-density on raw data, ``(N, *event) -> (N,)`` float64 on the CPU:
    ``log q(pre(x)) + log |det d pre / dx|``."""

    def log_q(pts: Tensor) -> Tensor:
        with model.inference():
            xm = pts.to(model.device, model.dtype)
            ld = torch.zeros(xm.shape[0], dtype=model.dtype, device=model.device)
            if pre is not None:
                xm, ld = pre(xm)
            return (model.log_prob(xm) + ld).to("cpu", torch.float64)

    return log_q


def likelihood_scorer(
    model: Model, pre: Any, *, seed: int = 0, bound_options: dict[str, Any] | None = None
) -> Scorer:
    """``score(x, y) -> (N,)``: the model's best honest log-likelihood of raw data ``x``, each call
    with the same generator seed (a conditional model needs the labels ``y``)."""

    def score(data: Tensor, labels: Tensor | None) -> Tensor:
        if model.conditional and labels is None:
            raise DgmError("a conditional model needs labels to score shifted data")
        g = torch.Generator(device=model.device).manual_seed(seed)
        ll, _ = log_likelihood(
            model,
            data,
            labels if model.conditional else None,
            preprocessor=pre,
            generator=g,
            bound_options=bound_options,
        )
        return ll

    return score


# ------------------------------------------------------------------------------- likelihood
def nll_metrics(
    model: Model,
    x: Tensor,
    y: Tensor | None = None,
    pre: Any = None,
    *,
    seed: int = 0,
    bound_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Test NLL in nats and bits/dim of raw data ``x`` (exact, the model's named bound, or an
    AIS estimate), with what the figure is: ``likelihood`` (its name and the words for log p),
    ``likelihood_kind`` and ``likelihood_info`` (:class:`~dgm.core.likelihood.Likelihood`)."""
    g = torch.Generator(device=model.device).manual_seed(seed)
    yc = y if model.conditional else None
    m = nll(model, x, yc, preprocessor=pre, generator=g, bound_options=bound_options)
    out = {
        "test_nll": m["nll"],
        "test_nll_sem": m["nll_sem"],
        "test_bpd": m["bpd"],
        "likelihood": m["likelihood"],
        "likelihood_kind": m["likelihood_kind"],
        "likelihood_info": m["likelihood_info"],
    }
    if "log_z" in m:  # an AIS estimate: its diagnostics
        out |= {f"ais_{k}": m[k] for k in ("log_z", "log_z_stderr", "ess", "chains", "temps")}
        out["test_nll_sem_data"] = m["nll_sem_data"]
        if "warning" in m:
            out["ais_warning"] = m["warning"]
    return out


def ais_metrics(model: Model, pre: Any, x: Tensor, seed: int) -> dict[str, Any]:
    """Test NLL from an AIS estimate of log Z (:func:`dgm.eval.ais.estimate_log_z`): the keys of
    :func:`nll_metrics`, whose ``test_nll_sem`` includes the error of log Z, and the AIS
    diagnostics ``ais_log_z``, ``ais_log_z_stderr``, ``ais_ess`` (with ``ais_warning`` when the
    effective sample size is below 10% of the chains)."""
    return nll_metrics(model, x, None, pre, seed=seed)


# ------------------------------------------------------------------ analytic 2-D densities
def kl_metrics(
    density: Density2D,
    log_q: Callable[[Tensor], Tensor],
    x: Tensor,
    samples: Tensor,
    grid_size: int,
) -> dict[str, Any]:
    """Forward KL(true || model) on test data ``x``, reverse KL(model || true) on model
    ``samples``, total variation and the grid integral of the model density on the density's box
    padded by a quarter of its size on each side."""

    def log_p(p: Tensor) -> Tensor:
        return density.log_prob(p.double())

    fwd = kl_divergence(log_p, log_q, x)
    rev = reverse_kl(log_p, log_q, samples.double())
    xmin, xmax, ymin, ymax = density.bounds
    pad_x, pad_y = 0.25 * (xmax - xmin), 0.25 * (ymax - ymin)
    box = (xmin - pad_x, xmax + pad_x, ymin - pad_y, ymax + pad_y)
    return {
        "kl": fwd["kl"],
        "kl_sem": fwd["kl_sem"],
        "kl_n": fwd["n"],
        "reverse_kl": rev["kl"],
        "reverse_kl_sem": rev["kl_sem"],
        "reverse_kl_outside": rev["outside"],
        "tv": total_variation(log_p, log_q, box, grid_size),
        "grid_integral": grid_integral(log_q, box, grid_size),
        "grid_bounds": list(box),
    }


# ------------------------------------------------------------------------ two-sample tests
def c2st_metrics(
    ref: Tensor,
    samples: Tensor,
    *,
    classifier: str = "mlp",
    features: Callable[[Tensor], Tensor] | None = None,
    seed: int = 0,
    space: str = "raw values",
) -> dict[str, Any]:
    """Classifier two-sample test of model ``samples`` against test examples ``ref``."""
    r = c2st(ref, samples, classifier=classifier, features=features, seed=seed)
    return {
        "c2st_accuracy": r.statistic,
        "c2st_p_value": r.p_value,
        "c2st_classifier": classifier,
        "c2st_space": space,
    }


def mmd_metrics(
    ref: Tensor,
    samples: Tensor,
    *,
    features: Callable[[Tensor], Tensor] | None = None,
    seed: int = 0,
    space: str = "raw values",
) -> dict[str, Any]:
    """MMD^2 with a permutation p-value, model ``samples`` against test examples ``ref``.
    ``mmd2`` is the unbiased estimate: it can be negative when the distributions are close."""
    r = mmd(ref, samples, features=features, seed=seed)
    return {
        "mmd2": r.statistic,
        "mmd_p_value": r.p_value,
        "mmd_bandwidth": r.details["bandwidths"][0],
        "mmd_space": space,
    }


# --------------------------------------------------------------------------- feature space
def fid_metrics(fr: Tensor, fs: Tensor, space: str = "features") -> dict[str, Any]:
    """Frechet distance between features of test examples ``fr (n, F)`` and samples ``fs``.
    In ``space="raw values"`` (vector data, no feature network) it is only the Frechet distance
    between two Gaussians fitted to the points, not a feature-space score: reports mark it."""
    return {"fid": fid(fr, fs), "fid_space": space}


def kid_metrics(
    fr: Tensor, fs: Tensor, *, seed: int = 0, space: str = "features"
) -> dict[str, Any]:
    """KID and its standard deviation over subsets of half the samples (at most 1000): subsets
    as large as the sets would all be the same set. KID is an unbiased estimate of MMD^2 and can
    be negative when the two sets are close (its mean over many draws is >= 0); ``space`` as for
    :func:`fid_metrics`."""
    subset_size = min(1000, max(2, fr.shape[0] // 2))
    mean, std = kid(fr, fs, subset_size=subset_size, seed=seed)
    return {"kid": mean, "kid_std": std, "kid_space": space}


def prd_metrics(fr: Tensor, fs: Tensor) -> dict[str, Any]:
    """Precision and recall with k-NN manifolds (k = 3)."""
    return {k: v for k, v in precision_recall(fr, fs).items() if k != "k"}


# ----------------------------------------------------------------------------------- modes
def mode_metrics(samples: Tensor, modes: Tensor, mode_std: float) -> dict[str, Any]:
    """Modes captured, the high-quality fraction and KL(mode histogram || uniform) of samples
    ``(n, 2)`` against mode centres ``(K, 2)`` of standard deviation ``mode_std``."""
    r = mode_coverage(samples.double(), modes, mode_std)
    out = {
        "modes_captured": r["modes_captured"],
        "modes_total": r["modes_total"],
        "modes_high_quality": r["high_quality"],
        "modes_kl": r["kl_uniform"],
    }
    if not r["separated"]:  # a ring of samples through the modes would score about as high
        out["modes_high_quality"] = None
        out["modes_note"] = (
            f"high-quality fraction withheld: the modes' 3-std disks cover {r['baseline']:.0%} "
            "of the way between neighbouring modes, so samples smeared between the modes would "
            "score as high; judge by kl, c2st or mmd"
        )
    return out


# ---------------------------------------------------------------------------------- anomaly
def anomaly_metrics(
    score: Scorer,
    x: Tensor,
    y: Tensor | None,
    shifts: dict[str, tuple[Tensor, Tensor | None]],
) -> dict[str, Any]:
    """AUROC and AUPRC of the log-likelihood ``score``, examples ``x`` (labels ``y``) against each
    shifted set ``name -> (x_shifted, labels)``; anomalies are the positive class of AUPRC."""
    out: dict[str, Any] = {"anomaly_n": x.shape[0]}
    ll_in = score(x, y)
    for name, (xs, ys) in shifts.items():
        ll_out = score(xs, ys)
        out[f"anomaly_{name}_auroc"] = auroc(ll_in, ll_out)
        out[f"anomaly_{name}_auprc"] = auprc(-ll_out, -ll_in)
    return out
