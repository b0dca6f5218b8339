"""Mode coverage of samples from a mixture of well-separated modes (``ring8``, ``grid25``, ...).

The protocol of the mode-collapse literature (Metz et al., "Unrolled GANs", ICLR 2017; Srivastava et
al., "VEEGAN", NeurIPS 2017; Lin et al., "PacGAN", NeurIPS 2018): register each sample to its
nearest mode; a sample is **high quality** when it lies within ``num_std`` (3) standard deviations
of that mode; a mode is **captured** when at least ``min_fraction`` (1/5) of its expected share of
the samples, ``min_fraction * n / K``, are high-quality samples registered to it (PacGAN's rule: with
2500 samples on 25 modes, a mode with fewer than 20 is lost). The **KL** from the histogram of
high-quality samples over modes to the uniform distribution, ``sum_k p_k log(K p_k)``, is 0 when all
modes are equally covered and ``log K`` when all samples sit on one mode.

Exact samples of ``ring8`` or ``grid25`` capture every mode, with about
``1 - exp(-9/2) = 98.9%`` high-quality samples (the fraction of a 2-D Gaussian within 3 std).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dgm.core.errors import DgmError

__all__ = ["mode_coverage", "mode_histogram"]


def mode_histogram(samples: Tensor, modes: Tensor, std: float, num_std: float = 3.0) -> Tensor:
    """Number of high-quality samples registered to each mode, ``(K,)`` int64.

    ``samples (N, D)``, ``modes (K, D)``; a sample counts for its nearest mode when its distance
    to it is at most ``num_std * std``.
    """
    if samples.dim() != 2 or modes.dim() != 2 or samples.shape[1] != modes.shape[1]:
        raise DgmError(
            f"samples {tuple(samples.shape)} and modes {tuple(modes.shape)} must be (N, D) and "
            "(K, D) with the same D"
        )
    if not std > 0:
        raise DgmError(f"the mode standard deviation must be positive, not {std}")
    s = samples.detach().to("cpu", torch.float64)
    mu = modes.detach().to("cpu", torch.float64)
    finite = torch.isfinite(s).all(dim=1)  # (N,) non-finite samples are never high quality
    s = s[finite]
    d = torch.cdist(s, mu)  # (N, K)
    dist, nearest = d.min(dim=1)  # (N,), (N,)
    good = dist <= num_std * std
    return torch.bincount(nearest[good], minlength=mu.shape[0])  # (K,)


def mode_coverage(
    samples: Tensor,
    modes: Tensor,
    std: float,
    *,
    num_std: float = 3.0,
    min_fraction: float = 0.2,
) -> dict[str, float | int]:
    """Modes captured, high-quality fraction and KL(mode histogram || uniform) of ``samples``.

    Args:
        samples: ``(N, D)`` points, e.g. a model's samples.
        modes: ``(K, D)`` mode centres (``dataset.density.modes``).
        std: the modes' standard deviation (``dataset.density.mode_std``).
        num_std: a sample within ``num_std * std`` of its nearest mode is high quality.
        min_fraction: a mode is captured with at least ``min_fraction * N / K`` high-quality
            samples (at least one).

    Returns:
        ``{"modes_captured", "modes_total", "high_quality", "kl_uniform", "min_count"}``;
        ``kl_uniform`` is ``log K`` (the largest value) when there is no high-quality sample.
    """
    n = samples.shape[0]
    if n == 0:
        raise DgmError("mode coverage needs at least one sample")
    counts = mode_histogram(samples, modes, std, num_std)  # (K,)
    k = counts.numel()
    min_count = max(1, math.ceil(min_fraction * n / k))
    good = int(counts.sum())
    if good:
        p = counts.double() / good  # (K,)
        nz = p > 0
        kl = float((p[nz] * torch.log(p[nz] * k)).sum())
    else:
        kl = math.log(k)
    return {
        "modes_captured": int((counts >= min_count).sum()),
        "modes_total": k,
        "high_quality": good / n,
        "kl_uniform": max(kl, 0.0),
        "min_count": min_count,
    }
