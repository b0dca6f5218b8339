"""Feature-space scores: Frechet distance (FID), kernel distance (KID) and precision/recall.

Each takes two sets of features ``(N, F)`` — or raw samples and a ``features`` callable — and is a
pure function of tensors. The usual features are those of Inception-v3 (Heusel et al. 2017), whose
weights must be downloaded: **Inception FID is not possible offline**, so dgm uses the features of a
small classifier it trains on the dataset's own labels (:mod:`dgm.eval.features`), or any
extractor you plug in. Figures computed on those features measure the same thing, but they are
**not comparable with published FID / KID values**, only with each other (same data, same feature
network).

References:
    M. Heusel, H. Ramsauer, T. Unterthiner, B. Nessler, S. Hochreiter, "GANs trained by a two
    time-scale update rule converge to a local Nash equilibrium", NeurIPS 2017 (FID).
    M. Binkowski, D. J. Sutherland, M. Arbel, A. Gretton, "Demystifying MMD GANs", ICLR 2018 (KID).
    T. Kynkaanniemi, T. Karras, S. Laine, J. Lehtinen, T. Aila, "Improved precision and recall
    metric for assessing generative models", NeurIPS 2019.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from dgm.core.errors import DgmError

__all__ = ["fid", "frechet_distance", "gaussian_stats", "kid", "precision_recall"]

Features = Callable[[Tensor], Tensor]


def _features(t: Tensor, features: Features | None, what: str) -> Tensor:
    if features is not None:
        with torch.no_grad():
            t = features(t)
    if not isinstance(t, Tensor) or t.dim() < 1 or t.shape[0] < 2:
        shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise DgmError(f"{what} needs a tensor of at least 2 examples, got {shape}")
    t = t.detach().reshape(t.shape[0], -1).to("cpu", torch.float64)  # (N, F)
    if not torch.isfinite(t).all():
        raise DgmError(f"{what} contains NaN or infinite values; feature scores need finite data")
    return t


def _pair(x: Tensor, y: Tensor, features: Features | None) -> tuple[Tensor, Tensor]:
    fx, fy = _features(x, features, "the first set"), _features(y, features, "the second set")
    if fx.shape[1] != fy.shape[1]:
        raise DgmError(f"the feature sets have {fx.shape[1]} and {fy.shape[1]} dimensions")
    return fx, fy


def gaussian_stats(feats: Tensor) -> tuple[Tensor, Tensor]:
    """Mean ``(F,)`` and unbiased covariance ``(F, F)`` of features ``(N, F)``, in float64."""
    f = feats.reshape(feats.shape[0], -1).to(torch.float64)
    mu = f.mean(0)  # (F,)
    c = f - mu  # (N, F)
    return mu, c.T @ c / (f.shape[0] - 1)


def _sqrt_psd(a: Tensor) -> Tensor:
    """Symmetric square root of a symmetric positive semi-definite matrix (eigendecomposition)."""
    vals, vecs = torch.linalg.eigh(0.5 * (a + a.T))
    return (vecs * vals.clamp_min(0.0).sqrt()) @ vecs.T


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """Squared Frechet (2-Wasserstein) distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``:

    ``d^2 = |mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^{1/2})``.

    ``tr (sigma1 sigma2)^{1/2}`` is computed as ``tr (s sigma2 s)^{1/2}`` with ``s = sigma1^{1/2}``:
    ``s sigma2 s`` is symmetric PSD and similar to ``sigma1 sigma2``, so one symmetric
    eigendecomposition replaces ``scipy.linalg.sqrtm`` of a non-symmetric product (and never
    returns complex values). Result clamped at 0 against rounding.
    """
    mu1, mu2 = mu1.to(torch.float64), mu2.to(torch.float64)
    sigma1, sigma2 = sigma1.to(torch.float64), sigma2.to(torch.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise DgmError(
            f"Gaussians of different dimension: {tuple(mu1.shape)} vs {tuple(mu2.shape)}"
        )
    s = _sqrt_psd(sigma1)  # (F, F)
    eig = torch.linalg.eigvalsh(s @ sigma2 @ s)  # (F,)
    tr_sqrt = eig.clamp_min(0.0).sqrt().sum()
    d = (mu1 - mu2).pow(2).sum() + torch.trace(sigma1) + torch.trace(sigma2) - 2.0 * tr_sqrt
    return max(float(d), 0.0)


def fid(x: Tensor, y: Tensor, *, features: Features | None = None) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (Heusel et al. 2017).

    ``x (N, ...)``, ``y (M, ...)``: features, or raw samples when ``features`` maps them to
    ``(N, F)``. FID is biased upwards at small N (its estimate of the trace term is); compare
    figures at equal N. Not comparable with Inception-based FIDs (see the module docstring).

    >>> f = torch.randn(500, 4, generator=torch.Generator().manual_seed(0))
    >>> round(fid(f, f), 6)
    0.0
    """
    fx, fy = _pair(x, y, features)
    return frechet_distance(*gaussian_stats(fx), *gaussian_stats(fy))


def _poly_kernel(
    a: Tensor, b: Tensor, degree: int, gamma: float, coef0: float, out: Tensor
) -> Tensor:
    """``(gamma a b' + coef0)^degree`` for batches ``(s, m, F)`` -> ``(s, m, m)``, written into
    ``out`` (reusing one buffer avoids allocating hundreds of MB per call)."""
    torch.baddbmm(out.fill_(coef0), a, b.transpose(-1, -2), alpha=gamma, out=out)
    return out.pow_(degree)


def kid(
    x: Tensor,
    y: Tensor,
    *,
    features: Features | None = None,
    num_subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al. 2018): the unbiased MMD^2 with the polynomial
    kernel ``k(a, b) = (gamma a.b + coef0)^degree`` (default ``gamma = 1/F``, cubic), averaged over
    ``num_subsets`` random subsets of ``min(subset_size, N, M)`` examples from each set.

    All subsets are processed as one batch. Unlike FID the estimate is unbiased, so it is
    comparable across sample sizes; it can be slightly negative. Returns ``(mean, std)`` over
    subsets.
    """
    fx, fy = _pair(x, y, features)
    m = min(subset_size, fx.shape[0], fy.shape[0])
    if m < 2:
        raise DgmError("kid needs subsets of at least 2 examples")
    g = gamma if gamma is not None else 1.0 / fx.shape[1]
    gen = torch.Generator().manual_seed(seed)
    out = []
    buf = None
    batch = max(1, 2**22 // (m * m))  # subsets per batch: kernel blocks stay ~32 MB
    for start in range(0, num_subsets, batch):
        s = min(batch, num_subsets - start)
        ix = torch.rand(s, fx.shape[0], generator=gen).argsort(1)[:, :m]  # (s, m)
        iy = torch.rand(s, fy.shape[0], generator=gen).argsort(1)[:, :m]  # (s, m)
        a, b = fx[ix], fy[iy]  # (s, m, F)
        if buf is None or buf.shape[0] != s:
            buf = torch.empty(s, m, m, dtype=torch.float64)
        within = torch.zeros(s, dtype=torch.float64)
        for u in (a, b):
            k = _poly_kernel(u, u, degree, g, coef0, buf)  # (s, m, m)
            within += k.sum((1, 2)) - k.diagonal(dim1=1, dim2=2).sum(1)
        cross = _poly_kernel(a, b, degree, g, coef0, buf).mean((1, 2))  # (s,)
        out.append(within / (m * (m - 1)) - 2.0 * cross)  # (s,)
    values = torch.cat(out)  # (num_subsets,)
    std = float(values.std()) if values.numel() > 1 else 0.0
    return float(values.mean()), std


def _kth_nn_radius(f: Tensor, k: int, chunk: int) -> Tensor:
    """Distance from each row of ``f (N, F)`` to its k-th nearest other row, ``(N,)``."""
    out = []
    sq_f = f.pow(2).sum(1)  # (N,)
    for start in range(0, f.shape[0], chunk):
        blk = f[start : start + chunk]  # (b, F)
        d = (blk.pow(2).sum(1)[:, None] + sq_f[None] - 2.0 * blk @ f.T).clamp_min_(0.0)  # (b, N)
        # the k+1 smallest include the point itself at distance 0
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, k].sqrt())
    return torch.cat(out)


def _coverage(points: Tensor, centres: Tensor, radii: Tensor, chunk: int) -> Tensor:
    """Fraction of ``points`` that lie in at least one ball ``(centres, radii)``."""
    inside = 0
    sq_c, r2 = centres.pow(2).sum(1), radii.pow(2)  # (M,), (M,)
    for start in range(0, points.shape[0], chunk):
        p = points[start : start + chunk]  # (b, F)
        d = (p.pow(2).sum(1)[:, None] + sq_c[None] - 2.0 * p @ centres.T).clamp_min_(0.0)  # (b, M)
        inside += int((d <= r2[None]).any(dim=1).sum())
    return torch.tensor(inside / points.shape[0])


def precision_recall(
    real: Tensor, fake: Tensor, *, features: Features | None = None, k: int = 3
) -> dict[str, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN manifolds.

    Each set's manifold is the union of balls centred at its points with radius the distance to
    the point's ``k``-th nearest neighbour in the same set. **Precision** is the fraction of
    ``fake`` inside the manifold of ``real`` (how many samples are realistic); **recall** the
    fraction of ``real`` inside the manifold of ``fake`` (how much of the data is covered).
    The paper uses ``k = 3``; compare figures only at equal set sizes.

    Returns ``{"precision", "recall", "k"}``.
    """
    fr, ff = _pair(real, fake, features)
    if k < 1 or k >= min(fr.shape[0], ff.shape[0]):
        raise DgmError(f"k must be between 1 and the smaller set size minus 1, not {k}")
    chunk = max(1, 2**24 // max(fr.shape[0], ff.shape[0]))
    r_real = _kth_nn_radius(fr, k, chunk)  # (N,)
    r_fake = _kth_nn_radius(ff, k, chunk)  # (M,)
    precision = float(_coverage(ff, fr, r_real, chunk))
    recall = float(_coverage(fr, ff, r_fake, chunk))
    return {"precision": precision, "recall": recall, "k": k}
