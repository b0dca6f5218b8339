"""Karras et al.'s deterministic Heun sampler (``sampler="edm"``) of ``ddpm`` and ``score-sde`` on
Gaussian data, where the optimal noise prediction is known in closed form (float64): it must
reproduce the data's moments, and spend exactly the network evaluations it reports."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from dgm.core.errors import ConfigError
from dgm.core.spec import DataSpec
from dgm.models.diffusion import DDPM, DDPMConfig, ScoreSDE, ScoreSDEConfig
from dgm.samplers.ode import edm_heun, edm_sigmas

D64 = torch.float64
MU = torch.tensor([1.0, -0.5], dtype=D64)
COV = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=D64)
LAM, U = torch.linalg.eigh(COV)


def solve_noised(d: Tensor, a2: Tensor, s2: Tensor) -> Tensor:
    """``(a2 COV + s2 I)^-1 d`` for rows ``d (B, 2)``."""
    w = d @ U
    return (w / (a2[:, None] * LAM + s2[:, None])) @ U.T


class Counting(nn.Module):
    """The exact eps of the Gaussian data for a model whose ``t`` input maps to ``(m_t, s_t)``,
    counting its calls."""

    def __init__(self, marginal):
        super().__init__()
        self.marginal, self.calls = marginal, 0

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        self.calls += 1
        m, s = self.marginal(t)
        return s[:, None] * solve_noised(z - m[:, None] * MU, m**2, s**2)


def ddpm(timesteps: int = 1000) -> DDPM:
    m = DDPM(DataSpec((2,)), DDPMConfig(timesteps=timesteps, width=8, depth=1, time_dim=8))
    m = m.double()
    abar = m.schedule.alphas_cumprod
    m.net = Counting(lambda t: (abar[t.long()].sqrt(), (1 - abar[t.long()]).sqrt()))
    return m


def score_sde() -> ScoreSDE:
    m = ScoreSDE(DataSpec((2,)), ScoreSDEConfig(width=8, depth=1, time_dim=8)).double()
    m.net = Counting(lambda t: m.sde.marginal(t.to(D64) / 999.0))
    return m


def check_moments(x: Tensor, extra: float) -> None:
    n = x.shape[0]
    se_mean = (COV.diagonal() / n).sqrt()
    assert ((x.mean(0) - MU).abs() < 5 * se_mean).all(), x.mean(0)
    se_cov = ((COV.diagonal()[:, None] * COV.diagonal()[None, :] + COV**2) / n).sqrt()
    assert ((torch.cov(x.T) - COV).abs() < 5 * se_cov + extra * COV.abs()).all(), torch.cov(x.T)


def test_edm_grid_is_karras_eq_5():
    s = edm_sigmas(0.002, 80.0, 4, rho=7.0)
    i = torch.arange(4, dtype=D64)
    want = (80 ** (1 / 7) + i / 3 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    torch.testing.assert_close(s, torch.cat([want, torch.zeros(1, dtype=D64)]))
    assert s[0] == pytest.approx(80.0) and s[3] == pytest.approx(0.002)


def test_edm_heun_is_second_order_on_a_linear_ode():
    """dx/dsigma = x / sigma has x = c sigma: Heun's trapezoid is exact on it between nonzero
    levels, and the last Euler step lands on 0 exactly."""
    x, nfe = edm_heun(lambda x, i: x / float(sig[i]), torch.ones(3, dtype=D64) * 8.0,
                      sig := edm_sigmas(0.5, 8.0, 5))  # fmt: skip
    assert nfe == 9
    torch.testing.assert_close(x, torch.zeros(3, dtype=D64))


@pytest.mark.parametrize("make,steps,extra", [(ddpm, 18, 0.02), (score_sde, 18, 0.02)])
def test_edm_sampler_reproduces_the_gaussian_data_and_counts_its_evaluations(make, steps, extra):
    torch.manual_seed(0)
    m = make()
    x = m.sample(3000, sampler="edm", steps=steps)
    check_moments(x, extra)
    assert m.net.calls == m.nfe(sampler="edm", steps=steps) == 2 * steps - 1


def test_ddpm_edm_levels_are_trained_steps_and_decrease():
    m = ddpm(timesteps=50)
    levels = m.edm_levels(60)
    assert levels[0] == 49 and levels[-1] == 0 and levels == sorted(set(levels), reverse=True)
    m.net.calls = 0
    m.sample(4, sampler="edm", steps=60)
    assert m.net.calls == m.nfe(sampler="edm", steps=60) == 2 * len(levels) - 1 < 2 * 60 - 1


def test_edm_options_are_checked():
    m = ddpm(timesteps=20)
    with pytest.raises(ConfigError, match="does not take 'eta'"):
        m.sample(2, sampler="edm", eta=0.5)
    with pytest.raises(ConfigError, match="rho must be positive"):
        m.sample(2, sampler="edm", rho=0.0)
    with pytest.raises(ConfigError, match="does not take 'rho'"):
        score_sde().sample(2, sampler="sde", rho=7.0)
