"""Flows: the RQ spline, coupling and autoregressive transforms, and the nsf / realnvp models.

The maths is checked in float64 against independent computations: autograd Jacobians and slogdet,
the spline's knots, densities integrated on a grid, entropies by quadrature.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor
from torch.autograd.functional import jacobian

from conftest import perturb
from dgm.core.errors import ConfigError, DataError
from dgm.core.protocols import ConditionalModel
from dgm.core.spec import DataSpec
from dgm.core.transforms import Inverse, MonotonicAffine, Reverse, Transform
from dgm.models import build
from dgm.models.flows import IAF, MAF, NSF, Glow, RealNVP
from dgm.models.flows.autoregressive import MaskedAutoregressive
from dgm.models.flows.coupling import Coupling, alternating_mask, half_mask
from dgm.models.flows.realnvp import RescaledAffine
from dgm.models.flows.splines import (
    MIN_BIN_WIDTH,
    MIN_DERIVATIVE,
    RQSpline,
    rational_quadratic_spline,
)
from dgm.models.flows.stack import elementwise_stack
from dgm.nn.masked import made_order

D64 = torch.float64


# ---------------------------------------------------------------------------------- splines
def spline_params(seed: int, shape: tuple[int, ...], bins: int, scale: float, dtype=D64):
    g = torch.Generator().manual_seed(seed)
    w, h = (scale * torch.randn(*shape, bins, generator=g, dtype=D64) for _ in range(2))
    d = scale * torch.randn(*shape, bins - 1, generator=g, dtype=D64)
    return w.to(dtype), h.to(dtype), d.to(dtype)


def knots(u: Tensor, bound: float) -> Tensor:
    """Knot positions from the documented parametrisation (floor + softmax, cumulative)."""
    k = u.shape[-1]
    frac = MIN_BIN_WIDTH + (1 - MIN_BIN_WIDTH * k) * torch.softmax(u, -1)
    edges = F.pad(torch.cumsum(frac, -1), (1, 0)) * 2 * bound - bound
    edges[..., 0], edges[..., -1] = -bound, bound
    return edges


def spline_inputs(seed: int, n: int, bound: float, w: Tensor) -> Tensor:
    """Points inside, in both tails, at +-B exactly and at the knots of each row."""
    g = torch.Generator().manual_seed(seed)
    inside = (2 * torch.rand(n, 6, generator=g, dtype=D64) - 1) * bound
    tails = torch.sign(torch.randn(n, 4, generator=g, dtype=D64)) * (
        bound + 3 * torch.rand(n, 4, generator=g, dtype=D64)
    )
    edges = knots(w, bound)  # (n, K + 1), includes -B and B
    return torch.cat([inside, tails, edges], dim=1)  # (n, 10 + K + 1)


def rqs(x, w, h, d, bound, inverse=False):
    n = x.shape[1]
    expand = [t[:, None].expand(-1, n, -1) for t in (w, h, d)]  # same spline along a row
    return rational_quadratic_spline(x, *expand, inverse=inverse, tail_bound=bound)


spline_cases = dict(
    seed=st.integers(0, 2**31 - 1),
    bins=st.integers(1, 10),
    bound=st.floats(0.5, 6.0),
    scale=st.floats(0.0, 4.0),
)


@settings(max_examples=25, deadline=None)
@given(**spline_cases)
def test_spline_round_trip_monotone_and_identity_tails(seed, bins, bound, scale):
    w, h, d = spline_params(seed, (3,), bins, scale)
    x = spline_inputs(seed, 3, bound, w)
    y, ladj = rqs(x, w, h, d, bound)
    x2, ladj_inv = rqs(y, w, h, d, bound, inverse=True)
    torch.testing.assert_close(x2, x, atol=1e-9, rtol=0)
    # At a knot between a steep bin (slope s) and a small derivative d, |d log g' / d theta| ~ s / d
    # reaches 1e5..1e6 for the extreme parameters drawn here, so the two sides of the knot (one
    # ulp of theta apart) differ by up to ~1e-7 in log g'; a wrong formula differs by O(1).
    torch.testing.assert_close(ladj_inv, -ladj, atol=1e-6, rtol=0)
    outside = x.abs() > bound
    assert torch.equal(y[outside], x[outside]) and (ladj[outside] == 0).all()
    xs, order = x.sort(dim=1)
    dx, dy = xs.diff(dim=1), y.gather(1, order).diff(dim=1)
    assert (dy[dx > 0] > 0).all() and (dy[dx == 0] == 0).all()  # strictly increasing


@settings(max_examples=25, deadline=None)
@given(**spline_cases)
def test_spline_log_derivative_matches_autograd(seed, bins, bound, scale):
    w, h, d = spline_params(seed, (1,), bins, scale)
    x = spline_inputs(seed, 1, bound, w)[0]  # (N,)
    x = x[(x.abs() - bound).abs() > 1e-9]  # the derivative jumps only at +-B, if anywhere
    for inverse in (False, True):
        v = x if not inverse else rqs(x[None], w, h, d, bound)[0][0]

        def fn(t: Tensor, inverse=inverse) -> Tensor:
            return rqs(t[None], w, h, d, bound, inverse)[0][0]

        jac = jacobian(fn, v)  # (N, N), diagonal for an elementwise map
        assert torch.equal(jac, torch.diag(torch.diagonal(jac)))
        ladj = rqs(v[None], w, h, d, bound, inverse)[1][0]
        # tolerance: see the conditioning note in the round-trip test (a bug is O(1) off)
        torch.testing.assert_close(ladj, torch.diagonal(jac).log(), atol=1e-6, rtol=1e-6)


@settings(max_examples=25, deadline=None)
@given(**spline_cases)
def test_spline_interpolates_its_knots_with_the_given_derivatives(seed, bins, bound, scale):
    w, h, d = spline_params(seed, (2,), bins, scale)
    xk, yk = knots(w, bound), knots(h, bound)  # (2, K + 1)
    y, ladj = rqs(xk, w, h, d, bound)
    torch.testing.assert_close(y, yk, atol=1e-10, rtol=0)
    shift = math.log(math.expm1(1 - MIN_DERIVATIVE))
    inner = MIN_DERIVATIVE + F.softplus(d + shift)
    deriv = F.pad(inner, (1, 1), value=1.0)  # boundary derivatives are 1 (linear tails)
    torch.testing.assert_close(ladj.exp(), deriv, atol=1e-8, rtol=1e-8)


def test_spline_with_zero_parameters_is_the_identity():
    x = torch.linspace(-5, 5, 101, dtype=D64)[None]
    w, h, d = (
        torch.zeros(1, 4, dtype=D64),
        torch.zeros(1, 4, dtype=D64),
        torch.zeros(1, 3, dtype=D64),
    )
    y, ladj = rqs(x, w, h, d, 3.0)
    torch.testing.assert_close(y, x, atol=1e-12, rtol=0)
    torch.testing.assert_close(ladj, torch.zeros_like(ladj), atol=1e-12, rtol=0)


def test_spline_in_float32_agrees_with_float64():
    w, h, d = spline_params(0, (64,), 8, 2.0)
    x = spline_inputs(1, 64, 3.0, w)  # includes every knot and both tails
    y64, l64 = rqs(x, w, h, d, 3.0)
    x32 = x.float().requires_grad_()
    y32, l32 = rqs(x32, w.float(), h.float(), d.float(), 3.0)
    assert torch.isfinite(y32).all() and torch.isfinite(l32).all()
    torch.testing.assert_close(y32.double(), y64, atol=1e-5, rtol=1e-5)
    x2, _ = rqs(y32, w.float(), h.float(), d.float(), 3.0, inverse=True)
    # the inverse amplifies the float32 rounding of y by 1 / g'(x): bound the error by that
    eps = torch.finfo(torch.float32).eps
    bound = 1e-6 + 16 * eps * 3.0 / l64.exp()
    assert ((x2.double() - x).abs() <= bound).all()
    assert ((x2.double() - x).abs() <= 1e-5)[l64.exp() > 0.1].all()
    (y32.sum() + l32.sum() + x2.sum()).backward()
    assert torch.isfinite(x32.grad).all()
    # log g' is ill-conditioned right at a knot of a narrow bin with a tiny derivative
    # (d log g' / d theta ~ 1 / theta), so float32 rounding of x (~1e-7) moves it visibly there;
    # compare at least 1% of a bin width away from the knots, where the conditioning is bounded.
    edges = knots(w, 3.0)  # (64, K + 1)
    widths = edges.diff(dim=-1).amin(-1, keepdim=True)  # (64, 1)
    gap = (x[..., None] - edges[:, None, :]).abs().amin(-1)  # (64, N)
    far = (gap > 0.01 * widths) & (x.abs() < 3.0)
    assert far.float().mean() > 0.3
    torch.testing.assert_close(l32.double()[far], l64[far], atol=5e-3, rtol=0)


def test_spline_rejects_inconsistent_parameters():
    x = torch.zeros(2, dtype=D64)
    with pytest.raises(ValueError, match="3-bin spline"):
        rational_quadratic_spline(x, torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3))


# ---------------------------------------------------------------------------------- transforms
def check_transform(t: Transform, x: Tensor, context: Tensor | None = None, atol=1e-9) -> Tensor:
    """Round trip and per-example log|det J| against autograd + slogdet; returns the Jacobians."""
    y, ladj = t(x, context)
    x2, ladj_inv = t.inverse(y, context)
    torch.testing.assert_close(x2, x, atol=atol, rtol=0)
    torch.testing.assert_close(ladj_inv, -ladj, atol=atol, rtol=0)
    jacs = []
    for b in range(x.shape[0]):
        c = None if context is None else context[b : b + 1]
        jac = jacobian(lambda v, c=c: t(v[None], c)[0][0], x[b])  # (D, D)
        sign, logdet = torch.linalg.slogdet(jac)
        assert sign > 0
        torch.testing.assert_close(ladj[b], logdet, atol=atol, rtol=0)
        jacs.append(jac)
    return torch.stack(jacs)  # (B, D, D)


UNIVARIATES = {"affine": lambda: MonotonicAffine(2.0), "spline": lambda: RQSpline(5, 2.5)}


@pytest.mark.parametrize("kind", list(UNIVARIATES))
@pytest.mark.parametrize("ordering", ["natural", "random"])
@pytest.mark.parametrize("context_features", [0, 2])
def test_masked_autoregressive_transform(kind, ordering, context_features):
    torch.manual_seed(0)
    num_dims = 5
    order = made_order(num_dims, ordering, seed=2)
    t = MaskedAutoregressive(
        order, UNIVARIATES[kind](), (16, 16), context_features=context_features
    )
    perturb(t.double(), 0.3)
    x = 1.5 * torch.randn(4, num_dims, dtype=D64)
    ctx = torch.randn(4, context_features, dtype=D64) if context_features else None
    jac = check_transform(t, x, ctx)
    later = order[None, :] > order[:, None]  # (D, D): input j comes after output i
    assert (jac[:, later] == 0).all(), "y_i depends on a later x_j"
    earlier = order[None, :] < order[:, None]
    assert (jac[:, earlier] != 0).any(), "the conditioner has no effect"
    assert (torch.diagonal(jac, dim1=1, dim2=2) > 0).all()


@pytest.mark.parametrize("kind", list(UNIVARIATES))
@pytest.mark.parametrize("mask", ["alternating", "half"])
@pytest.mark.parametrize("unconditional", [False, True])
def test_coupling_transform(kind, mask, unconditional):
    torch.manual_seed(0)
    num_dims = 5
    m = alternating_mask(num_dims, 1) if mask == "alternating" else half_mask(num_dims)
    t = Coupling(m, UNIVARIATES[kind](), (16,), unconditional=unconditional)
    t = perturb(t.double(), 0.3)
    x = 1.5 * torch.randn(4, num_dims, dtype=D64)
    jac = check_transform(t, x)
    a, b = torch.nonzero(m).flatten(), torch.nonzero(~m).flatten()
    jaa = jac[:, a][:, :, a]
    if unconditional:  # x_A is mapped elementwise by its own parameters: diagonal, not identity
        assert torch.equal(jaa, torch.diag_embed(torch.diagonal(jaa, dim1=1, dim2=2)))
        assert (torch.diagonal(jaa, dim1=1, dim2=2) - 1).abs().max() > 1e-3
    else:
        assert torch.equal(jaa, torch.eye(len(a), dtype=D64).expand(4, -1, -1))
    assert (jac[:, a][:, :, b] == 0).all(), "the passed-through half depends on the other half"
    jbb = jac[:, b][:, :, b]
    assert torch.equal(jbb, torch.diag_embed(torch.diagonal(jbb, dim1=1, dim2=2)))
    assert (jac[:, b][:, :, a] != 0).any()


def test_unconditional_coupling_parameters_and_identity_start():
    """The unconditional half starts at the identity and carries one spline per dimension;
    the option belongs to the coupling variant only."""
    t = Coupling(half_mask(5), RQSpline(4, 3.0), (8,), unconditional=True).double()
    assert t.unconditional.shape == (2, RQSpline(4, 3.0).num_params)
    x = 2 * torch.randn(6, 5, dtype=D64)
    y, ladj = t(x)
    torch.testing.assert_close(y, x, atol=1e-12, rtol=0)
    torch.testing.assert_close(ladj, torch.zeros(6, dtype=D64), atol=1e-12, rtol=0)
    plain = NSF(DataSpec((4,)), NSF.Config(variant="coupling", depth=2, hidden=(8,)))
    both = NSF(
        DataSpec((4,)),
        NSF.Config(variant="coupling", depth=2, hidden=(8,), unconditional=True),
    )
    extra = sum(p.numel() for p in both.parameters()) - sum(p.numel() for p in plain.parameters())
    assert extra == 2 * 2 * (3 * 8 - 1)  # 2 layers x 2 passed-through dims x (3K - 1)
    with pytest.raises(ConfigError, match="variant='coupling' only"):
        NSF.Config(unconditional=True)


@pytest.mark.parametrize("unconditional", [False, True])
def test_coupling_with_context_and_its_errors(unconditional):
    torch.manual_seed(0)
    t = Coupling(half_mask(3), RQSpline(4, 3.0), (8,), context_features=2,
                 unconditional=unconditional)  # fmt: skip
    t = perturb(t.double(), 0.3)
    check_transform(t, torch.randn(3, 3, dtype=D64), torch.randn(3, 2, dtype=D64))
    with pytest.raises(ValueError, match="context"):
        t(torch.randn(3, 3, dtype=D64))
    with pytest.raises(ConfigError, match="1-D"):
        Coupling(torch.tensor([True]), RQSpline(), (8,))


# ---------------------------------------------------------------------------------- models
FLOWS = {
    "nsf-autoregressive": lambda spec: NSF(spec, NSF.Config(depth=3, hidden=(24, 24), bins=6)),
    "nsf-coupling": lambda spec: NSF(
        spec, NSF.Config(variant="coupling", depth=3, hidden=(24, 24), bins=6)
    ),
    "nsf-coupling-unconditional": lambda spec: NSF(
        spec, NSF.Config(variant="coupling", depth=3, hidden=(16,), unconditional=True)
    ),
    "nsf-random-permutation": lambda spec: NSF(
        spec, NSF.Config(depth=3, hidden=(16,), permutation="random", seed=3)
    ),
    "realnvp": lambda spec: RealNVP(
        spec, RealNVP.Config(depth=4, hidden=(24, 24), architecture="vector", logit_alpha=0)
    ),
    "maf": lambda spec: MAF(spec, MAF.Config(depth=3, hidden=(24, 24))),
    "iaf": lambda spec: IAF(spec, IAF.Config(depth=3, hidden=(24, 24), permutation="random")),
    "glow-vector": lambda spec: Glow(spec, Glow.Config(depth=3, hidden=(24, 24))),
}


def grid(lim: float = 8.0, n: int = 400) -> tuple[Tensor, float]:
    """Midpoints of an n x n grid on [-lim, lim]^2 and the cell area."""
    h = 2 * lim / n
    t = -lim + h * (torch.arange(n, dtype=D64) + 0.5)
    return torch.cartesian_prod(t, t), h * h


@pytest.mark.parametrize("name", list(FLOWS))
def test_flow_density_integrates_to_one_and_samples_match(name):
    torch.manual_seed(0)
    # eval mode: ActNorm (glow) would otherwise initialise itself from the grid
    model = perturb(FLOWS[name](DataSpec((2,))).double(), 0.15, seed=1).eval()
    pts, area = grid()
    with torch.no_grad():
        logp = model.log_prob(pts)  # (160000,)
    base = -0.5 * pts.square().sum(-1) - math.log(2 * math.pi)
    assert (logp - base).abs().max() > 0.2, "the perturbed flow should not be the identity"
    p = logp.exp()
    assert abs(p.sum().item() * area - 1) < 0.01
    entropy = -(p * logp).sum().item() * area  # quadrature of -E[log p]
    with torch.no_grad():
        s = model.sample(20000)
        lp = model.log_prob(s)
    assert s.shape == (20000, 2) and s.dtype == D64
    se = lp.std().item() / math.sqrt(len(lp))
    assert abs(-lp.mean().item() - entropy) < 4 * se + 0.01


def eight_gaussians(n: int, generator: torch.Generator) -> Tensor:
    k = torch.randint(0, 8, (n,), generator=generator)
    centres = 2.5 * torch.stack([torch.cos(k * math.pi / 4), torch.sin(k * math.pi / 4)], 1)
    return centres + 0.25 * torch.randn(n, 2, generator=generator)


@pytest.mark.parametrize("name", ["nsf-autoregressive", "nsf-coupling", "realnvp"])
def test_short_training_lowers_nll(name):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = FLOWS[name](DataSpec((2,)))
    test = eight_gaussians(4000, g)
    with torch.no_grad():
        before = -model.log_prob(test).mean().item()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(200):
        loss = model.loss(eight_gaussians(256, g))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = -model.log_prob(test).mean().item()
    # entropy of the mixture is about log 8 + 2 * 0.5 * log(2 pi e 0.25^2) = 1.14 nats
    assert before > 4.5
    assert after < before - 2.0


@pytest.mark.parametrize("name", [n for n in FLOWS if n != "glow-vector"])  # glow: test_glow.py
# float32 tolerances: flat spline regions amplify rounding by 1 / g' (see the spline test)
@pytest.mark.parametrize("dtype,atol,atol_ladj", [(torch.float32, 1e-3, 5e-3), (D64, 1e-10, 1e-10)])
def test_flow_transform_round_trip_on_images(name, dtype, atol, atol_ladj):
    torch.manual_seed(0)
    model = perturb(FLOWS[name](DataSpec((1, 3, 3))).to(dtype), 0.2)
    x = torch.randn(6, 1, 3, 3, dtype=dtype)
    z, ladj = model.forward_transform(x)
    assert z.shape == x.shape and ladj.shape == (6,)
    x2, ladj_inv = model.inverse_transform(z)
    torch.testing.assert_close(x2, x, atol=atol, rtol=0)
    torch.testing.assert_close(ladj_inv, -ladj, atol=atol_ladj, rtol=0)
    base = -0.5 * z.flatten(1).square().sum(-1) - 4.5 * math.log(2 * math.pi)
    torch.testing.assert_close(model.log_prob(x), base + ladj)
    assert model.sample(4).shape == (4, 1, 3, 3)


@pytest.mark.parametrize("name", list(FLOWS))
def test_sampling_with_log_det_agrees_with_log_prob(name):
    """``x = f^{-1}(z)`` scored two ways: ``log N(z) - log|det dx/dz|`` from the sampling pass and
    ``log_prob(x)`` from the density pass (for IAF these are one pass and D passes per layer)."""
    torch.manual_seed(0)
    model = perturb(FLOWS[name](DataSpec((2,))).double(), 0.2, seed=2).eval()
    z = torch.randn(500, 2, dtype=D64)
    with torch.no_grad():
        x, ladj = model.inverse_transform(z)
        base = -0.5 * z.square().sum(-1) - math.log(2 * math.pi)
        torch.testing.assert_close(model.log_prob(x), base - ladj, atol=1e-8, rtol=0)


@pytest.mark.parametrize("name", ["nsf", "maf", "iaf", "realnvp", "glow"])
def test_conditional_flow_is_a_density_for_every_label(name):
    torch.manual_seed(0)
    cfg = {"depth": 2, "hidden": (16,)}
    model = build(name, DataSpec((2,), num_classes=3), conditional=True, **cfg).double().eval()
    perturb(model, 0.1, seed=4)  # larger moves spread MAF's affine layers beyond the grid
    assert model.conditional and isinstance(model, ConditionalModel)
    pts, area = grid(10.0, 400)
    y = torch.full((pts.shape[0],), 1)
    with torch.no_grad():
        dens = [model.log_prob(pts, torch.full_like(y, k)).exp() for k in range(3)]
    for p in dens:
        assert abs(p.sum().item() * area - 1) < 0.01
    assert (dens[0] - dens[2]).abs().max() > 1e-3, "the label should change the density"
    with torch.no_grad():
        s = model.sample(7, torch.tensor(2))
        assert s.shape == (7, 2)
        out = model.loss((s, torch.full((7,), 2)))
    assert torch.isfinite(out["loss"])
    assert model.sample(5).shape == (5, 2)  # labels drawn uniformly when not given
    with pytest.raises(DataError, match="conditional"):
        model.log_prob(pts[:3])
    with pytest.raises(DataError, match="0..2"):
        model.log_prob(pts[:3], torch.tensor([0, 1, 3]))
    with pytest.raises(ConfigError, match="labelled"):
        build(name, DataSpec((2,)), conditional=True)


def test_maf_nsf_and_realnvp_are_one_stack_with_another_elementwise_map():
    """The models' flows are the layer loop of flows/stack.py: the same layers and order, and
    with the same weights the same density as a stack built by hand."""
    d = 3
    maf = MAF(DataSpec((d,)), MAF.Config(depth=3, hidden=(8,))).double()
    nsf = NSF(DataSpec((d,)), NSF.Config(depth=3, hidden=(8,), bins=4)).double()
    iaf = IAF(DataSpec((d,)), IAF.Config(depth=2, hidden=(8,))).double()
    nvp = RealNVP(DataSpec((4,)), RealNVP.Config(depth=3, hidden=(8,))).double()
    kinds = [MaskedAutoregressive, Reverse, MaskedAutoregressive, Reverse, MaskedAutoregressive]
    assert [type(t) for t in maf.flow.transform.transforms] == kinds
    assert [type(t) for t in nsf.flow.transform.transforms] == kinds
    assert [type(t) for t in iaf.flow.transform.transforms] == [Inverse, Reverse, Inverse]
    assert isinstance(nsf.flow.transform.transforms[0].univariate, RQSpline)
    assert isinstance(maf.flow.transform.transforms[0].univariate, MonotonicAffine)
    couplings = nvp.flow.transform.transforms
    assert [type(t) for t in couplings] == [Coupling] * 3  # alternating masks, no permutation
    assert [t.idx_a.tolist() for t in couplings] == [[0, 2], [1, 3], [0, 2]]
    for model, univariate, kw in (
        (nsf, RQSpline(4, 5.0), {}),
        (maf, MonotonicAffine(3.0), {}),
        (
            nvp,
            MonotonicAffine(3.0),
            dict(conditioner="coupling", mask="alternating", permutation=None),
        ),
    ):
        perturb(model, 0.3)
        stack = elementwise_stack(model.num_dims, univariate, 3, (8,), **kw).double()
        stack.load_state_dict(model.flow.transform.state_dict())
        x = torch.randn(6, model.num_dims, dtype=D64)
        base = torch.distributions.Normal(0.0, 1.0)
        z, ladj = stack(x)
        torch.testing.assert_close(model.log_prob(x), base.log_prob(z).sum(-1) + ladj)


@pytest.mark.parametrize("cls", [NSF, RealNVP, MAF, IAF])
def test_flow_starts_at_the_base_density(cls):
    model = cls(DataSpec((3,))).double()
    x = 2 * torch.randn(5, 3, dtype=D64)
    base = torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(-1)
    torch.testing.assert_close(model.log_prob(x), base, atol=1e-10, rtol=0)


def test_one_dimensional_data():
    with pytest.raises(ConfigError, match="autoregressive"):
        NSF(DataSpec((1,)), NSF.Config(variant="coupling"))
    with pytest.raises(ConfigError, match="2 dimensions"):
        RealNVP(DataSpec((1,)))
    model = perturb(NSF(DataSpec((1,)), NSF.Config(depth=2, hidden=(8,))).double(), 0.5)
    n, lim = 20000, 10.0
    t = -lim + 2 * lim / n * (torch.arange(n, dtype=D64) + 0.5)
    with torch.no_grad():
        p = model.log_prob(t[:, None]).exp()
    assert abs(p.sum().item() * 2 * lim / n - 1) < 1e-3


def test_flow_input_errors():
    model = NSF(DataSpec((2,)), NSF.Config(depth=1, hidden=(4,)))
    with pytest.raises(DataError, match="shape"):
        model.log_prob(torch.zeros(3, 3))
    with pytest.raises(DataError, match="NaN"):
        model.log_prob(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(DataError, match="unconditional"):
        model.log_prob(torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ConfigError, match="continuous"):
        NSF(DataSpec((2,), "discrete", levels=2))
    with pytest.raises(ConfigError, match="bins"):
        NSF.Config(bins=0)


# ---------------------------------------------------------------------------------- realnvp images
def test_rescaled_affine_inverts_with_the_autograd_log_derivative():
    torch.manual_seed(0)
    affine = RescaledAffine(3).double()
    x = torch.randn(2, 3, 4, 4, dtype=D64)
    zero = torch.zeros(2, 3, 4, 4, 2, dtype=D64)
    y0, ladj0 = affine(x, zero)
    assert torch.equal(y0, x) and torch.equal(ladj0, torch.zeros_like(x))  # identity at zero
    with torch.no_grad():
        affine.scale.copy_(torch.tensor([0.5, 1.0, 2.5]))
    params = 2 * torch.randn(2, 3, 4, 4, 2, dtype=D64)
    y, ladj = affine(x, params)
    x2, ladj_inv = affine(y, params, inverse=True)
    torch.testing.assert_close(x2, x, atol=1e-12, rtol=0)
    torch.testing.assert_close(ladj_inv, -ladj, atol=1e-12, rtol=0)
    xg = x.clone().requires_grad_(True)
    (dy,) = torch.autograd.grad(affine(xg, params)[0].sum(), xg)  # elementwise: the diagonal
    torch.testing.assert_close(dy.log(), ladj, atol=1e-12, rtol=0)
    # |log-scale| stays below the learned per-channel scale
    assert (ladj.abs() <= affine.scale.detach().view(1, 3, 1, 1)).all()


def test_realnvp_image_couplings_learn_one_scale_each():
    new = RealNVP(DataSpec((1, 4, 4)), RealNVP.Config(levels=2, width=8))
    scales = [k for k in new.state_dict() if k.endswith("univariate.scale")]
    assert len(scales) == 10  # one per coupling: 3 + 3 + 4
    # the vector architecture's affine map has no learned scale
    vec = RealNVP(DataSpec((4,)), RealNVP.Config(depth=2))
    assert not any(k.endswith("univariate.scale") for k in vec.state_dict())


# ---------------------------------------------------------------------------------- temperature
@pytest.mark.parametrize("name", ["nsf", "maf", "realnvp", "glow", "iaf"])
def test_reduced_temperature_samples_have_smaller_variance(name):
    model = perturb(build(name, DataSpec((2,)), depth=2, hidden=(16,)).double(), 0.3, seed=1)
    variance = {}
    for t in (1.0, 0.5):
        torch.manual_seed(0)
        variance[t] = model.sample(4000, temperature=t).var(0).sum()
    assert variance[0.5] < 0.6 * variance[1.0]
    torch.manual_seed(0)
    plain = model.sample(50)
    torch.manual_seed(0)
    assert torch.equal(model.sample(50, temperature=1.0), plain)  # the default is p(x)
    mode = model.sample(3, temperature=0.0)  # every draw is the image of z = 0
    torch.testing.assert_close(
        mode, model.inverse_transform(torch.zeros(1, 2, dtype=D64))[0].expand(3, 2)
    )
    with pytest.raises(ConfigError, match="temperature must be a finite number >= 0"):
        model.sample(2, temperature=-0.5)
