"""The FFJORD continuous flow, checked in float64: invertibility of the ODE map, the change of
variables for a linear field (closed form through the matrix exponential), a density that
integrates to 1 on a grid and agrees with its samples, an unbiased Hutchinson estimate."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import perturb
from dgm.core.errors import ConfigError, DataError
from dgm.core.spec import DataSpec
from dgm.models import build
from dgm.models.flows import CNF

D64 = torch.float64


def tight(**kw) -> CNF.Config:
    return CNF.Config(rtol=1e-9, atol=1e-9, **kw)


def test_forward_then_reverse_integration_returns_x():
    torch.manual_seed(0)
    model = perturb(CNF(DataSpec((2,)), tight(hidden=(16, 16))).double(), 0.3)
    x = torch.randn(7, 2, dtype=D64)
    with model.inference():
        z, ladj = model.forward_transform(x)
        x2, ladj_inv = model.inverse_transform(z)
    assert (z - x).abs().max() > 0.1, "the perturbed flow should move the points"
    torch.testing.assert_close(x2, x, atol=1e-7, rtol=0)
    torch.testing.assert_close(ladj_inv, -ladj, atol=1e-7, rtol=0)


@pytest.mark.parametrize("d", [2, 10])
def test_linear_field_matches_the_change_of_variables(d):
    # f(z, t) = W z  =>  z(T) = expm(W T) x  and  log|det dz/dx| = T tr(W)
    torch.manual_seed(1)
    cfg = tight(hidden=(), time_embedding="concat", time=1.3)
    model = CNF(DataSpec((d,)), cfg).double()
    w = torch.randn(d, d, dtype=D64) / math.sqrt(d)
    with torch.no_grad():
        model.net.layers[0].linear.weight.copy_(torch.cat([w, torch.zeros(d, 1, dtype=D64)], 1))
        model.net.layers[0].linear.bias.zero_()
    x = torch.randn(5, d, dtype=D64)
    z_want = x @ torch.linalg.matrix_exp(1.3 * w).T  # (5, d)
    logp_want = (
        -0.5 * z_want.square().sum(-1) - 0.5 * d * math.log(2 * math.pi) + 1.3 * torch.trace(w)
    )
    with model.inference():
        z, ladj = model.forward_transform(x)
        logp = model.log_prob(x)
    torch.testing.assert_close(z, z_want, atol=1e-7, rtol=0)
    torch.testing.assert_close(ladj, torch.full_like(ladj, 1.3 * float(torch.trace(w))))
    torch.testing.assert_close(logp, logp_want, atol=1e-7, rtol=0)


@pytest.mark.slow  # ~5 s: 10,000 grid points and 4,000 samples through dopri5
def test_density_integrates_to_one_and_samples_match():
    torch.manual_seed(0)
    cfg = CNF.Config(hidden=(16, 16), rtol=1e-6, atol=1e-6)
    model = perturb(CNF(DataSpec((2,)), cfg).double(), 0.4, seed=2)
    n, lim = 100, 7.0
    h = 2 * lim / n
    t = -lim + h * (torch.arange(n, dtype=D64) + 0.5)
    pts = torch.cartesian_prod(t, t)  # (n^2, 2)
    with model.inference():
        logp = model.log_prob(pts)
    base = -0.5 * pts.square().sum(-1) - math.log(2 * math.pi)
    assert (logp - base).abs().max() > 0.3, "the perturbed flow should not be the identity"
    p = logp.exp()
    assert abs(p.sum().item() * h * h - 1) < 0.01
    entropy = -(p * logp).sum().item() * h * h
    with model.inference():
        s = model.sample(4000)
        lp = model.log_prob(s)
    se = lp.std().item() / math.sqrt(len(lp))
    assert abs(-lp.mean().item() - entropy) < 4 * se + 0.02


def test_hutchinson_estimate_is_unbiased_for_the_exact_log_prob():
    torch.manual_seed(0)
    cfg = CNF.Config(hidden=(16,), eval_method="rk4", eval_ode_steps=6)
    model = perturb(CNF(DataSpec((6,)), cfg).double(), 0.3)
    x = torch.randn(1, 6, dtype=D64).expand(4000, 6).contiguous()
    with model.inference():
        exact = model.log_prob(x[:1])  # the z path does not depend on the noise with rk4
        est = model.log_prob_estimate(x)
    se = est.std().item() / math.sqrt(len(est))
    assert est.std().item() > 1e-3, "single estimates should vary"
    assert abs(est.mean().item() - exact.item()) < 4 * se


@pytest.fixture
def one_thread():
    """Tiny matmuls under create_graph: a second OpenMP thread only spin-waits (10x slower on a
    loaded machine), so this test runs on one."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_training_reduces_the_nll_and_regularisers_add_up(one_thread):
    torch.manual_seed(0)
    model = CNF(DataSpec((2,)), CNF.Config(hidden=(16,), ode_steps=2, kinetic=0.05, jacobian=0.05))
    g = torch.Generator().manual_seed(0)
    x = 0.5 * torch.randn(128, 2, generator=g) + torch.tensor([1.5, -1.0])
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    first = None
    for _ in range(30):
        out = model.loss(x)
        first = first if first is not None else float(out["nll"])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    expected = float(out["nll"] + 0.05 * out["kinetic"] + 0.05 * out["jacobian"])
    assert abs(out["loss"].item() - expected) < 1e-5
    assert float(out["kinetic"]) > 0 and float(out["jacobian"]) > 0
    assert float(out["nll"]) < first - 0.5


def test_trace_choice_and_options():
    assert CNF(DataSpec((2,)))._train_trace() == "exact"
    assert CNF(DataSpec((1, 4, 4)), CNF.Config(hidden=(8,)))._train_trace() == "hutchinson"
    model = build("cnf", DataSpec((2,)), hidden=(8,), eval_method="rk4", eval_ode_steps=3)
    with model.inference():
        assert model.sample(3, method="euler", steps=5).shape == (3, 2)
        with pytest.raises(ConfigError, match="needs steps"):
            model.sample(3, method="euler")
        with pytest.raises(ConfigError, match="unknown ODE method"):
            model.sample(3, method="leapfrog")
        with pytest.raises(DataError, match="unconditional"):
            model.log_prob(torch.zeros(2, 2), torch.zeros(2))
    with pytest.raises(ConfigError, match="adaptive"):
        CNF.Config(eval_ode_steps=10)
    with pytest.raises(ConfigError, match="needs ode_steps"):
        CNF.Config(method="euler", ode_steps=None)


def test_reduced_temperature_samples_have_smaller_variance():
    model = perturb(build("cnf", DataSpec((2,)), hidden=(8,)).double(), 0.3, seed=1)
    variance = {}
    for t in (1.0, 0.5):
        torch.manual_seed(0)
        variance[t] = model.sample(2000, method="rk4", steps=4, temperature=t).var(0).sum()
    assert variance[0.5] < 0.6 * variance[1.0]
    assert build("cnf").sample_config({"temperature": 0.5}).temperature == 0.5
