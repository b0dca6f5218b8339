"""Two-sample tests: is ``x ~ P`` and ``y ~ Q`` with ``P = Q``? Each returns a statistic and a p-value.

* :func:`c2st`, the classifier two-sample test (Lopez-Paz & Oquab, "Revisiting classifier
  two-sample tests", ICLR 2017): train a classifier to tell the samples apart on half of the pooled
  data; its held-out accuracy is the statistic. Under ``P = Q`` no classifier beats chance, so the
  number of correct test predictions is Binomial(n_test, 1/2) (``null="binomial"``), or exactly, given
  the trained classifier, the distribution of the accuracy under permutations of the test labels
  (``null="permutation"``).
* :func:`mmd`, the maximum mean discrepancy (Gretton, Borgwardt, Rasch, Schoelkopf & Smola, "A kernel
  two-sample test", JMLR 2012) with Gaussian kernels: the unbiased estimator :func:`mmd2_unbiased`
  and a permutation p-value, all permutations computed at once as quadratic forms of the kernel
  matrix.

Both are pure functions of tensors; ``features`` (any callable ``(N, ...) -> (N, F)``) moves either
test into a feature space, e.g. that of :func:`dgm.eval.features.dataset_features`.

>>> g = torch.Generator().manual_seed(0)
>>> x, y = torch.randn(200, 2, generator=g), torch.randn(200, 2, generator=g) + 2.0
>>> mmd(x, y).p_value < 0.01, c2st(x, y, classifier="logistic").p_value < 0.01
(True, True)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dgm.core.errors import DgmError

__all__ = [
    "TwoSampleResult",
    "c2st",
    "gaussian_kernel",
    "median_bandwidth",
    "mmd",
    "mmd2_unbiased",
    "resolve_bandwidths",
]

Features = Callable[[Tensor], Tensor]
Bandwidth = float | Sequence[float] | str
#: multiples of the median distance used by ``bandwidth="mixture"``
MIXTURE_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)
CLASSIFIERS = ("logistic", "mlp", "knn")


@dataclass(frozen=True)
class TwoSampleResult:
    """Outcome of a two-sample test: the statistic, its p-value under ``P = Q``, and details
    (sizes, bandwidths, classifier ...) as plain JSON-able values."""

    statistic: float
    p_value: float
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_matrix(t: Tensor, features: Features | None, what: str) -> Tensor:
    """Apply ``features`` and flatten to ``(N, D)`` float64, with a one-sentence error otherwise."""
    if not isinstance(t, Tensor):
        raise DgmError(f"{what} must be a torch.Tensor, not {type(t).__name__}")
    if features is not None:
        with torch.no_grad():
            t = features(t)
    if t.dim() < 1 or t.shape[0] < 2:
        raise DgmError(f"{what} needs at least 2 examples, got shape {tuple(t.shape)}")
    t = t.detach().reshape(t.shape[0], -1).to("cpu", torch.float64)  # (N, D)
    if not torch.isfinite(t).all():
        raise DgmError(
            f"{what} contains NaN or infinite values; a two-sample test needs finite data"
        )
    return t


def _check_dims(x: Tensor, y: Tensor) -> None:
    if x.shape[1] != y.shape[1]:
        raise DgmError(
            f"the samples have {x.shape[1]} and {y.shape[1]} values per example; "
            "a two-sample test compares examples of the same shape"
        )


# ----------------------------------------------------------------------------------------- C2ST
def _classifier(kind: Any, dim: int, n_train: int, seed: int) -> Any:
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if not isinstance(kind, str):
        if not hasattr(kind, "fit") or not hasattr(kind, "predict"):
            raise DgmError(
                f"classifier must be one of {', '.join(CLASSIFIERS)} or a scikit-learn "
                f"classifier with fit/predict, not {type(kind).__name__}"
            )
        return make_pipeline(StandardScaler(), clone(kind))
    if kind == "logistic":
        clf = LogisticRegression(max_iter=1000)
    elif kind == "mlp":
        # sbi's c2st uses two hidden layers of 10 * dim units; capped so that 784-D stays cheap
        width = max(16, min(10 * dim, 128))
        # no early stopping: its 10% validation split starves small samples (sbi does the same)
        clf = MLPClassifier(hidden_layer_sizes=(width, width), max_iter=1000, random_state=seed)
    elif kind == "knn":
        k = max(1, int(math.sqrt(n_train)))
        clf = KNeighborsClassifier(n_neighbors=k + (k % 2 == 0))  # odd k: no ties of votes
    else:
        raise DgmError(f"unknown classifier {kind!r}; choose one of {', '.join(CLASSIFIERS)}")
    return make_pipeline(StandardScaler(), clf)


def c2st(
    x: Tensor,
    y: Tensor,
    *,
    classifier: Any = "mlp",
    features: Features | None = None,
    test_fraction: float = 0.5,
    null: str = "binomial",
    num_permutations: int = 1000,
    seed: int = 0,
) -> TwoSampleResult:
    """Classifier two-sample test: held-out accuracy of a classifier telling ``x`` from ``y``.

    The larger sample is subsampled to the size ``n`` of the smaller, so that chance accuracy is
    exactly 1/2. The ``2n`` pooled examples (label 0 for ``x``, 1 for ``y``) are split, stratified,
    into a training part and a test part of ``n_test = 2 round(n * test_fraction)`` examples; the
    classifier (standardised inputs) is fit on the first and its accuracy ``t`` measured on the
    second. Under ``P = Q`` the test labels are exchangeable given the trained classifier, so

    * ``null="binomial"``: ``n_test * t ~ Binomial(n_test, 1/2)`` (Lopez-Paz & Oquab 2017 use its
      normal approximation ``N(1/2, 1/(4 n_test))``); p-value ``P(Bin >= n_test * t)``.
    * ``null="permutation"``: the exact conditional null, the accuracy of the fixed predictions
      under ``num_permutations`` random permutations of the test labels (vectorised);
      p-value ``(1 + #{t_perm >= t}) / (1 + num_permutations)``.

    Both p-values are one-sided (accuracy above 1/2) and valid at any ``n``; the accuracy takes
    discrete values, so the test is slightly conservative.

    Args:
        x, y: samples ``(N, ...)`` and ``(M, ...)``; flattened to vectors.
        classifier: ``"logistic"``, ``"mlp"`` (two hidden layers of ``min(10 D, 128)`` units, as in
            sbi's ``c2st``), ``"knn"`` (``k ~ sqrt(n_train)``), or any scikit-learn classifier
            (cloned).
        features: optional map ``(N, ...) -> (N, F)`` applied to both samples first.
        test_fraction: share of each sample held out for testing.
        null: ``"binomial"`` or ``"permutation"``.
        seed: seeds subsampling, the split, the classifier and the permutations.

    Returns:
        ``TwoSampleResult(statistic=accuracy, p_value, details)`` with ``n_train``, ``n_test``,
        ``classifier`` and ``null`` in ``details``.
    """
    if null not in ("binomial", "permutation"):
        raise DgmError(f"null must be 'binomial' or 'permutation', not {null!r}")
    if not 0.0 < test_fraction < 1.0:
        raise DgmError(f"test_fraction must lie strictly between 0 and 1, not {test_fraction}")
    xm, ym = _as_matrix(x, features, "x"), _as_matrix(y, features, "y")  # (N, D), (M, D)
    _check_dims(xm, ym)
    g = torch.Generator().manual_seed(seed)
    n = min(xm.shape[0], ym.shape[0])
    xm = xm[torch.randperm(xm.shape[0], generator=g)[:n]]  # (n, D)
    ym = ym[torch.randperm(ym.shape[0], generator=g)[:n]]  # (n, D)
    n_te = round(n * test_fraction)
    if n_te < 1 or n - n_te < 1:
        raise DgmError(f"c2st needs at least one training and one test example per sample, n={n}")
    # the permutation above is random, so the first n_te rows of each are a random stratified split
    z_tr = torch.cat([xm[n_te:], ym[n_te:]]).numpy()  # (2(n - n_te), D)
    l_tr = np.r_[np.zeros(n - n_te), np.ones(n - n_te)]
    z_te = torch.cat([xm[:n_te], ym[:n_te]]).numpy()  # (2 n_te, D)
    l_te = np.r_[np.zeros(n_te), np.ones(n_te)]
    from sklearn.exceptions import ConvergenceWarning

    clf = _classifier(classifier, xm.shape[1], z_tr.shape[0], seed)
    with warnings.catch_warnings():
        # an MLP stopped by max_iter is still a classifier: the null distribution stays valid
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(z_tr, l_tr)
    pred = torch.from_numpy(np.asarray(clf.predict(z_te), dtype=np.float64))  # (2 n_te,)
    labels = torch.from_numpy(l_te)  # (2 n_te,)
    m = labels.numel()
    correct = int((pred == labels).sum())
    acc = correct / m
    if null == "binomial":
        from scipy.stats import binom

        p = float(binom.sf(correct - 1, m, 0.5))
    else:
        perms = torch.rand(num_permutations, m, generator=g).argsort(dim=1)  # (P, m)
        acc_perm = (pred[None, :] == labels[perms]).double().mean(dim=1)  # (P,)
        p = (1 + int((acc_perm >= acc - 1e-12).sum())) / (1 + num_permutations)
    name = classifier if isinstance(classifier, str) else type(classifier).__name__
    return TwoSampleResult(
        acc,
        p,
        {"n_train": int(z_tr.shape[0]), "n_test": m, "classifier": name, "null": null},
    )


# ------------------------------------------------------------------------------------------ MMD
def _sq_dists(a: Tensor, b: Tensor) -> Tensor:
    """Squared Euclidean distances ``(A, B)``, clamped at 0 against rounding (built in place:
    on large blocks, allocating temporaries costs more than the arithmetic)."""
    sq = torch.addmm(b.pow(2).sum(1)[None, :], a, b.T, alpha=-2.0)  # (A, B) |b|^2 - 2 a.b
    return sq.add_(a.pow(2).sum(1)[:, None]).clamp_min_(0.0)


def gaussian_kernel(a: Tensor, b: Tensor, bandwidths: Sequence[float]) -> Tensor:
    """Mean of Gaussian kernels ``k_s(a, b) = exp(-|a - b|^2 / (2 s^2))`` over ``bandwidths``.

    ``a (A, D)``, ``b (B, D)`` -> ``(A, B)``. The mean of characteristic kernels is characteristic
    and keeps ``k(a, a) = 1``.
    """
    sq = _sq_dists(a, b)  # (A, B)
    if len(bandwidths) == 1:
        return sq.mul_(-0.5 / bandwidths[0] ** 2).exp_()
    out = torch.zeros_like(sq)
    tmp = torch.empty_like(sq)
    for s in bandwidths:
        out.add_(torch.mul(sq, -0.5 / s**2, out=tmp).exp_())
    return out.div_(len(bandwidths))


def median_bandwidth(z: Tensor, max_points: int = 1000, seed: int = 0) -> float:
    """Median heuristic: the median Euclidean distance between distinct points of ``z (N, D)``
    (Gretton et al. 2012), computed on a random subset of at most ``max_points`` points."""
    z = z.reshape(z.shape[0], -1).to(torch.float64)
    if z.shape[0] > max_points:
        idx = torch.randperm(z.shape[0], generator=torch.Generator().manual_seed(seed))
        z = z[idx[:max_points]]
    n = z.shape[0]
    iu = torch.triu_indices(n, n, offset=1)
    d = _sq_dists(z, z)[iu[0], iu[1]].sqrt()  # (n (n - 1) / 2,)
    med = float(d.median()) if d.numel() else 0.0
    if med <= 0.0:
        pos = d[d > 0]
        med = float(pos.median()) if pos.numel() else 1.0  # many ties (discrete data)
    return med


def resolve_bandwidths(z: Tensor, bandwidth: Bandwidth, seed: int = 0) -> list[float]:
    """Bandwidths for ``bandwidth``: a number or list as given, ``"median"`` the median heuristic,
    ``"mixture"`` the median times ``MIXTURE_SCALES`` (0.25 to 4)."""
    if isinstance(bandwidth, str):
        if bandwidth not in ("median", "mixture"):
            raise DgmError(
                f"bandwidth must be a number, a list, 'median' or 'mixture', not {bandwidth!r}"
            )
        med = median_bandwidth(z, seed=seed)
        return [med] if bandwidth == "median" else [med * s for s in MIXTURE_SCALES]
    values = (
        [float(bandwidth)] if isinstance(bandwidth, (int, float)) else list(map(float, bandwidth))
    )
    if not values or any(not (v > 0 and math.isfinite(v)) for v in values):
        raise DgmError(f"kernel bandwidths must be positive and finite, not {bandwidth!r}")
    return values


def _mmd2_columns(z: Tensor, w: Tensor, m: int, bandwidths: Sequence[float], chunk: int) -> Tensor:
    """Unbiased MMD^2 for every labelling in ``w (N, P)`` (1 = first sample, ``m`` ones a column).

    With ``K`` the pooled kernel matrix, ``r = K 1``, ``T = 1'K1``, ``d = diag K`` and
    ``A = w'Kw``: the within-x sum is ``A - w'd``, the within-y sum ``T - 2 w'r + A - (1-w)'d``
    and the cross sum ``w'r - A``. Only ``K w`` is needed: one matrix product per chunk of rows.
    """
    n_all = z.shape[0]
    n = n_all - m
    quad = torch.zeros(w.shape[1], dtype=torch.float64)  # (P,) w'Kw
    wr = torch.zeros_like(quad)  # (P,) w'r
    wd = torch.zeros_like(quad)  # (P,) w'd
    total, trace = 0.0, 0.0
    for start in range(0, n_all, chunk):
        rows = slice(start, min(start + chunk, n_all))
        k = gaussian_kernel(z[rows], z, bandwidths)  # (b, N)
        r = k.sum(1)  # (b,)
        d = k.diagonal(offset=start)  # (b,)
        quad += (w[rows] * (k @ w)).sum(0)
        wr += w[rows].T @ r
        wd += w[rows].T @ d
        total += float(r.sum())
        trace += float(d.sum())
    within_x = quad - wd
    within_y = total - 2.0 * wr + quad - (trace - wd)
    cross = wr - quad
    return within_x / (m * (m - 1)) + within_y / (n * (n - 1)) - 2.0 * cross / (m * n)  # (P,)


def _chunk_rows(n_all: int, num_cols: int, budget: int = 2**24) -> int:
    """Rows of the kernel matrix per chunk so that a chunk and its products stay ~128 MB."""
    return max(1, min(n_all, budget // max(1, n_all + num_cols)))


def mmd2_unbiased(
    x: Tensor, y: Tensor, bandwidth: Bandwidth = "median", *, features: Features | None = None
) -> float:
    """Unbiased estimate of the squared MMD with a Gaussian kernel (Gretton et al. 2012, eq. 3):

    ``MMD_u^2 = sum_{i != j} k(x_i, x_j) / (m (m-1)) + sum_{i != j} k(y_i, y_j) / (n (n-1))
    - 2 sum_{i, j} k(x_i, y_j) / (m n)``.

    It can be negative; its expectation is 0 when ``P = Q``. ``bandwidth`` as in
    :func:`resolve_bandwidths` (computed on the pooled sample).
    """
    xm, ym = _as_matrix(x, features, "x"), _as_matrix(y, features, "y")
    _check_dims(xm, ym)
    z = torch.cat([xm, ym])  # (N, D)
    bws = resolve_bandwidths(z, bandwidth)
    w = torch.zeros(z.shape[0], 1, dtype=torch.float64)
    w[: xm.shape[0]] = 1.0
    return float(_mmd2_columns(z, w, xm.shape[0], bws, _chunk_rows(z.shape[0], 1))[0])


def mmd(
    x: Tensor,
    y: Tensor,
    *,
    bandwidth: Bandwidth = "median",
    features: Features | None = None,
    num_permutations: int = 200,
    seed: int = 0,
    batch_permutations: int = 256,
) -> TwoSampleResult:
    """Kernel two-sample test: unbiased MMD^2 and its permutation p-value (Gretton et al. 2012).

    The pooled sample ``z = (x, y)`` is relabelled at random ``num_permutations`` times; each
    relabelling's statistic is a quadratic form ``w' K w`` of the kernel matrix with the 0/1 label
    vector ``w``, so batches of ``batch_permutations`` permutations cost one product ``K W``
    (the kernel matrix is built in chunks of rows and never held whole). The p-value is
    ``(1 + #{MMD^2_perm >= MMD^2}) / (1 + num_permutations)``, exact at level alpha for any
    sample size. Bandwidths come from the pooled sample (``"median"``: the median heuristic,
    ``"mixture"``: the median times 0.25..4, or numbers); they do not depend on the labels, so
    the permutation null stays exact.

    Returns:
        ``TwoSampleResult(statistic=MMD_u^2, p_value, details={"bandwidths", "m", "n",
        "num_permutations"})``.
    """
    if num_permutations < 1:
        raise DgmError(f"num_permutations must be at least 1, not {num_permutations}")
    xm, ym = _as_matrix(x, features, "x"), _as_matrix(y, features, "y")  # (m, D), (n, D)
    _check_dims(xm, ym)
    z = torch.cat([xm, ym])  # (N, D)
    m, n_all = xm.shape[0], z.shape[0]
    bws = resolve_bandwidths(z, bandwidth, seed)
    g = torch.Generator().manual_seed(seed)
    observed = torch.zeros(n_all, 1, dtype=torch.float64)
    observed[:m] = 1.0
    stats = []
    done = 0
    first = True
    while done < num_permutations:
        b = min(batch_permutations, num_permutations - done)
        perm = torch.rand(b, n_all, generator=g).argsort(dim=1)  # (b, N)
        w = (perm < m).double().T  # (N, b): row i is in "x" when its rank is below m
        if first:
            w = torch.cat([observed, w], dim=1)  # column 0: the observed labelling
        stats.append(_mmd2_columns(z, w, m, bws, _chunk_rows(n_all, w.shape[1])))
        done += b
        first = False
    values = torch.cat(stats)  # (1 + P,)
    stat, null = float(values[0]), values[1:]
    # a relative tolerance so that float ties with the observed value count as ties
    tol = 1e-12 * max(1.0, abs(stat))
    p = (1 + int((null >= stat - tol).sum())) / (1 + num_permutations)
    return TwoSampleResult(
        stat,
        p,
        {"bandwidths": bws, "m": m, "n": n_all - m, "num_permutations": num_permutations},
    )
