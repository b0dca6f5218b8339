"""Flow matching: the paths and their velocities, the OT coupling, and the probability-flow
likelihood against closed forms (float64)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from dgm.api import train_defaults_for
from dgm.core.config import translate_renamed
from dgm.core.errors import ConfigError
from dgm.core.spec import DataSpec
from dgm.models.diffusion.ddpm import DDPM
from dgm.models.flow_matching.consistency import Consistency
from dgm.models.flow_matching.model import FlowMatching, FlowMatchingConfig
from dgm.models.flow_matching.paths import (
    SIGMA_FLOOR,
    interpolate,
    ot_pairs,
    path_coefficients,
    sample_times,
    sinkhorn_pairs,
    sinkhorn_plan,
)
from dgm.models.flow_matching.reflow import Reflow, ReflowConfig
from dgm.samplers.ode import divergence_exact

D64 = torch.float64


@pytest.mark.parametrize("path,sigma_min", [("linear", 0.0), ("linear", 0.1), ("vp", 0.0)])
def test_path_ends_at_noise_and_data_and_target_is_its_time_derivative(path, sigma_min):
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(2, 5, 3, generator=g, dtype=D64)
    zeros, ones = torch.zeros(5, dtype=D64), torch.ones(5, dtype=D64)
    start, _ = interpolate(path, x0, x1, zeros, sigma_min)
    end, _ = interpolate(path, x0, x1, ones, sigma_min)
    torch.testing.assert_close(start, x0)
    # the linear path ends at x1 + sigma_min x0 (a N(x1, sigma_min^2) end); the vp one at x1
    torch.testing.assert_close(end, x1 + (sigma_min * x0 if path == "linear" else 0))
    t = torch.rand(5, generator=g, dtype=D64) * 0.9 + 0.05
    h = 1e-6
    plus, _ = interpolate(path, x0, x1, t + h, sigma_min)
    minus, _ = interpolate(path, x0, x1, t - h, sigma_min)
    _, target = interpolate(path, x0, x1, t, sigma_min)
    torch.testing.assert_close(target, (plus - minus) / (2 * h), atol=1e-8, rtol=1e-7)


def test_vp_path_preserves_variance():
    t = torch.linspace(0, 1, 11, dtype=D64)
    a, b, _, _ = path_coefficients("vp", t)
    torch.testing.assert_close(a**2 + b**2, torch.ones_like(t))


def test_ot_assignment_is_the_brute_force_optimum_and_beats_the_identity():
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        x0, x1 = torch.randn(2, 6, 2, generator=g, dtype=D64)
        perm = ot_pairs(x0, x1)
        assert sorted(perm.tolist()) == list(range(6))

        def cost(p, x0=x0, x1=x1):
            return float((x0[list(p)] - x1).square().sum())

        best = min(cost(p) for p in itertools.permutations(range(6)))
        assert cost(perm.tolist()) == pytest.approx(best, rel=1e-12)
        assert cost(perm.tolist()) <= cost(range(6))


def test_sinkhorn_plan_has_uniform_marginals_and_tends_to_the_assignment():
    g = torch.Generator().manual_seed(2)
    x0, x1 = torch.randn(2, 8, 2, generator=g, dtype=D64)
    plan = sinkhorn_plan(x0, x1, reg=0.05)
    torch.testing.assert_close(plan.sum(1), torch.full((8,), 1 / 8, dtype=D64), atol=1e-6, rtol=0)
    torch.testing.assert_close(plan.sum(0), torch.full((8,), 1 / 8, dtype=D64), atol=1e-6, rtol=0)
    sharp = sinkhorn_plan(x0, x1, reg=1e-3, max_iters=5000)
    perm = ot_pairs(x0, x1)
    assert torch.equal(sharp.argmax(0), perm)  # each data point's likeliest partner is its OT one
    g0 = torch.Generator().manual_seed(0)
    pairs = sinkhorn_pairs(x0, x1, reg=1e-3, generator=g0, max_iters=5000)
    assert torch.equal(pairs, perm)


def gaussian_field(mean, cov):
    """The marginal velocity of I-CFM on the straight path from N(0, I) to N(mean, cov), from
    Gaussian conditioning: E[x1 - x0 | x_t = x] = m + C_ux C_xx^-1 (x - t m)."""
    eye = torch.eye(len(mean), dtype=D64)

    def v(z, t):
        tt = t.reshape(-1, 1, 1)
        cxx = tt**2 * cov + (1 - tt) ** 2 * eye  # (B, D, D)
        cux = tt * cov - (1 - tt) * eye
        gain = cux @ torch.linalg.inv(cxx)
        return mean + (gain @ (z - t.reshape(-1, 1) * mean).unsqueeze(-1)).squeeze(-1)

    return v


def test_log_prob_and_samples_of_the_exact_gaussian_field_match_the_closed_form(monkeypatch):
    mean = torch.tensor([1.0, -0.5], dtype=D64)
    cov = torch.tensor([[1.0, 0.8], [0.8, 1.5]], dtype=D64)
    m = FlowMatching(DataSpec((2,)), FlowMatchingConfig(width=8, depth=1, rtol=1e-8, atol=1e-8))
    m = m.to(D64)
    monkeypatch.setattr(m, "velocity", gaussian_field(mean, cov))
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(3), dtype=D64) + mean
    want = torch.distributions.MultivariateNormal(mean, cov).log_prob(x)
    torch.testing.assert_close(m.log_prob(x), want, atol=1e-5, rtol=0)
    s = m.sample(20_000, method="rk4", steps=20, generator=torch.Generator().manual_seed(4))
    assert (s.mean(0) - mean).abs().max() < 0.04  # standard error about 0.01
    assert (torch.cov(s.T) - cov).abs().max() < 0.06


@pytest.mark.parametrize("fourier", [0, 6])
def test_exact_divergence_is_the_trace_of_the_autograd_jacobian(fourier):
    torch.manual_seed(0)
    cfg = FlowMatchingConfig(width=8, depth=1, fourier_features=fourier)
    m = FlowMatching(DataSpec((3,)), cfg).to(D64)
    z = torch.randn(4, 3, dtype=D64)
    t = torch.tensor(0.3, dtype=D64)
    zr = z.clone().requires_grad_(True)
    div = divergence_exact(m._field(zr, t), zr)
    for b in range(4):
        jac = torch.autograd.functional.jacobian(lambda v: m._field(v[None], t)[0], z[b])
        assert float(div[b]) == pytest.approx(float(torch.trace(jac)), abs=1e-10)


def test_a_trained_tiny_model_has_the_closed_form_likelihood():
    torch.manual_seed(0)
    mean = torch.tensor([1.0, -0.5], dtype=D64)
    cov = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=D64)
    target = torch.distributions.MultivariateNormal(mean, cov)
    cfg = FlowMatchingConfig(
        width=32,
        depth=2,
        time_dim=16,
        coupling="independent",
        rtol=1e-5,
        atol=1e-5,
        fourier_features=0,  # a smooth target (with 128 Fourier features: 0.052 here)
    )
    m = FlowMatching(DataSpec((2,)), cfg).to(D64)
    m.on_train_start(target.sample((4096,)))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(600):
        opt.zero_grad()
        m.loss(target.sample((256,)))["loss"].backward()
        opt.step()
    x = target.sample((200,))
    gap = float((target.log_prob(x) - m.log_prob(x)).mean())
    assert abs(gap) < 0.05, gap  # the true entropy is 2.33 nats


def test_nfe_counts_network_evaluations(monkeypatch):
    m = FlowMatching(DataSpec((2,)), FlowMatchingConfig(width=8, depth=1))
    calls = []
    real = m.velocity
    monkeypatch.setattr(m, "velocity", lambda z, t: calls.append(1) or real(z, t))
    for method, steps in (("euler", 3), ("heun", 3), ("rk4", 2)):
        calls.clear()
        m.sample(2, method=method, steps=steps)
        assert len(calls) == FlowMatching.nfe(method, steps)
    assert FlowMatching.nfe("dopri5", 10) is None


def test_bad_options_are_one_sentence():
    with pytest.raises(ConfigError, match="sigma_min"):
        FlowMatchingConfig(sigma_min=1.5)
    with pytest.raises(ConfigError, match="linear path only"):
        FlowMatchingConfig(path="vp", sigma_min=0.1)
    m = FlowMatching(DataSpec((2,)), FlowMatchingConfig(width=8, depth=1))
    with pytest.raises(ConfigError, match="method"):
        m.sample(2, method="leapfrog")
    with pytest.raises(ConfigError, match="steps"):
        m.sample(2, method="euler", steps=0)


def test_hutchinson_likelihood_is_named_an_estimate_and_is_unbiased():
    torch.manual_seed(0)
    exact = FlowMatching(DataSpec((2,)), FlowMatchingConfig(width=8, depth=1, trace="exact"))
    hutch = FlowMatching(DataSpec((2,)), FlowMatchingConfig(width=8, depth=1, trace="hutchinson"))
    hutch.load_state_dict(exact.state_dict())
    exact, hutch = exact.to(D64), hutch.to(D64)
    assert exact.exact_likelihood and not hutch.exact_likelihood
    x = torch.randn(1, 2, dtype=D64).expand(400, 2)
    values, info = hutch.log_likelihood(x)
    assert info.kind == "estimate" and info.unbiased
    assert exact.likelihood_info().kind == "exact_ode"
    want = float(exact.log_prob(x[:1]))
    sem = float(values.std() / math.sqrt(len(values)))
    assert abs(float(values.mean()) - want) < 4 * sem + 1e-6


def test_likelihood_time_sampling_draws_half_uniform_half_log_uniform_noise_levels():
    """``"likelihood"``: half the times uniform, half at noise levels ``1 - t`` log-uniform on
    [1e-3, 1]; ``"uniform"`` draws exactly what ``torch.rand`` does."""
    n = 400_000
    torch.manual_seed(0)
    plain = torch.rand(n, dtype=torch.float64)
    torch.manual_seed(0)
    assert torch.equal(sample_times(n, "uniform", dtype=torch.float64), plain)
    t = sample_times(n, "likelihood", dtype=torch.float64)
    sigma = 1 - t
    assert 0 <= float(t.min()) and float(t.max()) < 1
    for level in (1e-2, 1e-1, 0.5):  # P(sigma < s) = s / 2 + log(s / 1e-3) / (2 log 1000)
        expected = level / 2 + math.log(level / SIGMA_FLOOR) / (2 * math.log(1 / SIGMA_FLOOR))
        observed = float((sigma < level).double().mean())
        assert abs(observed - expected) < 4 * math.sqrt(expected * (1 - expected) / n)
    with pytest.raises(ConfigError, match="time_sampling must be one of auto, uniform, likelihood"):
        FlowMatchingConfig(time_sampling="cosine")  # type: ignore[arg-type]
    model = FlowMatching(DataSpec((2,)), FlowMatchingConfig(time_sampling="likelihood", width=8))
    assert torch.isfinite(model.loss(torch.randn(16, 2))["loss"])


def test_time_sampling_auto_follows_the_likelihood_on_large_images():
    """``auto``: likelihood times on MNIST-sized images (their 30-minute recipe, with bfloat16
    products where AMX is), uniform on 2-D and small images; an explicit choice is kept."""
    mnist = DataSpec((1, 28, 28))
    assert FlowMatching(mnist, FlowMatchingConfig(unet_width=4)).time_sampling == "likelihood"
    assert FlowMatching(DataSpec((2,))).time_sampling == "uniform"
    assert FlowMatching(DataSpec((1, 8, 8)), FlowMatchingConfig(unet_width=4)).time_sampling == (
        "uniform"
    )
    chosen = FlowMatchingConfig(unet_width=4, time_sampling="uniform")
    assert FlowMatching(mnist, chosen).time_sampling == "uniform"
    assert train_defaults_for(FlowMatching, mnist)["precision"] == "auto"
    assert "precision" not in train_defaults_for(FlowMatching, DataSpec((2,)))


def test_mnist_recipe_is_a_wider_unet_at_a_higher_rate():
    """On MNIST-sized images flow matching's U-Net is 32 channels wide and learns at 2e-3 (its
    30-minute recipe), and so do its few-step students, which start from its weights; ddpm keeps
    16 channels, every model keeps its width on small images and an explicit ``unet_width``."""

    def first_width(model) -> int:
        return next(m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d)).out_channels

    mnist = DataSpec((1, 28, 28))
    assert first_width(FlowMatching(mnist)) == 32
    assert first_width(FlowMatching(mnist, FlowMatchingConfig(unet_width=8))) == 8
    assert first_width(FlowMatching(DataSpec((1, 8, 8)))) == 32
    assert first_width(DDPM(mnist)) == 16
    assert first_width(Reflow(mnist)) == 32
    assert first_width(Consistency(mnist)) == 32
    # reflow's pairs fit half its 15-minute budget there: 4000 of 5 rk4 steps (20000 of 20 else)
    assert (Reflow(mnist).pairs, Reflow(mnist).teacher_steps) == (4000, 5)
    assert (Reflow(DataSpec((2,))).pairs, Reflow(DataSpec((2,))).teacher_steps) == (20000, 20)
    assert Reflow(mnist, ReflowConfig(pairs=100, teacher_steps=3)).pairs == 100
    assert train_defaults_for(Consistency, mnist)["lr"] == 4e-4
    assert train_defaults_for(FlowMatching, mnist)["lr"] == 2e-3
    assert train_defaults_for(FlowMatching, DataSpec((2,)))["lr"] == 1e-3


def test_fourier_features_are_the_default_on_2d_data_only_and_shared_by_the_students():
    """``fourier_features=None``: 256 random Fourier features of the MLP's input on 2-D data for
    flow matching and its students (a teacher's layout is theirs), none above two dimensions, on
    images or for the diffusion models; an explicit count is kept; runs saved before the option
    read back without features."""
    two, three = DataSpec((2,)), DataSpec((3,))
    for cls in (FlowMatching, Reflow, Consistency):
        assert cls(two).fourier_features == 256
        assert cls(three).fourier_features == 0
    assert FlowMatching(DataSpec((1, 8, 8)), FlowMatchingConfig(unet_width=4)).fourier_features == 0
    assert DDPM(two).fourier_features == 0
    assert FlowMatching(two, FlowMatchingConfig(fourier_features=0)).fourier_features == 0
    assert FlowMatching(three, FlowMatchingConfig(fourier_features=5)).fourier_features == 5
    assert translate_renamed(FlowMatchingConfig, {"width": 8})["fourier_features"] == 0
    for bad in ({"fourier_features": -1}, {"fourier_scale": 0.0}):
        with pytest.raises(ConfigError, match="fourier"):
            FlowMatchingConfig(**bad)


def test_fourier_features_are_fixed_and_read_beside_the_input():
    cfg = FlowMatchingConfig(width=8, depth=1, time_dim=8, fourier_features=3, fourier_scale=2.0)
    a, b = FlowMatching(DataSpec((2,)), cfg), FlowMatching(DataSpec((2,)), cfg)
    net = a.net
    assert torch.equal(net.W, b.net.W) and "net.W" in a.state_dict()  # one seed, saved
    assert net.W.shape == (2, 3)
    assert float(net.W.std()) == pytest.approx(2.0, rel=0.6)
    z, t = torch.randn(5, 2), torch.rand(5)
    seen = {}
    net.inp.register_forward_hook(lambda mod, inp, out: seen.setdefault("x", inp[0]))
    net(z, t)
    p = z @ net.W
    torch.testing.assert_close(seen["x"], torch.cat([z, torch.sin(p), torch.cos(p)], dim=1))
