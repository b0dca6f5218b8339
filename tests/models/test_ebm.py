"""Energy-based models: every objective recovers a Gaussian energy's mean and covariance from its
samples, score matching's loss is the Fisher divergence up to a constant, the 2-D quadrature
normalises the density, and the replay buffer is saved with the model.

Recovery tests fit ``energy="quadratic"`` (mean and precision parameters) in float64 to a fixed
sample and compare with the sample's own mean and covariance (the maximum-likelihood fit, what an
exact-sampling or consistent objective converges to on that sample), so the tolerances measure
the objective and its optimisation, not sampling error of the data.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import chi2

from dgm.core.errors import ConfigError, DgmError
from dgm.core.io import load_tensors, save_tensors
from dgm.core.protocols import LikelihoodEstimator
from dgm.core.spec import DataSpec
from dgm.models import build
from dgm.models.ebm import EBM
from dgm.models.ebm.contrastive import cd_loss
from dgm.models.ebm.scorematching import model_score, slice_directions, sm_loss, ssm_loss

D64 = torch.float64
MU = torch.tensor([1.0, -0.5], dtype=D64)
SIGMA = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=D64)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny 2-D problems


def gaussian_data(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 2, generator=g, dtype=D64)
    return MU + z @ torch.linalg.cholesky(SIGMA).T


def quadratic(**overrides) -> EBM:
    torch.manual_seed(0)
    return build("ebm", DataSpec((2,)), energy="quadratic", **overrides).to(D64)


def fit(model: EBM, x: torch.Tensor, steps: int, lr: float, batch: int = 500) -> EBM:
    """Adam on ``training_step`` with minibatches of ``x``, the learning rate decaying to lr/20."""
    model.on_train_start(x)
    opts = {g["name"]: torch.optim.Adam(g["params"], lr=lr) for g in model.param_groups()}
    scheds = {k: torch.optim.lr_scheduler.LambdaLR(o, lambda t: 0.05 ** (t / steps))
              for k, o in opts.items()}  # fmt: skip

    def stepper(loss, group="model"):
        opts[group].zero_grad()
        loss.backward()
        opts[group].step()
        scheds[group].step()

    g = torch.Generator().manual_seed(1)
    for step in range(steps):
        idx = torch.randint(0, x.shape[0], (batch,), generator=g)
        model.training_step(x[idx], step, stepper)
    return model


def fitted_moments(model: EBM) -> tuple[torch.Tensor, torch.Tensor]:
    e = model.energy_net
    with torch.no_grad():
        return e.mean.clone(), torch.linalg.inv(e.precision())


def assert_recovers(model: EBM, x: torch.Tensor, tol_mean: float, tol_cov: float, extra=0.0):
    mean, cov = fitted_moments(model)
    target_cov = torch.cov(x.T) + extra * torch.eye(2, dtype=D64)
    assert (mean - x.mean(0)).abs().max() < tol_mean, (mean, x.mean(0))
    assert (cov - target_cov).abs().max() < tol_cov, (cov, target_cov)


# ------------------------------------------------------------------------------ recovery
def test_exact_score_matching_recovers_the_gaussian():
    """Full batch, minimised by L-BFGS: SM's optimum on a sample is that sample's MLE, exactly
    (mean, and the biased covariance: d/dP [tr(P^2 S)/2 - tr P] = 0 at P = S^-1)."""
    x = gaussian_data(2000)
    model = quadratic(objective="sm")
    opt = torch.optim.LBFGS(model.parameters(), max_iter=200, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-14)  # fmt: skip

    def closure():
        opt.zero_grad()
        loss = model.loss(x)["loss"]
        loss.backward()
        return loss

    opt.step(closure)
    mean, cov = fitted_moments(model)
    torch.testing.assert_close(mean, x.mean(0), atol=1e-6, rtol=0)
    torch.testing.assert_close(cov, torch.cov(x.T, correction=0), atol=1e-6, rtol=0)


def test_sliced_score_matching_recovers_the_gaussian():
    x = gaussian_data(2000)
    model = fit(quadratic(objective="ssm", ssm_projections=4), x, 400, 0.05)
    assert_recovers(model, x, 0.05, 0.08)


def test_denoising_score_matching_recovers_the_noised_gaussian():
    x = gaussian_data(2000)
    sigma = 0.3
    model = fit(quadratic(objective="dsm", dsm_sigma=sigma), x, 500, 0.05)
    assert_recovers(model, x, 0.05, 0.08, extra=sigma**2)  # DSM fits p * N(0, sigma^2 I)
    with pytest.raises(AssertionError):  # ... and not p itself: the check has power
        assert_recovers(model, x, 0.05, 0.04)


def test_nce_recovers_the_gaussian_and_its_log_normaliser():
    x = gaussian_data(2000)
    model = quadratic(objective="nce", noise_ratio=4.0)
    model.on_train_start(x)
    model.noise.chol.mul_(1.5)  # noise wider than the data (the fitted one would equal it)
    model.on_train_start = lambda data: None  # keep that noise in fit()
    fit(model, x, 500, 0.05)
    assert_recovers(model, x, 0.06, 0.1)
    true_log_z = float(model.energy_net.log_z().detach())
    assert abs(float(model.log_z.detach()) - true_log_z) < 0.05


@pytest.mark.slow  # 300 steps of 10 MALA steps each: about 5-10 s on a loaded machine
@pytest.mark.parametrize("objective,init", [("pcd", "noise"), ("cd", "data")])
def test_contrastive_divergence_with_mala_negatives_recovers_the_gaussian(objective, init):
    x = gaussian_data(2000)
    model = quadratic(
        objective=objective, cd_init=init, mcmc="mala", mcmc_steps=10, mcmc_step_size=0.3,
        buffer_size=2000, reinit_prob=0.0,
    )  # fmt: skip
    fit(model, x, 300, 0.05)
    assert_recovers(model, x, 0.08, 0.12)


def test_cd_from_noise_with_few_langevin_steps_is_biased_and_the_tests_see_it():
    """Short-run ULA from a far-away start does not reach the model: recovery fails."""
    x = gaussian_data(2000)
    model = quadratic(
        objective="cd", cd_init="noise", mcmc="langevin", mcmc_steps=2, mcmc_step_size=0.01
    )
    fit(model, x, 150, 0.05)
    with pytest.raises(AssertionError):
        assert_recovers(model, x, 0.08, 0.12)


# -------------------------------------------------------------------- score matching = Fisher
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_score_matching_loss_is_the_fisher_divergence_up_to_a_constant(seed):
    """E_p[sm] - 1/2 E_p|s_theta - s_p|^2 = -1/2 E_p|s_p|^2 = -1/2 tr(Sigma^-1) for any energy."""
    torch.manual_seed(seed)
    model = build("ebm", DataSpec((2,)), objective="sm", hidden=(16, 16)).to(D64)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)  # a clearly non-Gaussian energy
    x = gaussian_data(50_000, seed=seed + 10)
    sm = sm_loss(model.energy, x).detach()  # (N,)
    with torch.enable_grad():
        _, s_model = model_score(model.energy, x, create_graph=False)
    s_true = -(x - MU) @ torch.linalg.inv(SIGMA)  # (N, 2)
    fisher = 0.5 * ((s_model - s_true) ** 2).sum(-1)  # (N,)
    diff = sm - fisher
    const = 0.5 * float(torch.linalg.inv(SIGMA).trace())
    se = float(diff.std()) / math.sqrt(diff.numel())
    assert abs(float(diff.mean()) + const) < 4 * se
    assert float(fisher.mean()) > 10 * se  # the model is far from the data: a real check


# -------------------------------------------------------------------------- likelihood
def test_quadrature_log_z_of_a_gaussian_energy_is_exact():
    model = quadratic(quadrature_points=256)
    model.on_train_start(gaussian_data(500))
    with torch.no_grad():
        model.energy_net.mean.copy_(MU)
        model.energy_net.raw_chol.copy_(torch.tensor([[0.3, 0.0], [0.4, -0.2]], dtype=D64))
    log_z, err = model.log_z_quadrature()
    assert float(log_z) == pytest.approx(float(model.energy_net.log_z().detach()), abs=1e-6)
    assert float(err) < 1e-6
    x = gaussian_data(10)
    exact = torch.distributions.MultivariateNormal(
        MU, precision_matrix=model.energy_net.precision().detach()
    ).log_prob(x)
    torch.testing.assert_close(model.log_prob(x).detach(), exact, atol=1e-6, rtol=0)


def test_mlp_density_integrates_to_one_on_its_box_and_the_cache_follows_the_weights():
    model = build("ebm", DataSpec((2,)), hidden=(16,), quadrature_points=200).to(D64)
    model.on_train_start(gaussian_data(500))
    box = model.quad_box.tolist()
    n = 400
    hx, hy = (box[1] - box[0]) / n, (box[3] - box[2]) / n
    xs = box[0] + hx * (torch.arange(n, dtype=D64) + 0.5)
    ys = box[2] + hy * (torch.arange(n, dtype=D64) + 0.5)
    pts = torch.cartesian_prod(xs, ys)
    with torch.no_grad():
        total = float(model.log_prob(pts).exp().sum()) * hx * hy
        assert total == pytest.approx(1.0, abs=1e-4)
        before = float(model.log_z_quadrature()[0])
        model.energy_net.net[0].bias.add_(1.0)
        assert float(model.log_z_quadrature()[0]) != before
    assert model.exact_likelihood  # on 2-D data; the class alone cannot say


def test_images_have_no_exact_likelihood_but_an_ais_estimate_flag():
    model = build("ebm", DataSpec((1, 8, 8)), energy="conv", channels=(4, 8), mcmc_steps=2)
    assert not model.exact_likelihood and isinstance(model, LikelihoodEstimator)
    x = torch.rand(4, 1, 8, 8)
    assert torch.isfinite(model.loss(x)["loss"])
    with pytest.raises(DgmError, match="AIS"):
        model.log_prob(x)
    with pytest.raises(ConfigError, match="image data"):
        build("ebm", DataSpec((2,)), energy="conv")


# ------------------------------------------------------------------------ state and options
def test_replay_buffer_is_trained_saved_and_restored(tmp_path):
    model = quadratic(objective="pcd", buffer_size=50, mcmc_steps=3)
    x = gaussian_data(200)
    fit(model, x, 3, 0.01, batch=20)
    assert int(model.buffer.count) == 50
    save_tensors(model.state_dict(), tmp_path / "w.safetensors")
    other = quadratic(objective="pcd", buffer_size=50, mcmc_steps=3)
    other.load_state_dict(load_tensors(tmp_path / "w.safetensors"))
    assert torch.equal(other.buffer.data, model.buffer.data)
    assert torch.equal(other.quad_box, model.quad_box)


@pytest.mark.parametrize("sampler", ["langevin", "mala", "hmc"])
def test_sampling_options_reach_the_chosen_sampler(sampler):
    model = quadratic()
    with torch.no_grad():
        model.energy_net.mean.copy_(MU)
    model.noise.mean.copy_(MU)
    torch.manual_seed(0)
    with model.inference():
        s = model.sample(2000, sampler=sampler, steps=60, step_size=0.2)
    assert s.shape == (2000, 2) and not s.requires_grad
    assert (s.mean(0) - MU).abs().max() < 0.15  # chains moved to the energy's mean
    with pytest.raises(ConfigError, match="steps"):
        model.sample(2, stpes=3)


def test_tethered_energy_with_a_zero_network_is_its_base_density():
    """tether=1: E = E_net - log q; with E_net = 0 the model is q, and the quadrature says so."""
    model = build("ebm", DataSpec((2,)), hidden=(8,), tether=1.0).to(D64)
    x = gaussian_data(500)
    model.on_train_start(x)
    with torch.no_grad():
        model.energy_net.net[-1].weight.zero_()
    torch.testing.assert_close(
        model.log_prob(x[:20]), model.noise.log_prob(x[:20]), atol=1e-5, rtol=0
    )
    with pytest.raises(ConfigError, match="tether"):
        build("ebm", DataSpec((2,)), tether=-1.0)


def test_fourier_feature_energy_reads_fixed_features_and_saves_them():
    """The MLP energy with random Fourier features: the documented map, the same fixed
    frequencies for every build, a buffer in the state dict, and a bad setting refused."""
    torch.manual_seed(0)
    a = EBM(DataSpec((2,)), EBM.Config(fourier_features=8, fourier_scale=2.0)).double()
    b = EBM(DataSpec((2,)), EBM.Config(fourier_features=8, fourier_scale=2.0)).double()
    net = a.energy_net
    assert net.W.shape == (2, 8) and torch.equal(net.W, b.energy_net.W)
    assert "energy_net.W" in a.state_dict()
    x = torch.randn(5, 2, dtype=torch.float64)
    p = x @ net.W
    expect = net.net(torch.cat([x, torch.sin(p), torch.cos(p)], -1)).squeeze(-1)
    torch.testing.assert_close(net(x), expect, atol=1e-12, rtol=0)
    assert net.net[0].in_features == 2 + 16
    with pytest.raises(ConfigError, match="fourier"):
        EBM.Config(fourier_features=-1)
    with pytest.raises(ConfigError, match="fourier"):
        EBM.Config(fourier_scale=0.0)


# -------------------------------------------------------------------- cd moves toward the data
MEANS, STD = (-2.0, 2.0), 0.5


def mixture_log_prob(x: torch.Tensor) -> torch.Tensor:
    comps = torch.stack([-0.5 * ((x - m) / STD) ** 2 for m in MEANS], -1)  # (N, 2)
    return torch.logsumexp(comps, -1) - math.log(len(MEANS) * STD * math.sqrt(2 * math.pi))


def mixture_sample(n: int, g: torch.Generator) -> torch.Tensor:
    k = torch.randint(0, len(MEANS), (n,), generator=g)
    return (torch.tensor(MEANS, dtype=D64)[k] + STD * torch.randn(n, generator=g, dtype=D64))[
        :, None
    ]


def kl_by_quadrature(model) -> float:
    """KL(p || model) on a midpoint grid over [-8, 8] (p's mass outside is < 1e-20)."""
    n, lo, hi = 4000, -8.0, 8.0
    h = (hi - lo) / n
    x = lo + h * (torch.arange(n, dtype=D64) + 0.5)  # (n,)
    with torch.no_grad():
        log_q = -model.energy(x[:, None])  # (n,)
    log_q = log_q - (torch.logsumexp(log_q, 0) + math.log(h))
    log_p = mixture_log_prob(x)
    return float((log_p.exp() * (log_p - log_q)).sum() * h)


def train_1d(model, x: torch.Tensor, steps: int, lr: float, g: torch.Generator) -> None:
    """Adam with the cosine decay of the EBM's ``train_defaults``: at a constant rate the
    relative weight of two modes random-walks under score matching (sm on this mixture, lr 1e-2:
    KL 0.02-0.96 between steps 150 and 600), and the outcome would be the luck of the last step."""
    opts = {grp["name"]: torch.optim.Adam(grp["params"], lr=lr) for grp in model.param_groups()}
    decay = {k: torch.optim.lr_scheduler.CosineAnnealingLR(o, steps) for k, o in opts.items()}

    def stepper(loss, group="model"):
        opts[group].zero_grad()
        loss.backward()
        opts[group].step()
        decay[group].step()

    for step in range(steps):
        model.training_step(x[torch.randint(0, x.shape[0], (256,), generator=g)], step, stepper)


@pytest.mark.parametrize("objective", ["cd", "pcd", "sm", "ssm", "dsm", "nce", "fce"])
def test_every_objective_at_its_defaults_moves_toward_the_target(objective):
    """Issue 24: at its own defaults every objective moves a 1-D energy to a two-mode mixture.
    cd's old defaults (short ULA runs from the fitted Gaussian) left the density where it started
    (KL 1.67 -> 1.55), pcd's (10,000 chains from the Gaussian, ULA) ended at KL 0.29; fce's
    (untethered, the flow trained by the adversarial game alone) did not halve it; the
    annealing of sm/ssm/dsm is shortened to fit the 150 steps. The Fisher divergence cannot see
    the relative weight of two modes that no data join, so sm and ssm learn it only while the
    blur joins them, and where it ends depends on the random stream, not only on the seed: sm
    at seeds 0-6 ended at KL 0.006-0.52, and with 4 more normals drawn per step (what ssm's
    directions draw; its loss is sm's to rounding in 1-D) 0.006-0.75. For them the median of 5
    seeds is judged."""
    extra = {"anneal_steps": 100} if objective in ("sm", "ssm", "dsm") else {}
    ends = []
    for seed in range(5 if objective in ("sm", "ssm") else 1):
        g = torch.Generator().manual_seed(seed)
        x = mixture_sample(4000, g)
        torch.manual_seed(seed)
        model = build("ebm", DataSpec((1,)), objective=objective, hidden=(32, 32), **extra)
        model = model.to(D64)
        model.on_train_start(x[:256])
        before = kl_by_quadrature(model)
        train_1d(model, x, 150, 1e-2, g)
        ends.append(kl_by_quadrature(model))
    after = sorted(ends)[len(ends) // 2]
    # moved toward the target, by a clear margin, and ends near it
    assert after < 0.5 * before and after < 0.15, (before, after)


# ------------------------------------------------------------------ each objective's defaults
DOCUMENTED = {  # issue 24: the settings with which each objective meets its KL targets
    "cd": {"mcmc": "mala", "cd_init": "data", "alpha": 0.0, "tether": 1.0, "fourier_features": 64},
    "pcd": {"mcmc": "mala", "mcmc_adapt": True, "cd_init": "data", "buffer_size": 256,
            "alpha": 0.03, "reinit_prob": 0.25, "tether": 1.0, "fourier_features": 64},
    "sm": {"anneal_sigma": 0.5, "anneal_steps": 3000, "tether": 1.0, "fourier_features": 64,
           "tail_weight": 30.0},
    "ssm": {"anneal_sigma": 0.5, "anneal_steps": 3000, "ssm_projections": 4, "tether": 1.0,
            "fourier_features": 64, "tail_weight": 30.0},
    "dsm": {"anneal_sigma": 0.5, "anneal_steps": 1500, "dsm_sigma": 0.05, "tether": 1.0,
            "fourier_features": 64},
    "nce": {"tether": 1.0, "fourier_features": 64, "anneal_sigma": 0.0},
    "fce": {"tether": 1.0, "flow_mle": 1.0, "fourier_features": 64, "mcmc_adapt": False},
}  # fmt: skip


@pytest.mark.parametrize("objective", sorted(DOCUMENTED))
def test_each_objective_resolves_its_documented_defaults(objective):
    cfg = EBM.Config(objective=objective)
    assert {k: getattr(cfg, k) for k in DOCUMENTED[objective]} == DOCUMENTED[objective]
    assert cfg.fourier_scale == 2.0 and EBM.train_defaults == {"schedule": "cosine", "steps": 3000}
    assert EBM.Config().objective == "nce"  # the default objective (pcd diverges on rings)
    # a value given is kept; other energies take the plain settings
    assert EBM.Config(objective=objective, tether=0.5, buffer_size=7).tether == 0.5
    assert EBM.Config(objective=objective, buffer_size=7).buffer_size == 7
    plain = EBM.Config(objective=objective, energy="quadratic")
    assert (plain.mcmc, plain.tether, plain.fourier_features, plain.anneal_sigma) == (
        "langevin", 0.0, 0, 0.0)  # fmt: skip


def test_pcd_energy_level_has_a_restoring_force():
    """Issue 24, why pcd diverged: ``mean E(x+) - mean E(x-)`` has zero gradient along a common
    shift ``c`` of the energies it sees, so the level (and with it the roughness) random-walked
    until the chains stopped mixing (rings: E at the data 213, KL 206 nats at update 2000).
    pcd's default penalty pulls the level back: d loss / dc = 2 alpha (mean E+ + mean E-)."""
    alpha = EBM.Config(objective="pcd").alpha
    g = torch.Generator().manual_seed(0)
    e_pos = 50 + torch.randn(64, generator=g, dtype=D64)
    e_neg = 52 + torch.randn(80, generator=g, dtype=D64)
    for level in (0.0, -200.0):  # drifted up, drifted down: pushed back toward 0
        c = torch.tensor(level, dtype=D64, requires_grad=True)
        (grad,) = torch.autograd.grad(cd_loss(e_pos + c, e_neg + c, alpha)["loss"], c)
        expected = 2 * alpha * (e_pos.mean() + e_neg.mean() + 2 * level)
        assert float(grad) == pytest.approx(float(expected), rel=1e-9)
        assert float(grad) * float(e_pos.mean() + level) > 0  # descent moves the level to 0
        assert abs(float(grad)) > 1.0  # not the zero gradient of the unpenalised loss


@pytest.mark.parametrize("start,direction", [(5.0, -1), (1e-4, 1)])
def test_pcd_step_size_follows_the_acceptance_rate(start, direction):
    """mcmc_adapt: a step far too large (nothing accepted) shrinks, one far too small (all
    accepted) grows, by the documented factor exp(0.1 (rate - 0.574)) per update."""
    torch.manual_seed(0)
    model = build("ebm", DataSpec((2,)), objective="pcd", hidden=(8,), mcmc_step_size=start,
                  mcmc_steps=5, buffer_size=64).to(D64)  # fmt: skip
    x = gaussian_data(64)
    model.on_train_start(x)
    fit(model, x, 3, 1e-3, batch=32)
    h = model.negative_step_size
    assert direction * (h - start) > 0
    rate = 0.0 if direction < 0 else 1.0  # (nearly) all rejected / all accepted
    factor = math.exp(0.1 * (rate - 0.574)) ** 3
    assert h == pytest.approx(start * factor, rel=0.05)
    with model.inference():  # sample() starts from the adapted step
        assert model.sample(4, steps=1).shape == (4, 2)


def test_pcd_fresh_chains_start_at_the_data():
    model = build("ebm", DataSpec((2,)), objective="pcd", hidden=(8,), mcmc_steps=0,
                  mcmc_jumps=0, buffer_size=50).to(D64)  # fmt: skip
    x = gaussian_data(20)
    model.on_train_start(x)
    model.training_step(x, 0, lambda loss, group="model": None)
    rows = model.buffer.data  # (50, 2): every chain is one of the batch's points
    assert ((rows[:, None] - x[None]) ** 2).sum(-1).min(1).values.max() == 0


def test_pcd_jumps_are_proposed_by_the_fitted_gaussian():
    """With a flat tilt (the network's last layer zeroed) the tethered energy is the fitted
    Gaussian itself, so every independence proposal is accepted: one jump moves each chain of
    the update off the data point it started at, to a draw of the Gaussian."""
    model = build("ebm", DataSpec((2,)), objective="pcd", hidden=(8,), mcmc_steps=0,
                  buffer_size=50).to(D64)  # fmt: skip
    assert model.config.mcmc_jumps == 1  # pcd's default
    last = [m for m in model.energy_net.modules() if isinstance(m, torch.nn.Linear)][-1]
    torch.nn.init.zeros_(last.weight)
    x = gaussian_data(20)
    model.on_train_start(x)
    model.training_step(x, 0, lambda loss, group="model": None)
    rows = model.buffer.data  # (50, 2): the chains of this update (20 draws of the 50) moved
    off_data = ((rows[:, None] - x[None]) ** 2).sum(-1).min(1).values > 0  # (50,)
    assert int(off_data.sum()) >= 10  # without the jump: 0 (the test above)
    with pytest.raises(ConfigError, match="mcmc_jumps"):
        EBM.Config(objective="pcd", mcmc_jumps=-1)


def test_score_matching_noise_anneals_to_none():
    model = build("ebm", DataSpec((2,)), objective="dsm", anneal_sigma=0.4, anneal_steps=100)
    assert [model.noise_level(t) for t in (0, 50, 100, 500)] == pytest.approx(
        [0.4, 0.1, 0.0, 0.0])  # fmt: skip
    assert model.noise_level() == 0.0  # outside training_step: no blur
    with pytest.raises(ConfigError, match="anneal_sigma"):
        EBM.Config(anneal_sigma=-1.0)


def test_tail_points_lie_beyond_the_fitted_gaussians_99_percent_radius():
    """GaussianNoise.tail_sample: draws of the Gaussian widened 2x, kept beyond the radius r with
    P(|z| > r) = 1% for the fitted Gaussian; the kept fraction is P(|2z| > r) by the chi^2 law."""
    noise = EBM(DataSpec((2,)), EBM.Config(objective="sm")).to(D64).noise
    noise.fit(gaussian_data(4000))
    torch.manual_seed(0)
    z = noise.tail_sample(100_000)  # (m, 2)
    white = torch.linalg.solve_triangular(noise.chol, (z - noise.mean).T, upper=False).T
    radius = math.sqrt(chi2.ppf(0.99, 2))  # 3.035
    assert white.norm(dim=1).min() > radius
    assert z.shape[0] / 100_000 == pytest.approx(chi2.sf(radius**2 / 4, 2), abs=0.005)  # 0.316


def test_tail_hinge_holds_the_tilt_up_where_data_are_rare():
    """Issue 24: sm on rings leaked 9-37% of its mass beyond the data, where score matching never
    looks. The hinge relu(mean E_net(data) - E_net(z))^2 over tail points z is zero for a tilt
    that rises away from the data and positive for one that falls, and enters sm's loss with
    weight ``tail_weight``."""
    model = build("ebm", DataSpec((2,)), objective="sm", hidden=(8,)).to(D64)
    assert model.config.tail_weight == 30.0  # sm's default
    x = gaussian_data(256)
    model.on_train_start(x)
    for sign, positive in ((1.0, False), (-1.0, True)):  # E_net = +-|x - mu|^2
        model.energy_net.forward = lambda v, s=sign: s * ((v - MU) ** 2).sum(-1)
        torch.manual_seed(0)
        hinge = float(model._tail_hinge(x))
        assert (hinge > 1.0) if positive else (hinge == 0.0), (sign, hinge)
        torch.manual_seed(0)
        out = model.loss(x)
        assert float(out["tail"]) == pytest.approx(hinge)
        assert float(out["loss"]) == pytest.approx(float(out["sm"]) + 30.0 * hinge)


def test_tail_hinge_needs_the_gaussian_noise():
    assert EBM.Config(objective="sm", noise="mixture").tail_weight == 0.0  # not a default error
    assert EBM.Config(objective="nce").tail_weight == 0.0
    with pytest.raises(ConfigError, match="tail_weight needs noise=gaussian"):
        EBM.Config(objective="sm", noise="mixture", tail_weight=1.0)
    with pytest.raises(ConfigError, match="tail_weight"):
        EBM.Config(tail_weight=-1.0)


def test_orthogonal_slices_are_unbiased_and_a_full_frame_is_exact_score_matching():
    """Issue 24: ssm's directions are orthogonal slices of length sqrt(D), so E[v v^T] = I (the
    sliced trace is unbiased) and D of them give the trace exactly: in 2-D, ssm with 2 or 4
    projections is Hyvarinen's objective to rounding."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    net = net.to(D64)
    x = torch.randn(8, 2, dtype=D64)
    exact = sm_loss(lambda v: net(v).squeeze(-1), x).detach()
    for n in (2, 4):
        got = ssm_loss(lambda v: net(v).squeeze(-1), x, n).detach()
        torch.testing.assert_close(got, exact, atol=1e-12, rtol=0)
    v = slice_directions(torch.zeros(5000, 5, dtype=D64), 3)  # (3, 5000, 5): one partial block
    torch.testing.assert_close(v.norm(dim=-1), torch.full((3, 5000), 5**0.5, dtype=D64))
    gram = torch.einsum("nbi,mbi->bnm", v, v)  # (5000, 3, 3): orthogonal within the block
    torch.testing.assert_close(gram, 5 * torch.eye(3, dtype=D64).expand(5000, 3, 3))
    second = torch.einsum("nbi,nbj->ij", v, v) / (3 * 5000)  # E[v v^T] = I
    assert (second - torch.eye(5, dtype=D64)).abs().max() < 0.05
    net5 = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    net5 = net5.to(D64)
    x5 = torch.randn(4, 5, dtype=D64)
    energy = lambda v: net5(v).squeeze(-1)  # noqa: E731
    draws = torch.stack([ssm_loss(energy, x5, 2).detach() for _ in range(2000)])  # (2000, 4)
    sem = draws.std(0) / 2000**0.5
    assert ((draws.mean(0) - sm_loss(energy, x5).detach()).abs() < 4 * sem).all()
