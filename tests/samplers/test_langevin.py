"""ULA, MALA, HMC and the replay buffer, checked on a correlated 2-D Gaussian in float64.

Invariance checks start many independent chains *from the target*, run the sampler and compare the
sample mean and covariance with the truth within a few Monte Carlo standard errors; a biased sampler
(ULA at a large step) fails the same check, so the check has power. ULA's stationary covariance for a
Gaussian target is known in closed form, Sigma (I - h/2 Sigma^-1)^-1, and is checked directly.
"""

from __future__ import annotations

import math

import pytest
import torch

from dgm.core.errors import ConfigError, DataError
from dgm.samplers import ReplayBuffer, grad_and_log_prob, hmc, independence_mh, mala, ula

D64 = torch.float64
MU = torch.tensor([1.0, -0.5], dtype=D64)
SIGMA = torch.tensor([[1.0, 0.8], [0.8, 1.5]], dtype=D64)
PREC = torch.linalg.inv(SIGMA)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny 2-D problems


def log_prob(x: torch.Tensor) -> torch.Tensor:
    d = x - MU  # (B, 2)
    return -0.5 * ((d @ PREC) * d).sum(-1)  # (B,)


def score(x: torch.Tensor) -> torch.Tensor:
    return -(x - MU) @ PREC  # (B, 2)


def from_target(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 2, generator=g, dtype=D64)
    return MU + z @ torch.linalg.cholesky(SIGMA).T


def moments_match(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, z: float = 5.0) -> bool:
    """Sample mean and covariance within ``z`` Monte Carlo standard errors of ``mean``/``cov``
    (i.i.d. Gaussian draws: var(mean_i) = S_ii / n, var(S_ij) = (S_ii S_jj + S_ij^2) / n)."""
    n = x.shape[0]
    m = x.mean(0)
    c = torch.cov(x.T)
    se_m = (cov.diagonal() / n).sqrt()
    se_c = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / n).sqrt()
    return bool(((m - mean).abs() < z * se_m).all() and ((c - cov).abs() < z * se_c).all())


def ula_stationary_cov(h: float) -> torch.Tensor:
    return SIGMA @ torch.linalg.inv(torch.eye(2, dtype=D64) - 0.5 * h * PREC)


def test_mala_leaves_the_gaussian_invariant():
    x0 = from_target(4000, seed=0)
    g = torch.Generator().manual_seed(1)
    res = mala(x0, log_prob, 0.6, 20, generator=g)
    assert 0.3 < res.acceptance_rate < 0.95  # a real test: proposals are both taken and refused
    assert moments_match(res.x, MU, SIGMA)
    assert res.accept_per_chain.shape == (4000,)


def test_hmc_leaves_the_gaussian_invariant():
    x0 = from_target(4000, seed=2)
    g = torch.Generator().manual_seed(3)
    res = hmc(x0, log_prob, 0.5, 5, 10, generator=g)
    assert 0.3 < res.acceptance_rate < 0.99
    assert moments_match(res.x, MU, SIGMA)


def bimodal_log_prob(x: torch.Tensor) -> torch.Tensor:
    """0.3 N(-3, 0.5^2) + 0.7 N(3, 0.5^2) in 1-D, unnormalised: modes 12 standard deviations
    apart, which local moves do not cross."""
    a = math.log(0.3) - 0.5 * ((x[:, 0] + 3) / 0.5) ** 2  # (B,)
    b = math.log(0.7) - 0.5 * ((x[:, 0] - 3) / 0.5) ** 2  # (B,)
    return torch.logaddexp(a, b)


def test_independence_mh_moves_chains_between_modes_in_the_right_proportion():
    """Every chain starts in the left mode; with proposals from N(0, 3^2) the chains end with the
    right-hand mode's weight 0.7 and each mode's mean and spread, while MALA from the same start
    leaves them all on the left."""
    n = 4000
    x0 = torch.full((n, 1), -3.0, dtype=D64)
    gq = torch.Generator().manual_seed(0)

    def q_sample(k: int) -> torch.Tensor:
        return 1.0 + 3.0 * torch.randn(k, 1, generator=gq, dtype=D64)

    def q_log_prob(x: torch.Tensor) -> torch.Tensor:
        return -0.5 * ((x[:, 0] - 1.0) / 3.0) ** 2

    res = independence_mh(x0, bimodal_log_prob, q_sample, q_log_prob, 60,
                          generator=torch.Generator().manual_seed(1))  # fmt: skip
    right = res.x[:, 0] > 0
    w = float(right.double().mean())
    assert abs(w - 0.7) < 4 * math.sqrt(0.7 * 0.3 / n)
    assert 0.05 < res.acceptance_rate < 0.5  # most proposals land between or beyond the modes
    for side, centre in ((right, 3.0), (~right, -3.0)):
        v = res.x[side, 0]
        assert abs(float(v.mean()) - centre) < 5 * 0.5 / math.sqrt(v.numel())
        assert float(v.std()) == pytest.approx(0.5, rel=0.1)
    stuck = mala(x0, bimodal_log_prob, 0.1, 60, generator=torch.Generator().manual_seed(2))
    assert float((stuck.x[:, 0] > 0).double().mean()) == 0.0


def test_independence_mh_needs_non_negative_steps():
    with pytest.raises(ConfigError, match="n_steps"):
        independence_mh(torch.zeros(2, 1), bimodal_log_prob, torch.randn, bimodal_log_prob, -1)


def test_the_invariance_check_detects_ula_bias():
    """The same check at the same step size rejects ULA, whose stationary law is not the target."""
    x = ula(from_target(4000, seed=0), score, 0.6, 60, generator=torch.Generator().manual_seed(1))
    assert not moments_match(x, MU, SIGMA)


@pytest.mark.parametrize("h", [0.1, 0.2, 0.4])
def test_ula_stationary_covariance_is_the_closed_form(h):
    x = ula(from_target(20000, seed=4), score, h, 300, generator=torch.Generator().manual_seed(5))
    assert moments_match(x, MU, ula_stationary_cov(h))


def test_ula_bias_shrinks_with_the_step_size():
    biases = []
    for h in (0.4, 0.2, 0.1, 0.05):
        x = ula(from_target(20000, 6), score, h, 400, generator=torch.Generator().manual_seed(7))
        biases.append(float(torch.linalg.matrix_norm(torch.cov(x.T) - SIGMA)))
    assert biases == sorted(biases, reverse=True)
    # O(h): halving h roughly halves the bias (closed form: ratio 0.5 + O(h))
    exact = [float(torch.linalg.matrix_norm(ula_stationary_cov(h) - SIGMA)) for h in (0.4, 0.1)]
    assert biases[0] == pytest.approx(exact[0], rel=0.15)
    assert biases[2] == pytest.approx(exact[1], rel=0.5)


def test_ula_per_chain_step_sizes_and_clip():
    x0 = torch.zeros(3, 2, dtype=D64)
    h = torch.tensor([0.1, 0.2, 0.3], dtype=D64)
    x = ula(x0, score, h, 5, generator=torch.Generator().manual_seed(0), clip=0.5)
    assert x.shape == (3, 2) and x.abs().max() <= 0.5
    with pytest.raises(ConfigError, match="one entry per chain"):
        ula(x0, score, torch.ones(2, dtype=D64), 1)
    with pytest.raises(ConfigError, match="positive"):
        ula(x0, score, -0.1, 1)


@pytest.mark.parametrize("sampler,target", [("mala", 0.574), ("hmc", 0.65)])
def test_dual_averaging_reaches_the_target_acceptance(sampler, target):
    x0 = from_target(1000, seed=8)
    g = torch.Generator().manual_seed(9)
    if sampler == "mala":
        res = mala(x0, log_prob, 5.0, 200, generator=g, adapt=True, target_accept=target)
    else:
        # one leapfrog step: with longer trajectories near the leapfrog stability limit the
        # acceptance is far from monotone in the step size and the averaged step overshoots
        res = hmc(x0, log_prob, 5.0, 1, 200, generator=g, adapt=True, target_accept=target)
    assert abs(res.acceptance_rate - target) < 0.1
    assert isinstance(res.step_size, float) and res.step_size < 5.0
    assert moments_match(res.x, MU, SIGMA)
    with pytest.raises(ConfigError, match="global step size"):
        mala(x0, log_prob, torch.full((1000,), 0.1, dtype=D64), 2, adapt=True)


def test_samplers_work_under_no_grad_and_leave_parameter_gradients_alone():
    net = torch.nn.Linear(2, 1).to(D64)

    def lp(x):
        return -0.5 * (x**2).sum(-1) + net(x).squeeze(-1)

    with torch.no_grad():
        res = hmc(torch.zeros(8, 2, dtype=D64), lp, 0.3, 3, 4)
        x = ula(torch.zeros(8, 2, dtype=D64), lambda x: grad_and_log_prob(lp, x)[1], 0.1, 3)
    assert not res.x.requires_grad and not x.requires_grad
    assert all(p.grad is None for p in net.parameters())


def test_nan_proposals_are_rejected_and_bad_log_prob_shapes_raise():
    def lp(x):
        return torch.where(x[:, 0] > 3.0, torch.full_like(x[:, 0], math.nan), -0.5 * x[:, 0] ** 2)

    res = mala(torch.zeros(50, 1, dtype=D64), lp, 4.0, 20, generator=torch.Generator())
    assert (res.x <= 3.0).all()
    with pytest.raises(DataError, match="one value per chain"):
        mala(torch.zeros(4, 2, dtype=D64), lambda x: x, 0.1, 1)


def test_replay_buffer_samples_pushes_and_round_trips():
    buf = ReplayBuffer(100, (2,), reinit_prob=0.25).to(D64)
    g = torch.Generator().manual_seed(0)

    def init(k):
        return torch.full((k, 2), 7.0, dtype=D64)

    x, idx = buf.sample(2000, init, generator=g)  # first use fills every slot with init()
    assert int(buf.count) == 100 and (x == 7.0).all()
    buf.push(torch.zeros(100, 2, dtype=D64), torch.arange(100))
    x, idx = buf.sample(4000, init, generator=g)
    fresh = (x == 7.0).all(1).double().mean()
    assert abs(float(fresh) - 0.25) < 0.05  # reinit probability (sd 0.007)
    buf.push(torch.ones(3, 2, dtype=D64))  # ring push without slots
    other = ReplayBuffer(100, (2,)).to(D64)
    other.load_state_dict(buf.state_dict())
    assert torch.equal(other.data, buf.data) and int(other.ptr) == 3
    with pytest.raises(ConfigError, match="capacity"):
        ReplayBuffer(0, (2,))
