"""Metrics: pure functions of tensors that return a value and, for tests, a p-value.

* likelihood: :func:`nll`, :func:`bits_per_dim`, :func:`log_likelihood`
* analytic 2-D densities: :func:`kl_divergence`, :func:`reverse_kl`, :func:`total_variation`,
  :func:`grid_integral`
* two-sample tests: :func:`c2st`, :func:`mmd`, :func:`mmd2_unbiased`
* feature space (not Inception; see :mod:`dgm.eval.fid`): :func:`fid`, :func:`kid`,
  :func:`precision_recall`, :func:`frechet_distance`, features from :func:`dataset_features`
* mode coverage: :func:`mode_coverage`
* anomaly detection: :func:`auroc`, :func:`auprc`, :func:`mann_whitney_u` and the shifts
  :func:`pixel_noise`, :func:`pixel_flips`, :func:`fgsm`, :func:`resize_images`,
  :func:`builtin_shifts`
* everything that applies to a trained model: :func:`dgm.eval.run.evaluate`, which calls one
  function per metric family (:mod:`dgm.eval.suite`); the final NLL of a run's splits:
  :func:`dgm.eval.summary.summarize`
"""

from dgm.eval.anomaly import (
    auprc,
    auroc,
    builtin_shifts,
    fgsm,
    mann_whitney_u,
    pixel_flips,
    pixel_noise,
    resize_images,
)
from dgm.eval.density import grid, grid_integral, kl_divergence, reverse_kl, total_variation
from dgm.eval.features import FeatureExtractor, classifier_features, dataset_features
from dgm.eval.fid import fid, frechet_distance, gaussian_stats, kid, precision_recall
from dgm.eval.likelihood import bits_per_dim, log_likelihood, nll
from dgm.eval.modes import mode_coverage, mode_histogram
from dgm.eval.twosample import TwoSampleResult, c2st, median_bandwidth, mmd, mmd2_unbiased

__all__ = [
    "FeatureExtractor",
    "TwoSampleResult",
    "auprc",
    "auroc",
    "bits_per_dim",
    "builtin_shifts",
    "c2st",
    "classifier_features",
    "dataset_features",
    "fgsm",
    "fid",
    "frechet_distance",
    "gaussian_stats",
    "grid",
    "grid_integral",
    "kid",
    "kl_divergence",
    "log_likelihood",
    "mann_whitney_u",
    "median_bandwidth",
    "mmd",
    "mmd2_unbiased",
    "mode_coverage",
    "mode_histogram",
    "nll",
    "pixel_flips",
    "pixel_noise",
    "precision_recall",
    "resize_images",
    "reverse_kl",
    "total_variation",
]
