"""Exact-density metrics on pairs of densities whose KL and total variation are known."""

from __future__ import annotations

import math

import pytest
import torch

from dgm.eval.density import grid, grid_integral, kl_divergence, reverse_kl, total_variation


def gaussian(mu: tuple[float, float], std: float = 1.0):
    m = torch.tensor(mu, dtype=torch.float64)

    def log_prob(x: torch.Tensor) -> torch.Tensor:
        d = (x.double() - m) / std
        return -0.5 * d.pow(2).sum(1) - 2 * math.log(std) - math.log(2 * math.pi)

    def sample(n: int, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return m + std * torch.randn(n, 2, generator=g, dtype=torch.float64)

    return log_prob, sample


def test_grid_points_and_integral():
    pts, area = grid((0.0, 1.0, 0.0, 2.0), n=4)
    assert pts.shape == (16, 2) and area == pytest.approx(0.125)
    assert pts[0].tolist() == [0.125, 0.25] and pts[1].tolist() == [0.375, 0.25]
    log_p, _ = gaussian((0.5, -0.5), 0.7)
    assert grid_integral(log_p, (-6, 6, -6, 6), n=200) == pytest.approx(1.0, abs=1e-6)


def test_forward_kl_of_two_gaussians():
    # KL(N(0, I) || N(mu, s^2 I)) in 2-D = 2 log s + (2 + |mu|^2) / (2 s^2) - 1
    log_p, sample_p = gaussian((0.0, 0.0))
    log_q, _ = gaussian((1.0, 0.5), 1.5)
    exact = 2 * math.log(1.5) + (2 + 1.25) / (2 * 1.5**2) - 1
    r = kl_divergence(log_p, log_q, sample_p(20_000))
    assert abs(r["kl"] - exact) < 4 * r["kl_sem"] and r["n"] == 20_000


def test_reverse_kl_of_two_gaussians_and_of_a_truncated_density():
    log_p, _ = gaussian((0.0, 0.0))
    log_q, sample_q = gaussian((0.6, -0.8))
    r = reverse_kl(log_p, log_q, sample_q(20_000))
    assert abs(r["kl"] - 0.5) < 4 * r["kl_sem"] and r["outside"] == 0.0  # |mu|^2 / 2

    def log_square(x: torch.Tensor) -> torch.Tensor:  # uniform on [-1, 1]^2
        inside = (x.abs() <= 1).all(1)
        return torch.where(inside, -math.log(4.0), -math.inf).double()

    r = reverse_kl(log_square, log_q, sample_q(1000))
    assert r["kl"] == math.inf and 0.5 < r["outside"] < 1.0


def test_total_variation_on_known_pairs():
    box = (-8.0, 8.0, -8.0, 8.0)
    log_p, _ = gaussian((0.0, 0.0))
    for shift in (0.5, 2.0):
        log_q, _ = gaussian((shift, 0.0))
        exact = math.erf(shift / (2 * math.sqrt(2)))  # 2 Phi(shift / 2) - 1
        assert total_variation(log_p, log_q, box, n=300) == pytest.approx(exact, abs=1e-4)
    assert total_variation(log_p, log_p, box, n=100) == 0.0
    log_far, _ = gaussian((30.0, 0.0))
    assert total_variation(log_p, log_far, (-8, 40, -8, 8), n=400) == pytest.approx(1.0, abs=1e-4)
