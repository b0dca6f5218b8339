"""Judging a conditional model: is a sample drawn for label ``c`` a ``c``?

**Conditional accuracy.** For each class ``c`` the model draws ``m`` samples given ``c``; the
dataset's feature classifier, the very network whose features FID uses
(:func:`dgm.eval.features.dataset_features`), classifies them, and the accuracy is the fraction
classified as the class asked for. Its standard error ``sqrt(a (1 - a) / N)`` over the ``N = K m``
independent samples is the sampling error of this estimate; the classifier's own errors (its
validation accuracy is reported beside as ``features_val_accuracy``) bias it, so an accuracy
near the classifier's is as good as this judge can tell.

**Per-class FID.** The Frechet distance, in the same feature space, between the samples drawn for
``c`` and the test examples of class ``c`` (an estimate, biased upwards when either set is
small, as FID is); ``cond_fid`` pools all classes against the whole test split.

**The model as a classifier.** A model that also classifies (``model.classify(x)``, the EBM's
``argmax_y p(y | x)`` of the joint-energy view) is scored on the test split as well: its
accuracy ``cond_model_test_accuracy`` with its standard error, each image preprocessed as in
training (one dequantization draw, seeded).

**Guidance curve.** For models whose sampling takes a ``guidance`` weight (classifier-free
guidance), both figures at each weight of a list: accuracy usually rises with the weight while
FID first falls and then rises as samples lose diversity; the curve shows the trade.

**Temperature curve.** The same two figures over a flow's sampling ``temperature`` (the base
noise ``N(0, T^2 I)``, Kingma & Dhariwal 2018): below 1 the samples are no longer of ``p(x | y)``
but sharper, the flows' counterpart of guidance (:func:`option_curve` draws either).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from dgm.core.model import Model
from dgm.data import Dataset
from dgm.eval.fid import fid
from dgm.eval.suite import model_samples

__all__ = [
    "CURVE_OPTIONS",
    "accuracy_with_stderr",
    "conditional_metrics",
    "guidance_curve",
    "option_curve",
]

#: the sampling options a curve runs over (:func:`option_curve`), each with the symbol that
#: labels its values (``w=0.5``, ``T=0.7``) and what its values are called in captions
CURVE_OPTIONS: dict[str, tuple[str, str]] = {
    "guidance": ("w", "guidance weights"),
    "temperature": ("T", "temperatures"),
}


def accuracy_with_stderr(pred: Tensor, labels: Tensor) -> tuple[float, float]:
    """Fraction of ``pred == labels`` and its binomial standard error ``sqrt(a (1 - a) / N)``."""
    n = labels.numel()
    a = float((pred.cpu() == labels.cpu()).double().mean()) if n else math.nan
    return a, math.sqrt(a * (1 - a) / n) if n else math.nan


def _predict(feats: Any, x: Tensor, batch: int = 2000) -> Tensor:
    with torch.no_grad():
        return torch.cat(
            [feats.logits(x[s : s + batch]).argmax(1) for s in range(0, len(x), batch)]
        )


def conditional_metrics(
    model: Model,
    pre: Any,
    dataset: Dataset,
    feats: Any,
    *,
    num_samples: int = 2000,
    seed: int = 0,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Conditional accuracy (with its standard error and per class), per-class FID and the pooled
    FID of ``num_samples`` samples split evenly over the classes (module docstring). ``feats`` is
    the dataset's feature classifier (``feats(x)`` features, ``feats.logits(x)`` class logits);
    ``options`` go to ``model.sample``."""
    k = int(model.num_classes)  # type: ignore[attr-defined]
    per = max(2, num_samples // k)
    y = torch.arange(k).repeat_interleave(per)  # (k * per,)
    samples = model_samples(model, pre, len(y), seed, y, options=options)  # (k * per, *event)
    pred = _predict(feats, samples)
    acc, stderr = accuracy_with_stderr(pred, y)
    x_test, y_test = dataset.split("test")
    with torch.no_grad():
        fs, fr = feats(samples), feats(x_test)  # (k * per, F), (n_test, F)
    per_acc, per_fid = [], []
    for c in range(k):
        mine = y == c
        per_acc.append(accuracy_with_stderr(pred[mine], y[mine])[0])
        ref = fr[y_test == c] if y_test is not None else fr[:0]
        per_fid.append(fid(ref, fs[mine]) if len(ref) >= 2 else math.nan)
    finite = [f for f in per_fid if math.isfinite(f)]
    extra = {}
    if callable(getattr(model, "classify", None)) and y_test is not None:
        a, se = accuracy_with_stderr(_classify(model, pre, x_test, seed), y_test)
        extra = {"cond_model_test_accuracy": a, "cond_model_test_accuracy_stderr": se}
    return {
        "cond_accuracy": acc,
        "cond_accuracy_stderr": stderr,
        "cond_samples_per_class": per,
        "cond_accuracy_per_class": per_acc,
        "cond_fid_per_class": [None if not math.isfinite(f) else f for f in per_fid],
        "cond_fid_class_mean": sum(finite) / len(finite) if finite else None,
        "cond_fid": fid(fr, fs),
        **extra,
    }


def _classify(model: Any, pre: Any, x: Tensor, seed: int, batch: int = 500) -> Tensor:
    """``model.classify`` of raw test data ``x``, preprocessed as in training (seeded draws)."""
    gen = torch.Generator(device=model.device).manual_seed(seed)
    out = []
    with torch.no_grad():
        for s in range(0, len(x), batch):
            xb = x[s : s + batch].to(model.device)
            z = (xb if pre is None else pre(xb, generator=gen)[0]).to(model.dtype)
            out.append(model.classify(z).cpu())
    return torch.cat(out)


def option_curve(
    model: Model,
    pre: Any,
    dataset: Dataset,
    feats: Any,
    name: str,
    values: Sequence[float],
    *,
    num_samples: int = 2000,
    seed: int = 0,
    options: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Conditional accuracy (with standard error) and pooled FID at each value of the sampling
    option ``name`` (``guidance`` or ``temperature``), the same seed for each:
    ``[{name, "accuracy", "accuracy_stderr", "fid"}, ...]``. A model that takes no such option
    raises its one-sentence :class:`ConfigError`."""
    curve = []
    for v in values:
        m = conditional_metrics(
            model, pre, dataset, feats, num_samples=num_samples, seed=seed,
            options=dict(options or {}) | {name: float(v)},
        )  # fmt: skip
        curve.append(
            {
                name: float(v),
                "accuracy": m["cond_accuracy"],
                "accuracy_stderr": m["cond_accuracy_stderr"],
                "fid": m["cond_fid"],
            }
        )
    return curve


def guidance_curve(
    model: Model,
    pre: Any,
    dataset: Dataset,
    feats: Any,
    weights: Sequence[float],
    *,
    num_samples: int = 2000,
    seed: int = 0,
    options: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """:func:`option_curve` over guidance weights: ``[{"guidance", "accuracy",
    "accuracy_stderr", "fid"}, ...]``."""
    return option_curve(model, pre, dataset, feats, "guidance", weights,
                        num_samples=num_samples, seed=seed, options=options)  # fmt: skip
