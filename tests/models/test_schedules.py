"""Noise schedules: closed-form marginals against the one-step process, posteriors against Bayes'
rule, DDIM against DDPM, the VP SDE against its discrete limit, eps <-> score (float64)."""

from __future__ import annotations

import math

import pytest
import torch

from dgm.core.errors import ConfigError
from dgm.models.diffusion.schedules import (
    VPSDE,
    DiscreteSchedule,
    eps_to_score,
    geometric_sigmas,
    make_betas,
    score_to_eps,
)

D64 = torch.float64


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_closed_form_marginal_matches_iterating_the_one_step_process(kind):
    sch = DiscreteSchedule.named(kind, 200)
    x0 = torch.tensor([[1.5, -2.0, 0.3]], dtype=D64)
    # exact moment recursion: m_t = sqrt(alpha_t) m_{t-1}, v_t = alpha_t v_{t-1} + beta_t
    m, v = x0.clone(), torch.zeros_like(x0)
    for t in range(sch.timesteps):
        a = float(sch.alphas[t])
        m, v = math.sqrt(a) * m, a * v + float(sch.betas[t])
        if t % 10 == 9:
            mean, var = sch.marginal(x0, torch.tensor([t]))
            assert torch.allclose(mean, m, rtol=1e-12, atol=1e-12)
            assert torch.allclose(var, v, rtol=1e-12, atol=1e-12)
    # Monte Carlo: iterate the sampled one-step process and compare with add_noise draws
    g = torch.Generator().manual_seed(0)
    n, t_end = 10_000, 60
    x = x0.expand(n, 3).clone()
    for t in range(t_end + 1):
        x = sch.one_step(x, torch.randn(x.shape, generator=g, dtype=D64), torch.full((n,), t))
    direct = sch.add_noise(x0.expand(n, 3), torch.randn(n, 3, generator=g, dtype=D64),
                           torch.full((n,), t_end))  # fmt: skip
    mean, var = sch.marginal(x0, torch.tensor([t_end]))
    for draws in (x, direct):
        se = (var / n).sqrt()
        assert ((draws.mean(0) - mean[0]).abs() < 5 * se[0]).all()
        assert ((draws.var(0) / var[0] - 1).abs() < 5 * math.sqrt(2 / n)).all()


def test_posterior_is_bayes_rule():
    sch = DiscreteSchedule.named("cosine", 50)
    g = torch.Generator().manual_seed(1)
    x0, xt = torch.randn(4, 3, generator=g, dtype=D64), torch.randn(4, 3, generator=g, dtype=D64)
    for t in (1, 7, 49):
        abar_prev = float(sch.alphas_cumprod[t - 1])
        a, b = float(sch.alphas[t]), float(sch.betas[t])
        # prior N(sqrt(abar_prev) x0, 1 - abar_prev) times likelihood N(x_t; sqrt(a) x, b)
        prec = 1 / (1 - abar_prev) + a / b
        mean = (math.sqrt(abar_prev) * x0 / (1 - abar_prev) + math.sqrt(a) * xt / b) / prec
        m, v = sch.posterior(x0, xt, torch.full((4,), t))
        torch.testing.assert_close(m, mean)
        torch.testing.assert_close(v, torch.full_like(v, 1 / prec))
    _, v0 = sch.posterior(x0, xt, torch.zeros(4, dtype=torch.long))
    assert (v0 == 0).all()  # beta~_1 = 0: the last step is deterministic


def test_ddim_with_eta_one_and_unit_strides_is_the_ancestral_step():
    sch = DiscreteSchedule.named("linear", 100)
    g = torch.Generator().manual_seed(2)
    xt, eps = torch.randn(6, 2, generator=g, dtype=D64), torch.randn(6, 2, generator=g, dtype=D64)
    for t in (99, 40, 1):
        a = sch.step(eps, t, xt, eta=1.0, generator=torch.Generator().manual_seed(5))
        b = sch.ancestral_step(eps, t, xt, generator=torch.Generator().manual_seed(5))
        torch.testing.assert_close(a, b)
    # the last step returns x0^, and DDIM with eta = 0 is deterministic
    x0 = sch.predict_x0(xt, eps, torch.zeros(6, dtype=torch.long))
    torch.testing.assert_close(sch.step(eps, 0, xt), x0)
    torch.testing.assert_close(sch.step(eps, 50, xt, prev_t=10, eta=0.0),
                               sch.step(eps, 50, xt, prev_t=10, eta=0.0))  # fmt: skip


def test_ddim_step_is_exact_for_a_point_mass():
    """With data x0 fixed, eps = eps_from_x0 is the optimal noise, and any DDIM jump lands on the
    mean of q(x_s | x_0) shifted by the same noise direction: x_s = sqrt(abar_s) x0 + ... ."""
    sch = DiscreteSchedule.named("cosine", 100)
    x0 = torch.tensor([[0.5, -1.0]], dtype=D64)
    noise = torch.tensor([[0.3, 0.7]], dtype=D64)
    xt = sch.add_noise(x0, noise, torch.tensor([80]))
    eps = sch.eps_from_x0(xt, x0, torch.tensor([80]))
    xs = sch.step(eps, 80, xt, prev_t=20, eta=0.0)
    torch.testing.assert_close(xs, sch.add_noise(x0, noise, torch.tensor([20])))


def test_clipped_ddim_step_uses_the_noise_direction_of_the_clipped_x0():
    """The fused update equals the textbook one: clip x0^, recompute eps from it, then jump; the
    inputs are left untouched."""
    sch = DiscreteSchedule.named("linear", 100)
    g = torch.Generator().manual_seed(3)
    xt = 3 * torch.randn(5, 4, generator=g, dtype=D64)  # large: many x0^ outside [-1, 1]
    eps = torch.randn(5, 4, generator=g, dtype=D64)
    xt0, eps0 = xt.clone(), eps.clone()
    for t, s, eta in ((90, 40, 0.0), (30, 29, 0.5), (10, -1, 0.0)):
        abar_t = sch.alphas_cumprod[t]
        abar_s = torch.tensor(1.0, dtype=D64) if s < 0 else sch.alphas_cumprod[s]
        x0 = ((xt - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()).clamp(-1, 1)
        e = (xt - abar_t.sqrt() * x0) / (1 - abar_t).sqrt()
        sigma2 = eta**2 * (1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s)
        want = x0 if s < 0 else abar_s.sqrt() * x0 + (1 - abar_s - sigma2).sqrt() * e
        gen = torch.Generator().manual_seed(7)
        if s >= 0 and eta > 0:
            want = want + sigma2.sqrt() * torch.randn(xt.shape, generator=gen, dtype=D64)
        got = sch.step(eps, t, xt, prev_t=s, eta=eta, clip=1.0,
                       generator=torch.Generator().manual_seed(7))  # fmt: skip
        torch.testing.assert_close(got, want)
        assert not torch.equal(got, sch.step(eps, t, xt, prev_t=s, eta=0.0))  # clipping acted
    torch.testing.assert_close(xt, xt0, rtol=0, atol=0)
    torch.testing.assert_close(eps, eps0, rtol=0, atol=0)


def test_ddim_timesteps():
    sch = DiscreteSchedule.named("linear", 1000)
    for k in (1, 20, 50, 1000):
        seq = sch.ddim_timesteps(k)
        assert len(seq) == k and seq[-1] == 0 and seq == sorted(set(seq), reverse=True)
        assert k == 1 or seq[0] == 999
    with pytest.raises(ConfigError, match="steps"):
        sch.ddim_timesteps(1001)


def test_schedules_shapes_and_errors():
    lin, cos = make_betas("linear", 1000), make_betas("cosine", 1000)
    assert lin[0] == pytest.approx(1e-4) and lin[-1] == pytest.approx(0.02)
    assert (cos > 0).all() and (cos <= 0.999).all()
    abar = torch.cumprod(1 - cos, 0)
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert float(abar[499]) == pytest.approx(f(500) / f(0), rel=1e-9)
    assert make_betas("linear", 10).max() <= 0.999
    with pytest.raises(ConfigError, match="linear' or 'cosine"):
        make_betas("quadratic", 10)
    with pytest.raises(ConfigError, match="timesteps"):
        make_betas("linear", 1)


def test_vp_sde_is_the_limit_of_the_discrete_schedule():
    sde = VPSDE(0.1, 20.0)
    N = 4000
    i = torch.arange(1, N + 1, dtype=D64)
    betas = sde.beta(i / N) / N
    abar = torch.cumprod(1 - betas, 0)
    for t in (0.1, 0.5, 1.0):
        m, s = sde.marginal(torch.tensor(t, dtype=D64))
        # log sqrt(abar) = 1/2 sum log(1 - beta_i) -> -1/2 int beta, an O(1/N) error
        log_discrete = 0.5 * float(abar[int(t * N) - 1].log())
        assert log_discrete == pytest.approx(float(m.log()), abs=0.02)
        assert float(m**2 + s**2) == pytest.approx(1.0, abs=1e-12)
    # log m_t = -1/2 int_0^t beta: check by quadrature
    t = torch.linspace(0, 0.7, 7001, dtype=D64)
    integral = torch.trapezoid(sde.beta(t), t)
    assert float(sde.log_mean_coeff(torch.tensor(0.7, dtype=D64))) == pytest.approx(
        -0.5 * float(integral), rel=1e-8
    )


def test_eps_and_score_parameterisations_agree():
    """On Gaussian data the optimal noise prediction E[eps | x_t] (Gaussian conditioning) equals
    -sqrt(1 - abar_t) times the score of q(x_t) (autograd of its log-density)."""
    g = torch.Generator().manual_seed(3)
    mu = torch.tensor([1.0, -0.5], dtype=D64)
    cov = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=D64)
    sch = DiscreteSchedule.named("linear", 1000)
    for t in (0, 300, 999):
        abar = float(sch.alphas_cumprod[t])
        m_t, c_t = math.sqrt(abar) * mu, abar * cov + (1 - abar) * torch.eye(2, dtype=D64)
        x = torch.randn(5, 2, generator=g, dtype=D64).requires_grad_(True)
        logq = torch.distributions.MultivariateNormal(m_t, c_t).log_prob(x).sum()
        (score,) = torch.autograd.grad(logq, x)
        # Cov(eps, x_t) = sqrt(1 - abar) I, so E[eps | x_t] = sqrt(1 - abar) C_t^-1 (x_t - m_t)
        eps = math.sqrt(1 - abar) * torch.linalg.solve(c_t, (x.detach() - m_t).T).T
        std = math.sqrt(1 - abar)
        torch.testing.assert_close(eps_to_score(eps, std), score)
        torch.testing.assert_close(score_to_eps(score, std), eps)
        tt = torch.full((5,), t)
        torch.testing.assert_close(sch.std(tt, x), torch.full((5, 1), std, dtype=D64))


def test_geometric_sigmas():
    s = geometric_sigmas(10.0, 0.01, 4)
    torch.testing.assert_close(s, torch.tensor([10.0, 1.0, 0.1, 0.01], dtype=D64))
    with pytest.raises(ConfigError):
        geometric_sigmas(0.01, 10.0, 4)
