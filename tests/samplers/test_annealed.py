"""Annealed Langevin dynamics: it is ULA with step alpha_i / 2 at each level, and on a Gaussian
target (whose noised scores are known) it reaches the moments of ULA's stationary law."""

from __future__ import annotations

import math

import pytest
import torch

from dgm.core.errors import ConfigError
from dgm.samplers.annealed import annealed_langevin
from dgm.samplers.langevin import ula

D64 = torch.float64


def gaussian_score(var: float):
    """Score of N(0, var) convolved with N(0, sigma_i^2) at level i."""

    def score(sigmas):
        return lambda x, i: -x / (var + float(sigmas[i]) ** 2)

    return score


def test_annealed_langevin_is_ula_level_by_level():
    sigmas = torch.tensor([2.0, 0.5, 0.1], dtype=D64)
    score = gaussian_score(1.0)(sigmas)
    x0 = torch.randn(7, 3, generator=torch.Generator().manual_seed(0), dtype=D64)
    out = annealed_langevin(x0, score, sigmas, 4, 0.01, denoise=False,
                            generator=torch.Generator().manual_seed(1))  # fmt: skip
    g = torch.Generator().manual_seed(1)
    x = x0
    for i, s in enumerate(sigmas.tolist()):
        x = ula(x, lambda z, i=i: score(z, i), 0.01 * (s / 0.1) ** 2 / 2, 4, generator=g)
    torch.testing.assert_close(out, x)
    # the denoising step is Tweedie's x + sigma_L^2 s(x)
    den = annealed_langevin(x0, score, sigmas, 4, 0.01, denoise=True,
                            generator=torch.Generator().manual_seed(1))  # fmt: skip
    torch.testing.assert_close(den, x + 0.01 * score(x, 2))


def test_annealed_langevin_reaches_ulas_stationary_law_on_a_gaussian():
    """Target N(0, v) smoothed to N(0, v + sigma_L^2): ULA with step h has stationary variance
    a / (1 - h / (2a)), a = v + sigma_L^2 (the sampler module's formula)."""
    v, n = 0.5, 20_000
    sigmas = torch.logspace(math.log10(3.0), math.log10(0.1), 8, dtype=D64)
    lr = 0.02
    x = annealed_langevin(3.0 * torch.randn(n, 1, dtype=D64, generator=torch.Generator().manual_seed(2)),
                          gaussian_score(v)(sigmas), sigmas, 100, lr, denoise=False,
                          generator=torch.Generator().manual_seed(3))  # fmt: skip
    a, h = v + 0.01, lr / 2
    expected = a / (1 - h / (2 * a))
    assert abs(float(x.mean())) < 5 * math.sqrt(expected / n)
    assert float(x.var()) == pytest.approx(expected, rel=5 * math.sqrt(2 / n))


def test_bad_arguments_are_one_clear_error():
    x = torch.zeros(2, 2)
    with pytest.raises(ConfigError, match="non-increasing"):
        annealed_langevin(x, lambda z, i: z, torch.tensor([0.1, 1.0]), 2, 0.1)
    with pytest.raises(ConfigError, match="n_steps_each"):
        annealed_langevin(x, lambda z, i: z, torch.tensor([1.0, 0.1]), 0, 0.1)
    with pytest.raises(ConfigError, match="step_lr"):
        annealed_langevin(x, lambda z, i: z, torch.tensor([1.0, 0.1]), 2, 0.0)
