"""Evaluate a trained model on its dataset: every metric that applies, as one JSON-able dict.

=========  ====================================================================  ==================
metric     what                                                                  applies when
=========  ====================================================================  ==================
nll        test NLL in nats and bits/dim: exact, the model's named bound, or     the model has a
           for an intractable log Z (a ``LikelihoodEstimator``, e.g. an EBM on   likelihood or an
           images) an AIS estimate (:mod:`dgm.eval.ais`) whose standard error    AIS estimate
           includes log Z's; ``likelihood_kind`` says which
           (:mod:`dgm.core.likelihood`)
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
condi-     conditional accuracy (the feature classifier's verdict on samples     a conditional
tional     drawn for each label, with its standard error), per-class FID;        model on labelled
           with ``guidance=[w, ...]`` the curve of both over guidance weights    images
           (``temperature=[T, ...]``: over a flow's temperatures;
           :mod:`dgm.eval.conditional`)
=========  ====================================================================  ==================

Features are the raw values for vector data (e.g. 2-D points) and, for images, those of a small
classifier trained on the dataset's labels or the labelled data it declares
(:mod:`dgm.eval.features`); image data without either has none. What a metric needs from the data
the :class:`~dgm.data.Dataset` declares (its density, its modes, its labels, its partner); the
metrics themselves are the functions of :mod:`dgm.eval.suite`.

Anomaly detection scores 1000 test examples and the same examples shifted: Gaussian noise
(vector data: half the data's std; images: 10% of the value range, rounded), pixel flips (binary
images, p = 0.05), FGSM at 10% of the range against the feature classifier (images with labels),
and the test images of the dataset's out-of-distribution partner resized to this one
(:attr:`dgm.data.Dataset.ood_dataset`: ``digits`` <-> ``mnist``).

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
from dgm.core.likelihood import Likelihood
from dgm.core.model import Model
from dgm.core.progress import Progress
from dgm.core.protocols import ConditionalModel
from dgm.data import Dataset
from dgm.eval import suite
from dgm.eval.anomaly import builtin_shifts
from dgm.eval.conditional import CURVE_OPTIONS, conditional_metrics, option_curve
from dgm.eval.features import dataset_features
from dgm.eval.likelihood import ais_estimated, has_likelihood

__all__ = ["METRICS", "evaluate", "format_table", "not_applicable", "result_likelihood"]

METRICS = ("nll", "kl", "c2st", "mmd", "fid", "kid", "prd", "modes", "anomaly", "conditional")
DEFAULT_SAMPLES = 2000
#: test examples the likelihood anomaly detector scores (and as many of each shifted set)...
ANOMALY_SIZE = 1000
#: ... and for a model whose likelihood needs autograd (an ODE trace): 200 against 200 still
#: give the AUROC a standard error of at most about 0.03
ANOMALY_SIZE_COSTLY = 200
_SAMPLE_METRICS = {"kl", "c2st", "mmd", "fid", "kid", "prd", "modes"}
_FEATURE_METRICS = ("fid", "kid", "prd")


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _has_likelihood(model: Model) -> bool:
    """Exact or a bound (an AIS estimate is not enough for ``kl`` and ``anomaly``)."""
    return bool(model.exact_likelihood or model.likelihood_bound)


def not_applicable(model: Model, dataset: Dataset, metric: str) -> str | None:
    """Why ``metric`` does not apply to this model and data (one sentence), or ``None``."""
    density = dataset.density
    if metric not in METRICS:
        raise DgmError(f"unknown metric {metric!r}; the metrics are: {', '.join(METRICS)}")
    if metric == "nll" and ais_estimated(model):
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
    if metric in _FEATURE_METRICS and dataset.spec.is_image:
        if dataset.spec.num_classes is None and dataset.feature_data is None:
            return (
                f"{metric} needs features, which dgm learns from class labels, and "
                f"{dataset.name!r} has none; pass features= from Python"
            )
    if metric == "conditional":
        if not (isinstance(model, ConditionalModel) and model.conditional):
            return (
                f"conditional needs a model trained with labels (conditional=true); model "
                f"{model.name!r} is unconditional"
            )
        if not dataset.spec.is_image or not dataset.spec.num_classes:
            return (
                "conditional needs labelled images (digits, mnist), whose feature classifier "
                f"judges the samples; {dataset.name!r} is not"
            )
    if metric == "modes" and (density is None or density.modes is None):
        return (
            f"modes needs data made of separated modes (ring8, grid25, 8gaussians), and "
            f"{dataset.name!r} is not"
        )
    return None


def _plan(
    model: Model, dataset: Dataset, metrics: Sequence[str] | None
) -> tuple[list[str], dict[str, str]]:
    """The metrics to run and, when ``metrics`` is ``None`` (all that apply), the skipped ones
    with the reason; a requested metric that does not apply raises its reason."""
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
    return todo, skipped


def evaluate(
    model: Model,
    dataset: Dataset,
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
    guidance: Sequence[float] | None = None,
    temperature: Sequence[float] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run ``metrics`` (default: all that apply) for ``model`` on the test split of ``dataset``.

    Sample-based metrics compare ``num_samples`` model samples (default ``min(n_test, 2000)``),
    mapped to raw data space by ``preprocessor.inverse``, with as many test examples.
    ``features`` overrides the feature extractor of image data; ``sample_options`` go to
    ``model.sample`` (e.g. fewer Langevin steps). Deterministic for a given ``seed``. Returns a
    flat dict (JSON-able; non-finite floats become ``None``) with the keys of each metric,
    ``"skipped"`` (metric -> reason) and ``"seconds"`` (metric -> run time). ``progress`` reports
    each phase (sampling, features, each metric) on stderr. ``guidance`` (weights) adds the
    curve of conditional accuracy and FID over guidance weights (``"guidance_curve"``) to the
    ``conditional`` metric, which must then apply; ``temperature`` (a flow's sampling
    temperatures) adds the same curve over temperatures (``"temperature_curve"``).
    ``sample_options`` are recorded in the result (``"sample_options"``).
    """
    model.eval()
    pre = preprocessor
    todo, skipped = _plan(model, dataset, metrics)
    curves = {"guidance": guidance, "temperature": temperature}
    for name, values in curves.items():
        if not values:
            continue
        if "conditional" not in todo:
            raise DgmError(
                skipped.get("conditional") or f"a {name} curve needs the conditional metric"
            )
        # a model that takes no such option says so before any metric runs
        model.sample_config(dict(sample_options or {}) | {name: float(values[0])})
    x, y = dataset.split("test")
    if max_test is not None:
        x = x[:max_test]
        y = None if y is None else y[:max_test]
    res: dict[str, Any] = {"model": model.name, "data": dataset.name, "n_test": int(x.shape[0])}
    if sample_options:
        res["sample_options"] = dict(sample_options)
    seconds: dict[str, float] = {}

    def phase(what: str) -> Progress:
        return Progress(f"evaluating {model.name}: {what}", enabled=progress)

    def timed(name: str, fn: Callable[[], dict[str, Any]]) -> None:
        if name in todo:
            t0 = time.perf_counter()
            with phase(name):
                res.update(fn())
            seconds[name] = time.perf_counter() - t0

    if "nll" in todo:  # exact, a bound, or an AIS estimate (an EBM on images)
        nll_kw = {"seed": seed, "bound_options": bound_options}
        timed("nll", lambda: suite.nll_metrics(model, x, y, pre, **nll_kw))
    # bits/dim of the uniform distribution over the levels the likelihood is about (binarized
    # data: 2; dequantized data: the raw levels), the figure any model should beat
    lik_spec = pre.spec(dataset.spec) if pre is not None else dataset.spec
    levels = lik_spec.levels if lik_spec.kind == "discrete" else dataset.spec.levels
    if "test_bpd" in res and levels is not None:
        res["bpd_uniform"] = math.log2(levels)
    elif not has_likelihood(model):
        res["likelihood"] = None
        res["likelihood_kind"] = "none"

    n = min(num_samples or DEFAULT_SAMPLES, x.shape[0])
    ref = samples = None
    if _SAMPLE_METRICS & set(todo):
        t0 = time.perf_counter()
        pick = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
        ref = x[pick]  # (n, *event)
        labels = None if y is None else y[pick]
        with phase(f"drawing {n} samples"):
            samples = suite.model_samples(model, pre, n, seed, labels, options=sample_options)
        seconds["sampling"] = time.perf_counter() - t0
        res["n_samples"] = n

    feats = features
    needs_features = {*_FEATURE_METRICS, "c2st", "mmd", "anomaly", "conditional"} & set(todo)
    if feats is None and dataset.spec.is_image and needs_features:
        t0 = time.perf_counter()
        try:
            with phase("features"):
                feats = dataset_features(dataset, cache_dir=cache_dir, data_dir=data_dir, seed=0)
        except DgmError as e:
            if metrics is not None and {*_FEATURE_METRICS, "conditional"} & set(todo):
                raise
            for m in (*_FEATURE_METRICS, "conditional"):
                if m in todo:
                    todo.remove(m)
                    skipped[m] = str(e)
        if feats is not None:
            res["features"] = f"FeatureNet trained on {dataset.name} labels"
            acc = getattr(feats, "info", {}).get("val_accuracy")
            if acc is not None:
                res["features_val_accuracy"] = acc
            seconds["features"] = time.perf_counter() - t0
    space = "features" if feats is not None else "raw values"

    log_q = suite.model_log_density(model, pre)
    timed("kl", lambda: suite.kl_metrics(dataset.density, log_q, x, samples, grid_size))
    pair_kw = {"features": feats, "seed": seed, "space": space}
    timed("c2st", lambda: suite.c2st_metrics(ref, samples, classifier=classifier, **pair_kw))
    timed("mmd", lambda: suite.mmd_metrics(ref, samples, **pair_kw))
    fr = fs = None
    if set(_FEATURE_METRICS) & set(todo):
        with torch.no_grad():
            fr = feats(ref) if feats is not None else ref.reshape(n, -1)  # (n, F)
            fs = feats(samples) if feats is not None else samples.reshape(n, -1)  # (n, F)
    timed("fid", lambda: suite.fid_metrics(fr, fs, space))
    timed("kid", lambda: suite.kid_metrics(fr, fs, seed=seed, space=space))
    timed("prd", lambda: suite.prd_metrics(fr, fs))
    density = dataset.density
    timed("modes", lambda: suite.mode_metrics(samples, density.modes, density.mode_std))

    def anomaly() -> dict[str, Any]:
        size = ANOMALY_SIZE_COSTLY if model.needs_grad_for_inference else ANOMALY_SIZE
        k = min(size, x.shape[0])
        xa, ya = x[:k], (None if y is None else y[:k])
        shifts = builtin_shifts(dataset, xa, ya, feats, seed=seed, data_dir=data_dir)
        score = suite.likelihood_scorer(model, pre, seed=seed, bound_options=bound_options)
        return suite.anomaly_metrics(score, xa, ya, shifts)

    timed("anomaly", anomaly)

    def conditional() -> dict[str, Any]:
        kw = {
            "num_samples": num_samples or DEFAULT_SAMPLES,
            "seed": seed,
            "options": sample_options,
        }
        out = conditional_metrics(model, pre, dataset, feats, **kw)
        for name, values in curves.items():
            if values:
                out[f"{name}_curve"] = option_curve(model, pre, dataset, feats, name, values, **kw)
        return out

    timed("conditional", conditional)
    res["skipped"] = skipped
    res["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    return _finite(res)


_LABELS = {
    "test_nll": "test NLL (nats)",
    "test_bpd": "test bits/dim",
    "test_nll_sem_data": "test NLL std. error, data part",
    "kl": "KL(true || model)",
    "reverse_kl": "KL(model || true)",
    "tv": "total variation",
    "grid_integral": "grid integral of model",
    "c2st_accuracy": "C2ST accuracy (0.5 = indistinguishable)",
    "c2st_p_value": "C2ST p-value",
    "mmd2": "MMD^2 (unbiased estimate, can be < 0)",
    "mmd_p_value": "MMD p-value",
    "fid": "FID (not Inception; not comparable to papers)",
    "kid": "KID (unbiased estimate, can be < 0)",
    "precision": "precision (k-NN, k=3)",
    "recall": "recall (k-NN, k=3)",
    "modes_captured": "modes captured",
    "modes_high_quality": "high-quality samples",
    "modes_kl": "KL(mode histogram || uniform)",
    "ais_log_z": "AIS log Z",
    "ais_log_z_stderr": "AIS log Z std. error",
    "ais_ess": "AIS effective sample size",
    "ais_chains": "AIS chains",
    "ais_temps": "AIS temperatures",
    "cond_accuracy": "conditional accuracy (feature classifier on samples per label)",
    "cond_samples_per_class": "conditional: samples per class",
    "cond_fid": "conditional FID, all classes (not Inception)",
    "cond_fid_class_mean": "per-class FID, mean over classes (estimate)",
    "cond_model_test_accuracy": "the model as a classifier, p(y | x): test accuracy",
}
#: figures whose label carries the words of their likelihood kind, and the quantity they are
_QUANTITY = {"test_nll": "NLL", "test_bpd": "bits/dim", "val_nll": "NLL"}
_NOT_SHOWN = ("model", "data", "likelihood_kind", "ais_warning")


def result_likelihood(res: dict[str, Any]) -> Likelihood | None:
    """The :class:`~dgm.core.likelihood.Likelihood` of a result of :func:`evaluate` (or of a
    run's summary), or ``None`` when it has none recorded."""
    info = res.get("likelihood_info")
    if isinstance(info, dict):
        return Likelihood.from_dict(info)
    return None


#: printed beside their metric, not on a line of their own
_RAW_SPACE_HIDDEN = ("fid_space", "kid_space")


def format_table(res: dict[str, Any]) -> str:
    """A plain-text table of the scalar results of :func:`evaluate`, for the terminal. Each
    likelihood figure says what it is (exact, an upper bound, an estimate, ...) in the words of
    :func:`dgm.core.likelihood.describe`."""
    lik = result_likelihood(res)
    rows = [("metric", "value")]
    for key, value in res.items():
        if isinstance(value, (dict, list)) or key in _NOT_SHOWN or key.endswith("_sem"):
            continue
        label = _LABELS.get(key, key.replace("_", " "))
        if key in (
            "modes_total",
            "bpd_uniform",
            "kid_std",
            "cond_accuracy_stderr",
            "cond_model_test_accuracy_stderr",
        ):
            continue
        if key in _RAW_SPACE_HIDDEN:
            continue
        raw_space = res.get(f"{key}_space") == "raw values"
        if key in ("fid", "kid") and raw_space:  # a Gaussian fit or a cubic kernel on raw 2-D
            rows.append((label, "n/a (not meaningful on raw vector values)"))
            continue
        if key == "modes_captured":
            value = f"{value}/{res.get('modes_total')}"
        elif isinstance(value, float):
            sem = res.get(f"{key}_sem", res.get(f"{key}_std", res.get(f"{key}_stderr")))
            value = f"{value:.4g}" + (f" ± {sem:.2g}" if isinstance(sem, float) else "")
            if lik is not None and key in _QUANTITY:
                value += f" ({lik.describe(_QUANTITY[key])})"
        elif value is None:
            value = "n/a"
        if key == "test_bpd" and isinstance(res.get("bpd_uniform"), float) and value != "n/a":
            base = res["bpd_uniform"]
            value += f" (uniform over {round(2**base)} levels: {base:.4g}"
            value += "; WORSE than uniform)" if res[key] > base else ")"
        if key in ("mmd2", "kid") and isinstance(res[key], float) and res[key] < 0:
            value += " (an unbiased estimate: below 0 by chance when the true value is near 0)"
        rows.append((label, str(value)))
    width = max(len(r[0]) for r in rows)
    lines = [f"{res.get('model')} on {res.get('data')}"]
    if res.get("sample_options"):
        opts = ", ".join(f"{k}={v}" for k, v in res["sample_options"].items())
        lines[0] += f" (samples drawn with {opts})"
    lines += [f"  {a:<{width}}  {b}" for a, b in rows]
    for name, (short, _) in CURVE_OPTIONS.items():
        for p in res.get(f"{name}_curve") or []:
            lines.append(
                f"  {name} {short}={p[name]:g}: conditional accuracy {p['accuracy']:.4g} ± "
                f"{p['accuracy_stderr']:.2g}, FID {p['fid']:.4g}"
            )
    if res.get("ais_warning"):
        lines.append(f"  warning: {res['ais_warning']}")
    lines += [f"  skipped {k}: {v}" for k, v in res.get("skipped", {}).items()]
    return "\n".join(lines)
