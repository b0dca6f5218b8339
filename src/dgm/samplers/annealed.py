r"""Annealed Langevin dynamics on a noise-conditional score (Song & Ermon 2019).

Song & Ermon, "Generative Modeling by Estimating Gradients of the Data Distribution", NeurIPS 2019,
arXiv:1907.05600, Algorithm 1. For noise levels ``sigma_1 > ... > sigma_L`` and a score
``s(x, i) ~ grad log q_{sigma_i}(x)`` of the data convolved with ``N(0, sigma_i^2 I)``, run at each
level ``T`` Langevin steps

.. math::

    x \leftarrow x + \frac{\alpha_i}{2} s(x, i) + \sqrt{\alpha_i}\, z, \qquad
    \alpha_i = \epsilon\, \sigma_i^2 / \sigma_L^2,

starting each level from the end of the previous one. This is unadjusted Langevin
(:func:`dgm.samplers.langevin.ula`) with step size ``h = alpha_i / 2`` on the level's score, so the
update is written once. With ``denoise=True`` the last state gets Tweedie's denoising step
``x + sigma_L^2 s(x, L)``, the posterior mean ``E[x_0 | x]`` at the last level (Jolicoeur-Martineau
et al. 2020; Song & Ermon 2020, "Improved Techniques for Training Score-Based Generative Models"),
which removes the residual noise of scale ``sigma_L``.

>>> import torch
>>> sig = torch.tensor([1.0, 0.1], dtype=torch.float64)
>>> x = annealed_langevin(torch.zeros(3, 2, dtype=torch.float64),
...                       lambda x, i: -x / (1 + sig[i] ** 2), sig, 5, 0.01)
>>> x.shape
torch.Size([3, 2])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from dgm.core.errors import ConfigError
from dgm.samplers.langevin import ula

__all__ = ["annealed_langevin"]


def annealed_langevin(
    x0: Tensor,
    score: Callable[[Tensor, int], Tensor],
    sigmas: Tensor,
    n_steps_each: int,
    step_lr: float,
    *,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    clip: float | None = None,
) -> Tensor:
    """Annealed Langevin dynamics (see the module docstring).

    Args:
        x0: initial states ``(B, *event)`` (Song & Ermon start from noise of scale ``sigma_1``).
        score: ``score(x, i) -> (B, *event)``, the score at noise level index ``i``.
        sigmas: ``(L,)`` decreasing noise levels.
        n_steps_each: Langevin steps ``T`` per level.
        step_lr: ``epsilon``; the step at the last level is ``epsilon / 2``.
        denoise: finish with the Tweedie step ``x + sigma_L^2 s(x, L)``.
        generator: source of the Gaussian noise.
        clip: clamp the state to ``[-clip, clip]`` after every step (off by default).

    Returns:
        final states ``(B, *event)``, detached.
    """
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
    if sigmas.numel() < 1 or not (sigmas > 0).all() or (sigmas[1:] > sigmas[:-1]).any():
        raise ConfigError("annealed Langevin needs positive, non-increasing noise levels sigmas")
    if n_steps_each < 1:
        raise ConfigError(f"n_steps_each must be at least 1, not {n_steps_each}")
    if not step_lr > 0:
        raise ConfigError(f"step_lr must be positive, not {step_lr}")
    last = float(sigmas[-1])
    x = x0.detach()
    for i, sigma in enumerate(sigmas.tolist()):
        alpha = step_lr * (sigma / last) ** 2

        def grad(z: Tensor, i: int = i) -> Tensor:
            return score(z, i)

        x = ula(x, grad, alpha / 2, n_steps_each, generator=generator, clip=clip)
    if denoise:
        with torch.no_grad():
            x = x + last**2 * score(x, sigmas.numel() - 1)
        if clip is not None:
            x = x.clamp(-clip, clip)
    return x.detach()
