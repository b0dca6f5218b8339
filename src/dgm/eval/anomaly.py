"""Likelihood-based anomaly detection: AUROC / AUPRC of a score, and built-in distribution shifts.

An input is unusual when the model finds it expensive: score in-distribution and shifted inputs
with the model's log-likelihood (``dgm score``) and ask how well the score separates them.

* :func:`auroc` is the Mann-Whitney U statistic divided by ``n_pos n_neg``: the probability that a
  random positive outscores a random negative, ties counting 1/2 (Hanley & McNeil, Radiology 1982).
* :func:`auprc` is the average precision ``sum_n (R_n - R_{n-1}) P_n`` over distinct thresholds,
  as scikit-learn's ``average_precision_score`` (no interpolation).
* Shifts: :func:`pixel_noise`, :func:`pixel_flips` (binary images), :func:`fgsm` (adversarial
  perturbations against a classifier, as in PixelDefend: Song, Kim, Nowozin, Ermon & Kushman,
  "PixelDefend", ICLR 2018, who found that such inputs get low likelihood under PixelCNN), and
  :func:`resize_images` to bring the dataset's declared out-of-distribution partner to the shape
  and levels of this one (:func:`other_dataset`); :func:`builtin_shifts` applies those that suit
  a dataset.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dgm.core.errors import DgmError
from dgm.data import Dataset, load

__all__ = [
    "auprc",
    "builtin_shifts",
    "other_dataset",
    "auroc",
    "fgsm",
    "mann_whitney_u",
    "pixel_flips",
    "pixel_noise",
    "resize_images",
]


def _scores(t: Tensor, what: str) -> Tensor:
    t = torch.as_tensor(t).detach().reshape(-1).to("cpu", torch.float64)
    if t.numel() == 0:
        raise DgmError(f"{what} scores are empty; give at least one score")
    if torch.isnan(t).any():
        raise DgmError(f"{what} scores contain NaN; score every input with a finite value")
    return t


def _midranks(values: Tensor) -> Tensor:
    """Ranks 1..N of ``values (N,)``, tied values sharing the mean of their ranks."""
    order = values.argsort()
    sorted_v = values[order]
    _, inverse, counts = torch.unique_consecutive(sorted_v, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()  # (G,) last rank of each tie group
    mid = ends - (counts.double() - 1.0) / 2.0  # (G,) mean rank of each group
    ranks = torch.empty_like(values)
    ranks[order] = mid[inverse]
    return ranks


def mann_whitney_u(positive: Tensor, negative: Tensor) -> tuple[float, float]:
    """Mann-Whitney U of ``positive`` against ``negative`` and its two-sided p-value.

    ``U = R_pos - n_pos (n_pos + 1) / 2`` with ``R_pos`` the sum of the positives' mid-ranks in the
    pooled sample; ``U`` counts pairs with the positive larger, ties counting 1/2. The p-value uses
    the normal approximation with the tie correction of the variance,
    ``var U = n_p n_n / 12 * (N + 1 - sum(t^3 - t) / (N (N - 1)))``, and a continuity correction.
    """
    pos, neg = _scores(positive, "positive"), _scores(negative, "negative")
    n_p, n_n = pos.numel(), neg.numel()
    ranks = _midranks(torch.cat([pos, neg]))
    u = float(ranks[:n_p].sum()) - n_p * (n_p + 1) / 2.0
    n = n_p + n_n
    _, counts = torch.unique(torch.cat([pos, neg]), return_counts=True)
    ties = float((counts.double() ** 3 - counts.double()).sum())
    var = n_p * n_n / 12.0 * ((n + 1) - ties / (n * (n - 1))) if n > 1 else 0.0
    if var <= 0:
        return u, 1.0
    z = (abs(u - n_p * n_n / 2.0) - 0.5) / math.sqrt(var)
    return u, float(min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2.0))))


def auroc(positive: Tensor, negative: Tensor) -> float:
    """Area under the ROC curve of a score meant to be larger on ``positive`` than on ``negative``:
    ``P(s_pos > s_neg) + P(s_pos = s_neg) / 2 = U / (n_pos n_neg)``.

    For anomaly detection with a log-likelihood, ``auroc(ll_in, ll_out)``; 1 is perfect
    separation, 0.5 chance.

    >>> auroc(torch.tensor([3.0, 2.0]), torch.tensor([1.0, 2.0]))
    0.875
    """
    u, _ = mann_whitney_u(positive, negative)
    return u / (torch.as_tensor(positive).numel() * torch.as_tensor(negative).numel())


def auprc(positive: Tensor, negative: Tensor) -> float:
    """Average precision of a score meant to be larger on ``positive``:
    ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds in decreasing order,
    ``P_n`` and ``R_n`` the precision and recall at the n-th threshold (tied scores enter together).

    Unlike AUROC it depends on which class is positive and on the class balance (a random score
    gets the positive fraction). For anomaly detection the anomalies are usually the positive class
    and the score is the NLL: ``auprc(-ll_out, -ll_in)``.
    """
    pos, neg = _scores(positive, "positive"), _scores(negative, "negative")
    s = torch.cat([pos, neg])  # (N,)
    lab = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)])  # (N,)
    order = s.argsort(descending=True)
    s, lab = s[order], lab[order]
    _, counts = torch.unique_consecutive(s, return_counts=True)
    last = counts.cumsum(0) - 1  # (G,) index of the last example of each threshold group
    tp = lab.cumsum(0)[last]  # (G,)
    predicted = (last + 1).double()  # (G,)
    precision = tp / predicted
    recall = tp / pos.numel()
    prev = torch.cat([recall.new_zeros(1), recall[:-1]])
    return float(((recall - prev) * precision).sum())


# ---------------------------------------------------------------------------------------- shifts
def _check_images(x: Tensor, what: str) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise DgmError(f"{what} needs a floating-point tensor of images, not {type(x).__name__}")


def pixel_noise(
    x: Tensor,
    std: float,
    *,
    levels: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Add Gaussian noise of ``std`` times the value range to every value of ``x (N, ...)``.

    With ``levels`` (discrete data ``0..levels-1``) the range is ``levels - 1`` and the result is
    rounded and clipped back to valid levels, so it stays in the data space of the model.
    """
    _check_images(x, "pixel_noise")
    scale = float(levels - 1) if levels else 1.0
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    out = x + std * scale * noise
    if levels:
        out = out.round().clamp(0, levels - 1)
    return out


def pixel_flips(x: Tensor, p: float, *, generator: torch.Generator | None = None) -> Tensor:
    """Flip each pixel of binary images ``x (N, ...)`` with values 0/1 independently with
    probability ``p``."""
    _check_images(x, "pixel_flips")
    if not ((x == 0) | (x == 1)).all():
        raise DgmError("pixel_flips needs binary images with values 0 and 1; use pixel_noise")
    if not 0.0 <= p <= 1.0:
        raise DgmError(f"the flip probability must lie in [0, 1], not {p}")
    flip = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device) < p
    return torch.where(flip, 1.0 - x, x)


def fgsm(
    logits: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    levels: int | None = None,
    bounds: tuple[float, float] | None = None,
) -> Tensor:
    """Fast gradient sign method (Goodfellow, Shlens & Szegedy, ICLR 2015):
    ``x_adv = x + eps * range * sign(grad_x CE(logits(x), y))``, clipped to the data range.

    ``logits`` is a differentiable classifier of raw inputs ``(N, ...) -> (N, C)``. With
    ``levels`` the range is ``levels - 1`` and the result is rounded to valid levels (for binary
    data ``eps >= 0.5`` flips every pixel the gradient pushes away from its value; prefer
    :func:`pixel_flips` there). ``bounds`` clips continuous data.
    """
    _check_images(x, "fgsm")
    xa = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(logits(xa), y.to(x.device))
        (grad,) = torch.autograd.grad(loss, xa)
    scale = float(levels - 1) if levels else 1.0
    out = x.detach() + eps * scale * grad.sign()
    if levels:
        out = out.round().clamp(0, levels - 1)
    elif bounds is not None:
        out = out.clamp(*bounds)
    return out


def resize_images(
    x: Tensor, size: tuple[int, int], levels_from: int, levels_to: int, channels: int = 1
) -> Tensor:
    """Bring images of another dataset to this one's size and levels: ``(N, C, H, W)`` with values
    ``0..levels_from-1`` to ``(N, channels, *size)`` with values ``0..levels_to-1``.

    Area averaging when shrinking, bilinear interpolation when enlarging; channels are averaged
    or repeated. E.g. MNIST (28x28, 256 levels) as an out-of-distribution set for the 8x8 digits.
    """
    _check_images(x, "resize_images")
    if x.dim() != 4:
        raise DgmError(f"resize_images needs images (N, C, H, W), not {tuple(x.shape)}")
    v = x / (levels_from - 1)  # (N, C, H, W) in [0, 1]
    if v.shape[1] != channels:
        v = v.mean(1, keepdim=True).expand(-1, channels, -1, -1)
    shrink = size[0] <= v.shape[2] and size[1] <= v.shape[3]
    v = F.interpolate(v, size=size, mode="area" if shrink else "bilinear", align_corners=None)
    return (v * (levels_to - 1)).round().clamp(0, levels_to - 1)


def other_dataset(dataset: Dataset, data_dir: Any) -> tuple[Tensor, Tensor | None] | None:
    """The test images of the dataset's out-of-distribution partner (``dataset.ood_dataset``,
    e.g. ``mnist`` for ``digits``) brought to this one's shape and levels, with their labels (the
    same ten classes); ``None`` when the dataset names no partner or it cannot be loaded."""
    spec = dataset.spec
    if dataset.ood_dataset is None or spec.levels is None:
        return None
    try:
        other = load(dataset.ood_dataset, data_dir=data_dir)
    except DgmError:
        return None
    src, labels = other.split("test")
    size = spec.event_shape[1:]
    return resize_images(src, size, other.spec.levels, spec.levels, spec.event_shape[0]), labels


def builtin_shifts(
    dataset: Dataset,
    x: Tensor,
    y: Tensor | None = None,
    features: Any = None,
    *,
    seed: int = 0,
    data_dir: Any = None,
) -> dict[str, tuple[Tensor, Tensor | None]]:
    """The built-in shifts of examples ``x`` (labels ``y``) of ``dataset``: name ->
    ``(x_shifted, labels)``, all in the dataset's raw data space.

    * vector data: ``"noise"``, Gaussian noise of half the data's per-dimension std;
    * images with more than 2 levels: ``"noise"`` (10% of the range, rounded) and, given a
      classifier ``features`` with a ``logits`` method and labels, ``"fgsm"`` at 10% of the range;
    * binary images: ``"flips"`` with probability 0.05;
    * images whose dataset names an out-of-distribution partner (``dataset.ood_dataset``):
      ``"other"``, the partner's test images resized to this one (:func:`other_dataset`), when it
      can be loaded.
    """
    spec = dataset.spec
    g = torch.Generator().manual_seed(seed + 7)
    if not spec.is_image:
        scale = x.std(0, keepdim=True)  # (1, D) noise at half the data's spread
        return {"noise": (x + 0.5 * scale * torch.randn(x.shape, generator=g), y)}
    levels = spec.levels
    out: dict[str, tuple[Tensor, Tensor | None]] = {}
    if levels == 2:
        out["flips"] = (pixel_flips(x, 0.05, generator=g), y)
    else:
        out["noise"] = (pixel_noise(x, 0.1, levels=levels, generator=g), y)
        if hasattr(features, "logits") and y is not None:
            out["fgsm"] = (fgsm(features.logits, x, y, 0.1, levels=levels), y)
    other = other_dataset(dataset, data_dir)
    if other is not None:
        xo, yo = other
        out["other"] = (xo[: x.shape[0]], None if yo is None else yo[: x.shape[0]])
    return out
