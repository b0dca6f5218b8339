"""ODE integrators and divergence estimators, checked in float64 against closed forms: the matrix
exponential for linear systems, convergence orders, autograd Jacobians, Monte Carlo means."""

from __future__ import annotations

import math

import pytest
import torch

from dgm.core.errors import ConfigError, DgmError
from dgm.samplers import divergence_exact, divergence_hutchinson, odeint

D64 = torch.float64


def linear_system(seed: int = 0, d: int = 4):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=D64) / math.sqrt(d)  # mild, non-symmetric
    y0 = torch.randn(3, d, generator=g, dtype=D64)  # a batch of 3 initial states
    return a, y0


def exact(a, y0, t):
    return y0 @ torch.linalg.matrix_exp(a * t).T  # rows y(t) = expm(A t) y0


class Counted:
    def __init__(self, a):
        self.a, self.n = a, 0

    def __call__(self, t, y):
        self.n += 1
        assert isinstance(t, torch.Tensor) and t.dim() == 0 and t.dtype == D64
        return y @ self.a.T


@pytest.mark.parametrize("t0,t1", [(0.0, 1.5), (1.5, 0.0), (0.3, -0.9)])
def test_rk4_and_dopri5_match_the_matrix_exponential(t0, t1):
    a, y0 = linear_system()
    want = exact(a, y0, t1 - t0)
    rk4 = odeint(Counted(a), y0, t0, t1, method="rk4", steps=200)
    torch.testing.assert_close(rk4, want, atol=1e-8, rtol=0)
    dp = odeint(Counted(a), y0, t0, t1, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(dp, want, atol=1e-8, rtol=0)
    eu = odeint(Counted(a), y0, t0, t1, method="euler", steps=2000)
    torch.testing.assert_close(eu, want, atol=5e-3, rtol=0)


def test_fixed_step_methods_converge_at_their_order():
    a, y0 = linear_system(1)
    want = exact(a, y0, 1.0)

    def err(method, n):
        return (
            (odeint(lambda t, y: y @ a.T, y0, 0.0, 1.0, method=method, steps=n) - want).abs().max()
        )

    assert 12 < err("rk4", 10) / err("rk4", 20) < 20  # order 4: ratio 16
    assert 3.5 < err("heun", 50) / err("heun", 100) < 4.5  # order 2: ratio 4
    assert 1.7 < err("euler", 100) / err("euler", 200) < 2.3  # order 1: ratio 2


def test_fixed_step_methods_take_their_number_of_evaluations():
    a, y0 = linear_system(3)
    for method, per_step in (("euler", 1), ("heun", 2), ("rk4", 4)):
        f = Counted(a)
        odeint(f, y0, 0.0, 1.0, method=method, steps=7)
        assert f.n == 7 * per_step, method


def test_dopri5_error_and_cost_follow_the_tolerance():
    a, y0 = linear_system(2)
    a = 2 * a
    want = exact(a, y0, 2.0)
    errors, evals = [], []
    for tol in (1e-3, 1e-5, 1e-7, 1e-9):
        f = Counted(a)
        errors.append(float((odeint(f, y0, 0.0, 2.0, rtol=tol, atol=tol) - want).abs().max()))
        evals.append(f.n)
        assert errors[-1] < 50 * tol * max(1.0, float(want.abs().max()))
    assert all(e1 > e2 for e1, e2 in zip(errors, errors[1:], strict=False))
    assert all(n1 < n2 for n1, n2 in zip(evals, evals[1:], strict=False))


def test_time_dependent_field_backward_and_forward():
    # dy/dt = cos(t) y  =>  y(t1) = y(t0) exp(sin t1 - sin t0)
    y0 = torch.tensor([1.0, -2.0], dtype=D64)
    for t0, t1 in [(0.0, 3.0), (3.0, 0.0)]:
        want = y0 * math.exp(math.sin(t1) - math.sin(t0))
        for kw in ({"rtol": 1e-9, "atol": 1e-9}, {"method": "rk4", "steps": 100}):
            got = odeint(lambda t, y: torch.cos(t) * y, y0, t0, t1, **kw)
            torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_tuple_states_keep_their_structure():
    # y' = -y, z' = y with y(0) = 1, z(0) = 0  =>  y = e^-t, z = 1 - e^-t
    y0 = (torch.ones(5, dtype=D64), torch.zeros(5, 1, dtype=D64))

    def f(t, s):
        y, z = s
        return -y, y[:, None]

    for kw in ({"rtol": 1e-9, "atol": 1e-9}, {"method": "rk4", "steps": 50}):
        y, z = odeint(f, y0, 0.0, 2.0, **kw)
        assert y.shape == (5,) and z.shape == (5, 1)
        torch.testing.assert_close(y, torch.full((5,), math.exp(-2), dtype=D64), atol=1e-6, rtol=0)
        torch.testing.assert_close(z[:, 0], 1 - y, atol=1e-6, rtol=0)
    assert isinstance(odeint(f, list(y0), 0.0, 1.0), tuple)


def test_gradients_flow_through_the_steps():
    # y' = a y  =>  y(1) = y0 e^a, d y(1) / d a = y0 e^a
    for kw in ({"rtol": 1e-9, "atol": 1e-9}, {"method": "rk4", "steps": 100}):
        a = torch.tensor(0.7, dtype=D64, requires_grad=True)
        y0 = torch.tensor([2.0], dtype=D64)
        (g,) = torch.autograd.grad(odeint(lambda t, y, a=a: a * y, y0, 0.0, 1.0, **kw).sum(), a)
        assert abs(float(g) - 2 * math.exp(0.7)) < 1e-6


def test_zero_length_interval_returns_the_state():
    y0 = torch.randn(3, dtype=D64)
    assert odeint(lambda t, y: y, y0, 1.0, 1.0) is y0


def test_matches_torchdiffeq_when_installed():
    torchdiffeq = pytest.importorskip("torchdiffeq")
    a, y0 = linear_system(3)
    ts = torch.tensor([0.0, 1.0], dtype=D64)
    theirs = torchdiffeq.odeint(lambda t, y: y @ a.T, y0, ts, rtol=1e-9, atol=1e-9)[-1]
    ours = odeint(lambda t, y: y @ a.T, y0, 0.0, 1.0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ours, theirs, atol=1e-7, rtol=0)


def test_bad_options_are_one_clear_error():
    y0 = torch.ones(2, dtype=D64)
    f = lambda t, y: -y  # noqa: E731
    with pytest.raises(ConfigError, match="unknown ODE method"):
        odeint(f, y0, 0, 1, method="rk45")
    with pytest.raises(ConfigError, match="needs steps"):
        odeint(f, y0, 0, 1, method="rk4")
    with pytest.raises(ConfigError, match="chooses its own steps"):
        odeint(f, y0, 0, 1, steps=10)
    with pytest.raises(ConfigError, match="positive"):
        odeint(f, y0, 0, 1, rtol=0.0)
    with pytest.raises(DgmError, match="max_steps=3"):
        odeint(f, y0, 0, 10, rtol=1e-10, atol=1e-10, max_steps=3)
    with pytest.raises(DgmError, match="same structure"):
        odeint(lambda t, y: y[:1], y0, 0, 1)
    with pytest.raises(DgmError, match="floating-point"):
        odeint(f, torch.ones(2, dtype=torch.long), 0, 1)
    with pytest.raises(DgmError, match="non-finite"):
        odeint(lambda t, y: y * float("nan"), y0, 0, 1)


# ---------------------------------------------------------------------------------- divergences
def mlp_field(seed: int = 0, d: int = 5):
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(d, 16, generator=g, dtype=D64)
    w2 = torch.randn(16, d, generator=g, dtype=D64) / 4
    return lambda x: torch.tanh(x @ w1) @ w2


def autograd_trace(field, x):
    return torch.stack(
        [torch.trace(torch.autograd.functional.jacobian(field, xi[None])[0, :, 0]) for xi in x]
    )


def test_exact_divergence_is_the_jacobian_trace():
    field = mlp_field()
    x = torch.randn(6, 5, dtype=D64, requires_grad=True)
    div = divergence_exact(field(x), x)
    torch.testing.assert_close(div, autograd_trace(field, x.detach()))
    # create_graph keeps it differentiable: d/dx of the divergence exists and is finite
    div2 = divergence_exact(field(x), x, create_graph=True)
    (g,) = torch.autograd.grad(div2.sum(), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


@pytest.mark.parametrize("noise", ["gaussian", "rademacher"])
def test_hutchinson_is_unbiased(noise):
    field = mlp_field(1)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 5, dtype=D64, generator=g).expand(20000, 5).clone().requires_grad_(True)
    eps = torch.randn(x.shape, generator=g, dtype=D64)
    if noise == "rademacher":
        eps = eps.sign()
    est = divergence_hutchinson(field(x), x, eps)  # (N,) independent estimates of one trace
    truth = float(autograd_trace(field, x[:1].detach())[0])
    se = float(est.std()) / math.sqrt(est.numel())
    assert se > 0 and abs(float(est.mean()) - truth) < 4 * se
    # a single estimate is not the trace: the test would notice a biased estimator
    assert float(est.std()) > 1e-3


def test_divergence_shape_errors():
    x = torch.randn(3, 2, dtype=D64, requires_grad=True)
    with pytest.raises(DgmError, match="same shape"):
        divergence_exact(x.sum(-1), x)
    with pytest.raises(DgmError, match="eps has shape"):
        divergence_hutchinson(x * 2, x, torch.randn(3, 3, dtype=D64))
