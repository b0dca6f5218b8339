r"""Completion (inpainting) with a trained DDPM: RePaint's replacement method.

Lugmayr, Danelljan, Romero, Yu, Timofte & Van Gool, "RePaint: Inpainting using Denoising
Diffusion Probabilistic Models", CVPR 2022, arXiv:2201.09865 (Alg. 1).

With ``m`` the mask (1: observed) and ``x_0`` the observed data in model space, every reverse
step of the ancestral chain is replaced by

.. math::

    x_{t-1}^{known} \sim q(x_{t-1} \mid x_0) = N(\sqrt{\bar\alpha_{t-1}}\, x_0,\ (1 - \bar\alpha_{t-1}) I),
    \qquad x_{t-1}^{unknown} \sim p_\theta(x_{t-1} \mid x_t),

    x_{t-1} = m \odot x_{t-1}^{known} + (1 - m) \odot x_{t-1}^{unknown},

so the unknown region is denoised while the known region is the data noised to the same level.
Because the two halves are drawn independently, the unknown region only sees the known one
through the next step's network; RePaint harmonises them by *resampling*: ``r`` times at each
step (``resample = r``) the merged ``x_{t-1}`` is diffused back one step,
``x_t ~ N(\sqrt{1 - \beta_t} x_{t-1}, \beta_t I)``, and the step is redone (the paper's jump
length 1). ``resample = 1`` is the plain replacement method (Song et al. 2021's "imputation").

This is an *approximation* of the conditional ``p(x_unknown | x_known)``, documented as such: it
is exact only when the network's score is exact and ``resample`` is large; a tiny model's
completion is a heuristic, judged by its samples. The observed entries of the returned tensor
equal the input exactly (the last step writes them back).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from dgm.core.errors import ConfigError
from dgm.models.diffusion.schedules import DiscreteSchedule

__all__ = ["repaint"]


def repaint(
    eps: Callable[[Tensor, int], Tensor],
    schedule: DiscreteSchedule,
    z0: Tensor,
    mask: Tensor,
    *,
    resample: int = 1,
    variance: str = "small",
    clip: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """RePaint (module docstring) in model space: ``z0`` ``(B, *event)`` with its observed
    entries (the others are ignored), ``mask`` of its shape (True: observed), ``eps(z_t, t)`` the
    network's noise prediction at integer step ``t``; returns ``(B, *event)`` in model space
    whose observed entries are ``z0``'s."""
    if isinstance(resample, bool) or not isinstance(resample, int) or resample < 1:
        raise ConfigError(
            f"resample must be a positive integer (1: no resampling), not {resample!r}"
        )
    m = mask.to(z0.dtype)  # (B, *event)
    T = schedule.timesteps

    def noise() -> Tensor:
        return torch.randn(z0.shape, generator=generator, dtype=z0.dtype, device=z0.device)

    z = noise()  # x_T ~ N(0, I)
    for t in reversed(range(T)):
        for r in range(resample):
            unknown = schedule.ancestral_step(
                eps(z, t), t, z, variance=variance, clip=clip, generator=generator
            )  # x_{t-1} ~ p(x_{t-1} | x_t)
            if t > 0:  # q(x_{t-1} | x_0): index t-1 of the schedule
                abar = float(schedule.alphas_cumprod[t - 1])
                known = math.sqrt(abar) * z0 + math.sqrt(1 - abar) * noise()
            else:
                known = z0
            z_prev = m * known + (1 - m) * unknown
            if r + 1 < resample and t > 0:  # back to step t: x_t ~ q(x_t | x_{t-1})
                beta = float(schedule.betas[t])
                z = math.sqrt(1 - beta) * z_prev + math.sqrt(beta) * noise()
            else:
                z = z_prev
    return torch.where(mask, z0, z)
