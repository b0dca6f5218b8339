"""Diffusion models on a Gaussian data distribution, where the optimal noise prediction and score
are known in closed form: plugged in as stub networks, every reverse sampler must reproduce the
data moments and the probability-flow ODE must give the exact log-density (float64)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import Tensor, nn

from dgm.core.errors import ConfigError, DgmError
from dgm.core.spec import DataSpec
from dgm.models.diffusion import DDPM, NCSN, DDPMConfig, NCSNConfig, ScoreSDE, ScoreSDEConfig
from dgm.models.diffusion.ddpm import discretized_gaussian_log_prob

D64 = torch.float64
MU = torch.tensor([1.0, -0.5], dtype=D64)
COV = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=D64)
LAM, U = torch.linalg.eigh(COV)  # COV = U diag(LAM) U^T
DATA = torch.distributions.MultivariateNormal(MU, COV)


def solve_noised(d: Tensor, a2: Tensor, s2: Tensor) -> Tensor:
    """``(a2 COV + s2 I)^-1 d`` for rows ``d (B, 2)`` and per-row ``a2, s2 (B,)``."""
    w = d @ U  # (B, 2) in the eigenbasis
    return (w / (a2[:, None] * LAM + s2[:, None])) @ U.T


class DDPMStub(nn.Module):
    """Optimal eps for the discrete schedule: sqrt(1-abar) C_t^-1 (x - sqrt(abar) mu)."""

    def __init__(self, schedule):
        super().__init__()
        self.abar = schedule.alphas_cumprod

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        abar = self.abar[t.long()]
        return (1 - abar).sqrt()[:, None] * solve_noised(
            z - abar.sqrt()[:, None] * MU, abar, 1 - abar
        )


class SDEStub(nn.Module):
    """Optimal eps for the VP SDE (time input 999 t): s_t C_t^-1 (x - m_t mu)."""

    def __init__(self, sde):
        super().__init__()
        self.sde = sde

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        m, s = self.sde.marginal(t.to(D64) / 999.0)
        return s[:, None] * solve_noised(z - m[:, None] * MU, m**2, s**2)


class NCSNStub(nn.Module):
    """sigma_i times the score of N(mu, COV + sigma_i^2 I) (the network is sigma * score)."""

    def __init__(self, sigmas):
        super().__init__()
        self.sigmas = sigmas

    def forward(self, z: Tensor, i: Tensor) -> Tensor:
        sig = self.sigmas[i.long()].to(D64)
        return -sig[:, None] * solve_noised(z - MU, torch.ones_like(sig), sig**2)


def check_moments(x: Tensor, extra: float = 0.0) -> None:
    """Mean within 5 standard errors; covariance entries within 5 standard errors (+ ``extra``
    relative slack for a known discretisation bias)."""
    n = x.shape[0]
    assert torch.isfinite(x).all()
    se_mean = (COV.diagonal() / n).sqrt()
    assert ((x.mean(0) - MU).abs() < 5 * se_mean).all(), x.mean(0)
    cov = torch.cov(x.T)
    se_cov = ((COV.diagonal()[:, None] * COV.diagonal()[None, :] + COV**2) / n).sqrt()
    assert ((cov - COV).abs() < 5 * se_cov + extra * COV.abs()).all(), cov


def ddpm(schedule="linear", timesteps=1000, **kw) -> DDPM:
    m = DDPM(DataSpec((2,)), DDPMConfig(schedule=schedule, timesteps=timesteps, width=8, depth=1,
                                        time_dim=8, **kw)).double()  # fmt: skip
    m.net = DDPMStub(m.schedule)
    return m


@pytest.mark.slow
def test_ddpm_ancestral_sampling_reproduces_the_data_moments():
    torch.manual_seed(0)
    check_moments(ddpm(timesteps=250).sample(3000, sampler="ancestral"), extra=0.01)


@pytest.mark.parametrize("schedule,steps,extra", [("linear", 100, 0.02), ("cosine", 50, 0.03)])
def test_ddim_sampling_reproduces_the_data_moments(schedule, steps, extra):
    torch.manual_seed(1)
    check_moments(ddpm(schedule).sample(3000, sampler="ddim", steps=steps), extra)


def test_ddim_with_few_steps_keeps_the_mean_and_shrinks_the_variance():
    """For Gaussian data a deterministic DDIM jump is linear: the mean is exact for any number of
    steps, and by Cauchy-Schwarz the variance can only shrink (Song et al. 2021 see the same
    quality loss with few steps)."""
    torch.manual_seed(2)
    x = ddpm().sample(3000, sampler="ddim", steps=5)
    assert ((x.mean(0) - MU).abs() < 5 * (COV.diagonal() / 3000).sqrt()).all()
    assert (torch.cov(x.T).diagonal() < COV.diagonal()).all()


def test_ddpm_bound_is_below_the_exact_log_density():
    """With the optimal eps the ELBO is a lower bound on the exact Gaussian log-density."""
    torch.manual_seed(3)
    m = ddpm(timesteps=200)
    x = DATA.sample((400,))
    gap = DATA.log_prob(x) - m.elbo(x)
    assert gap.mean() > -3 * gap.std() / math.sqrt(400)
    assert gap.mean() < 3.0  # and not a vacuous bound
    values, name = m.log_likelihood(x)
    assert name.kind == "bound_estimate" and values.shape == (400,)
    assert "a stochastic estimate of a lower bound on log p" in str(name)
    assert "continuous density" in name.detail


def test_discretized_decoder_sums_to_one_over_the_levels():
    levels = 5
    grid = torch.linspace(-1, 1, levels, dtype=D64)[:, None]  # (L, 1)
    for mean, std in [(0.1, 0.3), (0.9, 0.01), (-3.0, 1.0), (0.5, 1e-4)]:
        lp = discretized_gaussian_log_prob(grid, torch.full_like(grid, mean),
                                           torch.full_like(grid, std), levels)  # fmt: skip
        assert float(lp.exp().sum()) == pytest.approx(1.0, abs=1e-9)
        assert (lp <= 0).all()


def test_discrete_bound_is_a_bound_on_probabilities():
    m = DDPM(DataSpec((1, 4, 4), "discrete", levels=4),
             DDPMConfig(timesteps=20, unet_width=8, time_dim=8)).double()  # fmt: skip
    x = torch.randint(0, 4, (6, 1, 4, 4)).double()
    values, name = m.log_likelihood(x)
    assert (values < 0).all() and "discretized Gaussian decoder" in name.detail
    s = m.sample(3, sampler="ancestral")
    assert ((s >= 0) & (s <= 3) & (s == s.round())).all()


def sde_model(**kw) -> ScoreSDE:
    m = ScoreSDE(DataSpec((2,)), ScoreSDEConfig(width=8, depth=1, time_dim=8, **kw)).double()
    m.net = SDEStub(m.sde)
    return m


def test_probability_flow_likelihood_is_the_exact_gaussian_log_density():
    m = sde_model(rtol=1e-7, atol=1e-7)
    x = DATA.sample((20,))
    with m.inference():
        ll, name = m.log_likelihood(x)
        z1, delta, log_det = m.probability_flow(x)
    assert "exact trace" in str(name) and m.exact_likelihood and name.kind == "exact_ode"
    # the ODE maps the data onto p_1 = N(m_1 mu, m_1^2 COV + s_1^2 I) exactly; with that prior in
    # place of the model's N(0, I) the change of variables gives log p(x) to solver precision
    m1, s1 = m.sde.marginal(torch.tensor(1.0, dtype=D64))
    p1 = torch.distributions.MultivariateNormal(m1 * MU, m1**2 * COV + s1**2 * torch.eye(2))
    torch.testing.assert_close(
        p1.log_prob(z1) + delta + log_det, DATA.log_prob(x), atol=2e-5, rtol=0
    )
    # the model's figure differs only by the prior mismatch, |log N(z_1; 0, I) - log p_1| < 0.03
    torch.testing.assert_close(ll, DATA.log_prob(x), atol=0.03, rtol=0)


def test_hutchinson_likelihood_is_an_unbiased_estimate_named_as_such():
    m = sde_model(trace="hutchinson", rtol=1e-6, atol=1e-6)
    assert not m.exact_likelihood and m.likelihood_bound == "log_prob_estimate"
    x = DATA.sample((4,)).repeat(200, 1)  # (800, 2): many probes per point
    torch.manual_seed(4)
    with m.inference():
        ll, name = m.log_likelihood(x)
    assert "Hutchinson" in str(name) and "neither exact nor a bound" in str(name)
    assert name.kind == "estimate"
    est = ll.view(200, 4)
    se = est.std(0) / math.sqrt(200)
    assert (est.std(0) > 0).all()  # it is random
    assert ((est.mean(0) - DATA.log_prob(x[:4])).abs() < 5 * se + 2e-3).all()


@pytest.mark.parametrize("sampler,steps", [("sde", 300), ("ode", 1)])
def test_reverse_sde_and_probability_flow_sampling_reproduce_the_data_moments(sampler, steps):
    torch.manual_seed(5)
    m = sde_model(rtol=1e-5, atol=1e-5)
    check_moments(m.sample(2000, sampler=sampler, steps=steps), extra=0.03)


def test_annealed_langevin_reproduces_the_data_moments():
    torch.manual_seed(6)
    m = NCSN(DataSpec((2,)), NCSNConfig(width=8, depth=1, time_dim=8, num_sigmas=10,
                                        sigma_max=5.0, sigma_min=0.05)).double()  # fmt: skip
    m.net = NCSNStub(m.sigmas)
    # ULA's O(h) bias at the last level is about h / (2 lambda) = 0.1 sigma_L^2 / (2 * 0.4)
    check_moments(m.sample(3000, steps_each=100), extra=0.02)


def test_ncsn_has_no_likelihood():
    m = NCSN(DataSpec((2,)), NCSNConfig(width=8, depth=1, time_dim=8))
    assert not m.exact_likelihood and m.likelihood_bound is None
    with pytest.raises(DgmError, match="no likelihood"):
        m.log_likelihood(torch.zeros(3, 2))


def test_ncsn_sets_its_largest_noise_level_from_the_data():
    m = NCSN(DataSpec((2,)), NCSNConfig(width=8, depth=1, time_dim=8, num_sigmas=5))
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0]])
    m.on_train_start(x)
    z, _ = m.to_model_space(x)
    assert float(m.sigmas[0]) == pytest.approx(float(torch.cdist(z, z).max()), rel=1e-5)
    assert float(m.sigmas[-1]) == pytest.approx(0.01)


def test_standardisation_enters_the_density_through_its_log_determinant():
    m = sde_model(rtol=1e-7, atol=1e-7)
    x = DATA.sample((10,))
    with m.inference():
        base = m.log_prob(x)
    # model space z = (x - shift) / scale: data scaled by 2 has its density divided by 4
    m.scale.fill_(2.0)
    with m.inference():
        scaled = m.log_prob(2 * x)
    torch.testing.assert_close(scaled, base - 2 * math.log(2.0))


def test_sampling_options_are_checked():
    m = ddpm(timesteps=10)
    with pytest.raises(ConfigError, match="sampler"):
        m.sample(2, sampler="euler")
    with pytest.raises(ConfigError, match="steps"):
        m.sample(2, sampler="ddim", steps=0)
    s = sde_model()
    with pytest.raises(ConfigError, match="sampler"):
        s.sample(2, sampler="pc")
    with pytest.raises(ConfigError, match="steps"):
        s.sample(2, steps=0)


@pytest.mark.slow
def test_end_to_end_train_sample_and_no_score_for_ncsn(tmp_path):
    """Train, load and sample through the API, and `dgm score` on a model without a likelihood
    exits with code 2 (a small file of 2-D points keeps the run's final evaluation short)."""
    import numpy as np

    import dgm
    from dgm.cli.main import main

    data = tmp_path / "points.npy"
    np.save(data, DATA.sample((300,)).numpy().astype(np.float32))
    out = dgm.train("ddpm", str(data), tmp_path / "d", steps=30,
                    model_config={"timesteps": 50, "width": 32, "depth": 1})  # fmt: skip
    model = dgm.load(out)
    with model.inference():
        s = model.sample(16, sampler="ddim", steps=10)
    assert s.shape == (16, 2) and torch.isfinite(s).all()
    assert json.loads((out / "summary.json").read_text())["likelihood_kind"] == "bound_estimate"
    run = dgm.train("ncsn", str(data), tmp_path / "n", steps=5,
                    model_config={"width": 16, "depth": 1, "num_sigmas": 3})  # fmt: skip
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((3, 2), dtype=np.float32))
    code = main(["score", str(run), "--input", str(x), "--out", str(tmp_path / "s.npy")])
    assert code == 2


def test_stratified_bound_is_an_unbiased_estimate_of_the_full_bound():
    torch.manual_seed(7)
    m = DDPM(DataSpec((2,)), DDPMConfig(timesteps=20, width=8, depth=1, time_dim=8)).double()
    x = DATA.sample((1,)).expand(3000, 2)  # one point, many independent draws of the terms
    with torch.no_grad():
        full = m.elbo(x)
        m.config.bound_terms = 4
        strat = m.elbo(x)
    se = math.sqrt(full.var() / 3000 + strat.var() / 3000)
    assert abs(float(full.mean() - strat.mean())) < 5 * se
    assert strat.var() > full.var()  # fewer terms, more variance


def test_default_reverse_variance_on_continuous_data_makes_the_bound_tight():
    """Every term of the bound (bound_terms=0) with the exact eps of the Gaussian data, in float64:
    with ``beta~_t`` (the old default, right for point masses) the bound lies about 1 nat above
    the exact NLL; with ``beta_t``, the default on continuous data, it lies within 0.25 nats and
    stays a bound (Ho et al. sec. 3.2: ``beta_t`` is exact for ``x_0 ~ N(0, I)``)."""
    gaps = {}
    for variance in ("small", "auto"):
        torch.manual_seed(11)
        m = ddpm(timesteps=1000, variance=variance, bound_terms=0)
        x = DATA.sample((1000,))
        with torch.no_grad():
            gap = DATA.log_prob(x) - m.elbo(x)  # bound on the NLL minus the exact NLL
        gaps[variance] = (float(gap.mean()), float(gap.std()) / math.sqrt(1000))
    assert ddpm().variance == "large"
    mean, se = gaps["auto"]
    assert -3 * se < mean < 0.25, gaps
    assert gaps["small"][0] > 0.6, gaps
    discrete = DDPM(DataSpec((1, 4, 4), kind="discrete", levels=4),
                    DDPMConfig(timesteps=12, unet_width=8, time_dim=8, unet_mults=(1,)))  # fmt: skip
    assert discrete.variance == "small"  # the levels are point masses


def test_the_bound_passes_at_most_an_inference_batch_through_the_network():
    """The bound's terms share network passes of at most the spec's inference batch of inputs
    (41 MNIST-sized images: larger passes page-fault their feature maps in anew every time)."""
    spec = DataSpec((1, 28, 28))
    cfg = {"timesteps": 12, "unet_width": 8, "time_dim": 8, "unet_mults": (1,), "bound_terms": 4}
    m = DDPM(spec, DDPMConfig(**cfg))
    sizes: list[int] = []
    eps = m.eps

    def counting(z, t, y=None):
        sizes.append(int(z.shape[0]))
        return eps(z, t, y)

    m.eps = counting  # type: ignore[method-assign]
    with torch.no_grad():
        m.elbo(torch.rand(20, 1, 28, 28))
    # 4 middle terms in passes of 2 x 20 images, then the decoder term's pass
    assert sizes == [40, 40, 20] and max(sizes) <= spec.inference_batch() == 41
