"""Evaluate a trained model on its dataset: every metric that applies, as one JSON-able dict.

=========  ====================================================================  ==================
metric     what                                                                  applies when
=========  ====================================================================  ==================
nll        test NLL in nats and bits/dim (exact or the model's named bound)      the model has a
                                                                                 likelihood
kl         forward KL(true || model), reverse KL(model || true), total           analytic 2-D data
           variation and the grid integral of the model density                  and exact log_prob
c2st       classifier two-sample test, model samples vs test data                always
mmd        MMD^2 (Gaussian kernel, median bandwidth) with a permutation p-value  always
fid        Frechet distance in feature space (not Inception: see dgm.eval.fid)   features exist
kid        kernel distance (unbiased, polynomial kernel)                         features exist
prd        precision / recall with k-NN manifolds                                features exist
modes      modes captured, high-quality fraction, KL to uniform                  data with modes
anomaly    AUROC / AUPRC of the log-likelihood, test data vs shifted data        the model has a
                                                                                 likelihood
           or, for a model with an intractable log Z (a ``LikelihoodEstimator``, or offers an
           e.g. an EBM on images), an annealed-importance-sampling               AIS estimate
           estimate (:mod:`dgm.eval.ais`) under keys ``ais_nll_estimate...``:
           an estimate, neither exact nor a bound
=========  ====================================================================  ==================

Features are the raw values for vector data (e.g. 2-D points) and, for images, those of a small
classifier trained on the dataset's labels (:mod:`dgm.eval.features`); image data without labels
has none. Anomaly detection scores 1000 test examples and the same examples shifted: Gaussian
noise (vector data: half the data's std; images: 10% of the value range, rounded), pixel flips
(binary images, p = 0.05), FGSM at 10% of the range against the feature classifier (images with
labels), and another digits dataset resized to this one (``digits`` <-> ``mnist``).

Asking for a metric that does not apply raises a one-sentence :class:`DgmError`; by
default every metric that applies is computed and the others are listed under ``"skipped"`` with
the reason.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from dgm.core.errors import DgmError
from dgm.core.model import Model
from dgm.core.protocols import LikelihoodEstimator
from dgm.eval import anomaly as anom
from dgm.eval.density import grid_integral, kl_divergence, reverse_kl, total_variation
from dgm.eval.fid import fid, kid, precision_recall
from dgm.eval.likelihood import log_likelihood, nll
from dgm.eval.modes import mode_coverage
from dgm.eval.twosample import c2st, mmd

__all__ = ["METRICS", "evaluate", "format_table", "not_applicable"]

METRICS = ("nll", "kl", "c2st", "mmd", "fid", "kid", "prd", "modes", "anomaly")
DEFAULT_SAMPLES = 2000
#: test examples the likelihood anomaly detector scores (and as many of each shifted set)...
ANOMALY_SIZE = 1000
#: ... and for a model whose likelihood needs autograd (an ODE trace): 200 against 200 still
#: give the AUROC a standard error of at most about 0.03
ANOMALY_SIZE_COSTLY = 200


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _has_likelihood(model: Model) -> bool:
    return bool(model.exact_likelihood or model.likelihood_bound)


def _ais_estimate(model: Model) -> bool:
    """No likelihood, but an AIS estimate of log Z (an energy-based model on images)."""
    return not _has_likelihood(model) and isinstance(model, LikelihoodEstimator)


def not_applicable(model: Model, dataset: Any, metric: str) -> str | None:
    """Why ``metric`` does not apply to this model and data (one sentence), or ``None``."""
    density = getattr(dataset, "density", None)
    if metric not in METRICS:
        raise DgmError(f"unknown metric {metric!r}; the metrics are: {', '.join(METRICS)}")
    if metric == "nll" and _ais_estimate(model):
        return None
    if metric in ("nll", "anomaly") and not _has_likelihood(model):
        return (
            f"{metric} needs a likelihood, but model {model.name!r} has neither an exact "
            "log_prob nor a bound; judge it by its samples (c2st, mmd, fid)"
        )
    if metric == "kl":
        if density is None:
            return (
                f"kl needs data with a known density (the analytic 2-D datasets), and "
                f"{dataset.name!r} has none; use nll instead"
            )
        if not density.exact_log_prob:
            return f"kl needs a closed-form density, and {dataset.name!r} has none; use c2st or mmd"
        if not model.exact_likelihood:
            return (
                f"kl needs the model's exact log_prob, and model {model.name!r} has "
                f"{'only the bound ' + repr(model.likelihood_bound) if model.likelihood_bound else 'no likelihood'}"
            )
    if metric in ("fid", "kid", "prd") and dataset.spec.is_image:
        if dataset.spec.num_classes is None and dataset.name not in ("binarized-mnist",):
            return (
                f"{metric} needs features, which dgm learns from class labels, and "
                f"{dataset.name!r} has none; pass features= from Python"
            )
    if metric == "modes" and getattr(density, "modes", None) is None:
        return (
            f"modes needs data made of separated modes (ring8, grid25, 8gaussians), and "
            f"{dataset.name!r} is not"
        )
    return None


def _samples(
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
    out = []
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


def _log_q(model: Model, pre: Any) -> Callable[[Tensor], Tensor]:
    def log_q(pts: Tensor) -> Tensor:
        with model.inference():
            xm = pts.to(model.device, model.dtype)
            ld = torch.zeros(xm.shape[0], dtype=model.dtype, device=model.device)
            if pre is not None:
                xm, ld = pre(xm)
            return (model.log_prob(xm) + ld).to("cpu", torch.float64)

    return log_q


def _kl_metrics(
    model: Model, dataset: Any, pre: Any, x: Tensor, samples: Tensor, grid_size: int
) -> dict[str, Any]:
    density = dataset.density
    log_q = _log_q(model, pre)

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


def _ais_metrics(model: Model, pre: Any, x: Tensor, seed: int) -> dict[str, Any]:
    """Test NLL from an AIS estimate of log Z (:func:`dgm.eval.ais.ebm_log_likelihood`)."""
    from dgm.eval.ais import ebm_log_likelihood

    g = torch.Generator(device=model.device).manual_seed(seed)
    xm = x.to(model.device, model.dtype)
    log_det = torch.zeros(xm.shape[0], dtype=model.dtype, device=model.device)
    if pre is not None:
        xm, log_det = pre(xm, generator=g)
    with model.inference():
        values, name, info = ebm_log_likelihood(model, xm, generator=g)
    ll = (values + log_det).double().cpu()  # (N,)
    note = getattr(pre, "likelihood_note", None) if pre is not None else None
    n = ll.numel()
    return {
        "ais_nll_estimate": float(-ll.mean()),
        "ais_nll_estimate_sem": float(ll.std() / math.sqrt(n)) if n > 1 else float("nan"),
        "ais_log_z": info["log_z"],
        "ais_log_z_stderr": info["log_z_stderr"],
        "ais_ess": info["ess"],
        "likelihood": name + (f" ({note})" if note else ""),
    }


def evaluate(
    model: Model,
    dataset: Any,
    preprocessor: Any = None,
    *,
    metrics: Sequence[str] | None = None,
    seed: int = 0,
    grid_size: int = 300,
    max_test: int | None = None,
    bound_options: dict[str, Any] | None = None,
    num_samples: int | None = None,
    classifier: str = "mlp",
    features: Callable[[Tensor], Tensor] | None = None,
    cache_dir: Any = None,
    data_dir: Any = None,
    sample_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``metrics`` (default: all that apply) for ``model`` on the test split of ``dataset``.

    Sample-based metrics compare ``num_samples`` model samples (default ``min(n_test, 2000)``),
    mapped to raw data space by ``preprocessor.inverse``, with as many test examples.
    ``features`` overrides the feature extractor of image data; ``sample_options`` go to
    ``model.sample`` (e.g. fewer Langevin steps). Deterministic for a given ``seed``. Returns a flat dict (JSON-able; non-finite floats become ``None``) with the keys of
    each metric, ``"skipped"`` (metric -> reason) and ``"seconds"`` (metric -> run time).
    """
    model.eval()
    requested = list(METRICS) if metrics is None else list(dict.fromkeys(metrics))
    skipped: dict[str, str] = {}
    todo = []
    for m in requested:
        reason = not_applicable(model, dataset, m)
        if reason is None:
            todo.append(m)
        elif metrics is not None:
            raise DgmError(reason)
        else:
            skipped[m] = reason
    x, y = dataset.split("test")
    if max_test is not None:
        x = x[:max_test]
        y = None if y is None else y[:max_test]
    res: dict[str, Any] = {"model": model.name, "data": dataset.name, "n_test": int(x.shape[0])}
    seconds: dict[str, float] = {}
    if "nll" in todo and _ais_estimate(model):
        t0 = time.perf_counter()
        res.update(_ais_metrics(model, preprocessor, x, seed))
        seconds["nll"] = time.perf_counter() - t0
    elif "nll" in todo:
        t0 = time.perf_counter()
        g = torch.Generator(device=model.device).manual_seed(seed)
        yc = y if model.conditional else None
        m = nll(model, x, yc, preprocessor=preprocessor, generator=g, bound_options=bound_options)
        res.update(
            test_nll=m["nll"],
            test_nll_sem=m["nll_sem"],
            test_bpd=m["bpd"],
            likelihood=m["likelihood"],
        )
        seconds["nll"] = time.perf_counter() - t0
    elif not _has_likelihood(model):
        res["likelihood"] = None

    sample_metrics = {"kl", "c2st", "mmd", "fid", "kid", "prd", "modes"} & set(todo)
    n = min(num_samples or DEFAULT_SAMPLES, x.shape[0])
    samples = ref = None
    if sample_metrics:
        t0 = time.perf_counter()
        pick = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
        ref = x[pick]  # (n, *event)
        labels = None if y is None else y[pick]
        samples = _samples(model, preprocessor, n, seed, labels, options=sample_options)
        seconds["sampling"] = time.perf_counter() - t0
        res["n_samples"] = n

    feats = features
    needs_features = {"fid", "kid", "prd", "c2st", "mmd", "anomaly"} & set(todo)
    if feats is None and dataset.spec.is_image and needs_features:
        from dgm.eval.features import dataset_features

        t0 = time.perf_counter()
        try:
            feats = dataset_features(dataset, cache_dir=cache_dir, data_dir=data_dir, seed=0)
        except DgmError as e:
            for m in ("fid", "kid", "prd"):
                if m in todo:
                    if metrics is not None:
                        raise
                    todo.remove(m)
                    skipped[m] = str(e)
        if feats is not None:
            res["features"] = f"FeatureNet trained on {dataset.name} labels"
            acc = getattr(feats, "info", {}).get("val_accuracy")
            if acc is not None:
                res["features_val_accuracy"] = acc
            seconds["features"] = time.perf_counter() - t0
    space = "features" if feats is not None else "raw values"

    def timed(name: str, fn: Callable[[], dict[str, Any]]) -> None:
        if name in todo:
            t0 = time.perf_counter()
            res.update(fn())
            seconds[name] = time.perf_counter() - t0

    timed("kl", lambda: _kl_metrics(model, dataset, preprocessor, x, samples, grid_size))

    def c2st_metric() -> dict[str, Any]:
        r = c2st(ref, samples, classifier=classifier, features=feats, seed=seed)
        return {
            "c2st_accuracy": r.statistic,
            "c2st_p_value": r.p_value,
            "c2st_classifier": classifier,
            "c2st_space": space,
        }

    def mmd_metric() -> dict[str, Any]:
        r = mmd(ref, samples, features=feats, seed=seed)
        return {
            "mmd2": r.statistic,
            "mmd_p_value": r.p_value,
            "mmd_bandwidth": r.details["bandwidths"][0],
            "mmd_space": space,
        }

    timed("c2st", c2st_metric)
    timed("mmd", mmd_metric)
    fr = fs = None
    if {"fid", "kid", "prd"} & set(todo):
        with torch.no_grad():
            fr = feats(ref) if feats is not None else ref.reshape(n, -1)
            fs = feats(samples) if feats is not None else samples.reshape(n, -1)
    timed("fid", lambda: {"fid": fid(fr, fs), "fid_space": space})
    # subsets of half the samples: subsets as large as the sets would all be the same set
    kid_size = min(1000, max(2, n // 2))
    timed(
        "kid", lambda: dict(zip(("kid", "kid_std"), kid(fr, fs, subset_size=kid_size, seed=seed)))
    )
    timed("prd", lambda: {k: v for k, v in precision_recall(fr, fs).items() if k != "k"})

    def modes_metric() -> dict[str, Any]:
        d = dataset.density
        r = mode_coverage(samples.double(), d.modes, d.mode_std)
        return {
            "modes_captured": r["modes_captured"],
            "modes_total": r["modes_total"],
            "modes_high_quality": r["high_quality"],
            "modes_kl": r["kl_uniform"],
        }

    timed("modes", modes_metric)

    def anomaly_metric() -> dict[str, Any]:
        size = ANOMALY_SIZE_COSTLY if model.needs_grad_for_inference else ANOMALY_SIZE
        k = min(size, x.shape[0])
        xa, ya = x[:k], (None if y is None else y[:k])
        out: dict[str, Any] = {"anomaly_n": k}

        def score(data: Tensor, labels: Tensor | None) -> Tensor:
            if model.conditional and labels is None:
                raise DgmError("a conditional model needs labels to score shifted data")
            g = torch.Generator(device=model.device).manual_seed(seed)
            ll, _ = log_likelihood(
                model,
                data,
                labels if model.conditional else None,
                preprocessor=preprocessor,
                generator=g,
                bound_options=bound_options,
            )
            return ll

        ll_in = score(xa, ya)
        for name, (xs, ys) in anom.builtin_shifts(
            dataset, xa, ya, feats, seed=seed, data_dir=data_dir
        ).items():
            ll_out = score(xs, ys)
            out[f"anomaly_{name}_auroc"] = anom.auroc(ll_in, ll_out)
            out[f"anomaly_{name}_auprc"] = anom.auprc(-ll_out, -ll_in)
        return out

    timed("anomaly", anomaly_metric)
    res["skipped"] = skipped
    res["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    return _finite(res)


_LABELS = {
    "test_nll": "test NLL (nats)",
    "test_bpd": "test bits/dim",
    "kl": "KL(true || model)",
    "reverse_kl": "KL(model || true)",
    "tv": "total variation",
    "grid_integral": "grid integral of model",
    "c2st_accuracy": "C2ST accuracy (0.5 = indistinguishable)",
    "c2st_p_value": "C2ST p-value",
    "mmd2": "MMD^2 (unbiased)",
    "mmd_p_value": "MMD p-value",
    "fid": "FID (not Inception; not comparable to papers)",
    "kid": "KID",
    "precision": "precision (k-NN, k=3)",
    "recall": "recall (k-NN, k=3)",
    "modes_captured": "modes captured",
    "modes_high_quality": "high-quality samples",
    "modes_kl": "KL(mode histogram || uniform)",
    "ais_nll_estimate": "AIS test NLL (nats, an estimate, not a bound)",
}


def format_table(res: dict[str, Any]) -> str:
    """A plain-text table of the scalar results of :func:`evaluate`, for the terminal."""
    rows = [("metric", "value")]
    for key, value in res.items():
        if isinstance(value, (dict, list)) or key in ("model", "data") or key.endswith("_sem"):
            continue
        label = _LABELS.get(key, key.replace("_", " "))
        if key == "modes_captured":
            value = f"{value}/{res.get('modes_total')}"
        elif isinstance(value, float):
            sem = res.get(f"{key}_sem")
            value = f"{value:.4g}" + (f" ± {sem:.2g}" if isinstance(sem, float) else "")
        elif value is None:
            value = "n/a"
        if key == "modes_total":
            continue
        rows.append((label, str(value)))
    width = max(len(r[0]) for r in rows)
    lines = [f"{res.get('model')} on {res.get('data')}"]
    lines += [f"  {a:<{width}}  {b}" for a, b in rows]
    lines += [f"  skipped {k}: {v}" for k, v in res.get("skipped", {}).items()]
    return "\n".join(lines)
