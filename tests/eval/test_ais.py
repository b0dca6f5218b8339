"""Annealed importance sampling: log Z of Gaussian energies with known Z within the reported error,
a linear-Gaussian latent model's marginal likelihood (the VAE use), and an EBM's AIS log p against
its exact quadrature value."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal

from dgm.core.errors import ConfigError
from dgm.core.spec import DataSpec
from dgm.eval.ais import ais, ebm_log_likelihood, sigmoid_schedule
from dgm.eval.likelihood import nll
from dgm.eval.run import format_table
from dgm.eval.suite import nll_metrics
from dgm.models import build

D64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny 2-D problems


def test_schedule_runs_from_zero_to_one():
    b = sigmoid_schedule(10)
    assert b[0] == 0 and b[-1] == 1 and (b.diff() > 0).all()
    with pytest.raises(ConfigError):
        sigmoid_schedule(0)


@pytest.mark.parametrize("dim", [2, 10])
def test_log_z_of_a_gaussian_energy_within_its_reported_error(dim):
    """E(x) = (x - m)^T P (x - m) / 2 with an anisotropic P: Z = (2 pi)^(D/2) det(P)^(-1/2)."""
    g = torch.Generator().manual_seed(dim)
    a = torch.randn(dim, dim, generator=g, dtype=D64)
    prec = a @ a.T / dim + 0.5 * torch.eye(dim, dtype=D64)
    m = torch.randn(dim, generator=g, dtype=D64)
    true = 0.5 * dim * math.log(2 * math.pi) - 0.5 * float(torch.logdet(prec))

    def log_f(x):
        d = x - m
        return -0.5 * ((d @ prec) * d).sum(-1)

    p0 = MultivariateNormal(torch.zeros(dim, dtype=D64), 4 * torch.eye(dim, dtype=D64))
    init = p0.sample((400,))
    r = ais(log_f, init, p0.log_prob, n_temps=150, step_size=0.3, generator=g)
    assert abs(float(r.log_z[0]) - true) < 4 * float(r.stderr[0]) + 0.02
    assert float(r.stderr[0]) < 0.1 and float(r.ess[0]) > 40  # the estimate is informative
    assert 0.3 < r.acceptance_rate < 0.95
    # no annealing at all (one temperature) is far off here: the check has power
    crude = ais(log_f, init, p0.log_prob, n_temps=1, step_size=0.3, generator=g)
    assert abs(float(crude.log_z[0]) - true) > abs(float(r.log_z[0]) - true)


def test_marginal_likelihood_of_a_linear_gaussian_latent_model():
    """z ~ N(0, I_2), x | z ~ N(W z, s^2 I_3): p(x) = N(0, W W^T + s^2 I); AIS from the prior to
    p(x, z), one group of chains per data point (how a VAE's log p(x) is estimated)."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 2, generator=g, dtype=D64)
    s = 0.5
    xs = torch.randn(4, 3, generator=g, dtype=D64) * 2  # (B, 3)
    k = 300
    x_rep = xs.repeat_interleave(k, 0)  # (B*K, 3), group-major

    def log_joint(z):
        return Normal(z @ w.T, s).log_prob(x_rep).sum(-1) + Normal(0, 1).log_prob(z).sum(-1)

    def log_prior(z):
        return Normal(0, 1).log_prob(z).sum(-1)

    init = torch.randn(4 * k, 2, generator=g, dtype=D64)
    r = ais(log_joint, init, log_prior, n_temps=100, step_size=0.1, groups=4, generator=g)
    cov = w @ w.T + s**2 * torch.eye(3, dtype=D64)
    exact = MultivariateNormal(torch.zeros(3, dtype=D64), cov).log_prob(xs)  # (B,)
    assert r.log_z.shape == (4,)
    assert ((r.log_z - exact).abs() < 4 * r.stderr + 0.02).all(), (r.log_z, exact, r.stderr)


class Confined(torch.nn.Module):
    """A bumpy, non-Gaussian energy that is normalisable on R^2 (so the quadrature box, which
    ignores the mass outside it, and AIS over R^2 agree): |x|^2 / 4 + 2 tanh(mlp(x))."""

    def __init__(self, mlp: torch.nn.Module) -> None:
        super().__init__()
        self.mlp = mlp

    def forward(self, x):
        return 0.25 * (x**2).sum(-1) + 2 * torch.tanh(self.mlp(x))


def test_ebm_ais_log_likelihood_matches_its_quadrature_value():
    torch.manual_seed(0)
    model = build("ebm", DataSpec((2,)), hidden=(16, 16), quadrature_pad=2.0).to(D64)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    model.energy_net = Confined(model.energy_net)
    x = torch.randn(500, 2, dtype=D64)
    model.on_train_start(x)
    g = torch.Generator().manual_seed(1)
    with model.inference():
        values, name, info = ebm_log_likelihood(model, x[:5], chains=500, n_temps=100, generator=g)
        exact = model.log_prob(x[:5])
    assert "estimate" in name
    err = 4 * info["log_z_stderr"] + 0.03
    assert (values - exact).abs().max() < err, (values - exact, info)


# ------------------------------------------------------------- the NLL of an AIS estimate
class _StdNormal:
    def __init__(self, d):
        self.d = d

    def sample(self, n):
        return torch.randn(n, self.d, dtype=D64)

    def log_prob(self, x):
        return Normal(0.0, 1.0).log_prob(x).sum(1)


class _Energy(torch.nn.Module):
    """An energy model with an intractable-looking log Z (a ``LikelihoodEstimator``): a Gaussian
    energy of width ``scale`` around ``centre``, AIS from a standard normal."""

    name = "toy-energy"
    exact_likelihood = False
    likelihood_bound = None
    conditional = False
    bound_options = ()

    def __init__(self, centre: float, scale: float, d: int = 3):
        super().__init__()
        self.config = type("C", (), {"mcmc_step_size": 0.1})()
        self.noise = _StdNormal(d)
        self.centre, self.scale, self.d = centre, scale, d
        self.w = torch.nn.Parameter(torch.zeros((), dtype=D64))

    def unnormalized_log_prob(self, x):
        return -0.5 * (((x - self.centre) / self.scale) ** 2).sum(1) + 0 * self.w

    def log_z(self):
        return self.d * math.log(self.scale * math.sqrt(2 * math.pi))

    def inference(self):
        return torch.no_grad()

    @property
    def device(self):
        return torch.device("cpu")

    @property
    def dtype(self):
        return D64


def test_ais_nll_error_includes_the_error_of_log_z_and_warns_on_a_small_ess():
    """Old code: `nll` refused an EBM on images, and `dgm eval` gave the data's standard error
    alone (0.063 beside a log Z error of 0.652, ESS 2.3 of 256 chains)."""
    model = _Energy(centre=3.0, scale=0.05, d=10)  # far from the start: a small ESS
    x = model.centre + model.scale * torch.randn(
        200, 10, generator=torch.Generator().manual_seed(0), dtype=D64
    )
    m = nll(model, x, generator=torch.Generator().manual_seed(1))
    assert m["likelihood_kind"] == "estimate" and "neither exact nor a bound" in m["likelihood"]
    assert m["nll_sem"] == pytest.approx(math.hypot(m["nll_sem_data"], m["log_z_stderr"]))
    assert m["nll_sem"] > m["nll_sem_data"] and m["ess"] < 0.1 * m["chains"]
    assert m["warning"].startswith("AIS effective sample size is") and "unreliable" in m["warning"]
    res = {"model": "toy", "data": "toy", **nll_metrics(model, x, seed=1)}
    table = format_table(res)
    assert (
        f"± {res['test_nll_sem']:.2g} (an estimate of the NLL, neither exact nor a bound)" in table
    )
    assert "warning: AIS effective sample size" in table
    # a well-matched start distribution: no warning, and the figure near the true NLL
    easy = _Energy(centre=0.0, scale=1.2)
    m = nll(easy, x, generator=torch.Generator().manual_seed(1))
    assert "warning" not in m and m["ess"] > 0.5 * m["chains"]
    true = float(-(easy.unnormalized_log_prob(x) - easy.log_z()).mean())
    assert abs(m["nll"] - true) < 4 * m["log_z_stderr"] + 1e-3
