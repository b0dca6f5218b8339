"""Every flow transform, in float64: inverse(forward(x)) = x, the inverse's log-determinant is the
negative of the forward's, and log|det J| equals slogdet of the autograd Jacobian of the
flattened map. Inputs are drawn by hypothesis (with points in the spline tails); autoregressive
transforms must have triangular Jacobians in their order.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor
from torch.autograd.functional import jacobian

from conftest import perturb
from dgm.core.transforms import (
    Composite,
    Inverse,
    MonotonicAffine,
    Permutation,
    Reshape,
    Reverse,
    Transform,
)
from dgm.models.flows.actnorm import ActNorm
from dgm.models.flows.affine import ImageCoupling, checkerboard_mask
from dgm.models.flows.autoregressive import MaskedAutoregressive
from dgm.models.flows.class_prior import ClassPrior
from dgm.models.flows.conv1x1 import InvConv1x1
from dgm.models.flows.coupling import Coupling, alternating_mask
from dgm.models.flows.elementwise import Logit, Sigmoid
from dgm.models.flows.multiscale import MultiScale, Squeeze
from dgm.models.flows.splines import RQSpline
from dgm.nn.masked import made_order

D64 = torch.float64


def check_bijection(t: Transform, x: Tensor, context: Tensor | None = None, atol=1e-9) -> Tensor:
    """Round trip, inverse log-det and log|det J| against slogdet; returns the (B, D, D) Jacobians
    of the flattened map."""
    t.eval()  # no ActNorm re-initialisation inside the checks
    y, ladj = t(x, context)
    assert ladj.shape == (x.shape[0],) and y.shape[0] == x.shape[0]
    assert y[0].numel() == x[0].numel()
    assert tuple(y.shape[1:]) == tuple(t.output_shape(tuple(x.shape[1:])))
    x2, ladj_inv = t.inverse(y, context)
    torch.testing.assert_close(x2, x, atol=atol, rtol=0)
    torch.testing.assert_close(ladj_inv, -ladj, atol=atol, rtol=0)
    jacs = []
    for b in range(x.shape[0]):
        c = None if context is None else context[b : b + 1]

        def f(v: Tensor, c=c) -> Tensor:
            return t(v.view(1, *x.shape[1:]), c)[0].reshape(-1)

        jac = jacobian(f, x[b].reshape(-1))  # (D, D)
        sign, logdet = torch.linalg.slogdet(jac)
        assert sign != 0
        torch.testing.assert_close(ladj[b], logdet, atol=atol, rtol=1e-9)
        jacs.append(jac)
    return torch.stack(jacs)


def image_context(seed: int, b: int, k: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, k, 4, 4, generator=g, dtype=D64)


def one_hot(b: int, k: int) -> Tensor:
    return torch.nn.functional.one_hot(torch.arange(b) % k, k).to(D64)


# name -> (factory, input shape, input kind, context factory)
CASES: dict[str, tuple[Callable[[], Transform], tuple[int, ...], str, Callable | None]] = {
    "logit": (lambda: Logit(0.05), (1, 4, 4), "unit", None),
    "logit-alpha0": (lambda: Logit(0.0), (5,), "unit", None),
    "sigmoid": (lambda: Sigmoid(), (2, 2, 2), "real", None),
    "actnorm-vector": (lambda: ActNorm(5), (5,), "real", None),
    "actnorm-image": (lambda: ActNorm(2), (2, 3, 3), "real", None),
    "conv1x1-vector": (lambda: InvConv1x1(4, seed=1), (4,), "real", None),
    "conv1x1-image": (lambda: InvConv1x1(3, seed=2), (3, 2, 2), "real", None),
    "squeeze": (lambda: Squeeze(), (2, 4, 4), "real", None),
    "reshape": (lambda: Reshape((2, 2, 3), (12,)), (2, 2, 3), "real", None),
    "reverse-channels": (lambda: Reverse(), (3, 2, 2), "real", None),
    "permute-channels": (lambda: Permutation(torch.tensor([2, 0, 1])), (3, 2, 2), "real", None),
    "checkerboard-affine": (
        lambda: ImageCoupling(2, "checkerboard", 1, 8),
        (2, 4, 4),
        "real",
        None,
    ),
    "checkerboard-spline-label": (
        lambda: ImageCoupling(
            1, "checkerboard", 0, 8, context_features=3, univariate=RQSpline(4, 2.5)
        ),
        (1, 4, 4),
        "tails",
        lambda b: one_hot(b, 3),
    ),
    "channel-affine": (lambda: ImageCoupling(3, "channel", 0, 8), (3, 4, 4), "real", None),
    "channel-parity1-image-context": (
        lambda: ImageCoupling(4, "channel", 1, 8, context_features=2),
        (4, 4, 4),
        "real",
        lambda b: image_context(7, b, 2),
    ),
    "vector-affine-coupling": (
        lambda: Coupling(alternating_mask(5, 0), MonotonicAffine(2.0), (16,)),
        (5,),
        "real",
        None,
    ),
    "class-prior": (lambda: ClassPrior(5, 3), (5,), "real", lambda b: one_hot(b, 3)),
    "multiscale": (
        lambda: MultiScale(
            [
                Composite(
                    [Squeeze(), ActNorm(4), InvConv1x1(4), ImageCoupling(4, "channel", 0, 8)]
                ),
                Composite([Squeeze(), ImageCoupling(8, "channel", 1, 8)]),
            ],
            (1, 4, 4),
        ),
        (1, 4, 4),
        "real",
        None,
    ),
}


def inputs(kind: str, shape: tuple[int, ...], seed: int, scale: float) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "unit":
        return torch.rand(2, *shape, generator=g, dtype=D64).clamp(1e-3, 1 - 1e-3)
    x = scale * torch.randn(2, *shape, generator=g, dtype=D64)
    if kind == "tails":  # a third of the elements beyond the spline's tail bound 2.5
        far = torch.rand(2, *shape, generator=g) < 0.33
        x = torch.where(far, torch.sign(x) * (2.5 + 3 * torch.rand_like(x)), x)
    return x


@pytest.mark.parametrize("name", list(CASES))
@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(0.1, 3.0))
def test_transform_is_a_bijection_with_the_autograd_log_det(name, seed, scale):
    factory, shape, kind, context = CASES[name]
    torch.manual_seed(seed % 1000)
    t = perturb(factory().double(), 0.3, seed=seed % 997)
    x = inputs(kind, shape, seed, scale)
    check_bijection(t, x, None if context is None else context(2))


def test_spline_coupling_points_in_the_tails_are_passed_through():
    t = perturb(ImageCoupling(1, "checkerboard", 0, 8, univariate=RQSpline(4, 2.5)).double(), 0.5)
    x = torch.full((2, 1, 4, 4), 4.0, dtype=D64)
    x[1] = -7.0
    y, ladj = t(x)
    assert torch.equal(y, x) and (ladj == 0).all()


@pytest.mark.parametrize("kind", ["affine", "spline"])
@pytest.mark.parametrize("ordering", ["natural", "random"])
def test_inverse_autoregressive_transform_is_triangular(kind, ordering):
    """IAF's layer (the inverse of a MADE transform) is autoregressive in the same order."""
    torch.manual_seed(0)
    order = made_order(5, ordering, seed=3)
    uni = MonotonicAffine(2.0) if kind == "affine" else RQSpline(5, 2.5)
    t = Inverse(perturb(MaskedAutoregressive(order, uni, (16, 16)).double(), 0.3))
    x = 1.5 * torch.randn(3, 5, dtype=D64)
    jac = check_bijection(t, x)
    later = order[None, :] > order[:, None]  # (D, D): input j after output i
    assert (jac[:, later] == 0).all()
    assert (jac[:, order[None, :] < order[:, None]] != 0).any()
    # after sorting by the order the Jacobian is lower-triangular
    rank = torch.argsort(order)
    sorted_jac = jac[:, rank][:, :, rank]
    assert torch.equal(sorted_jac, torch.tril(sorted_jac))


def test_class_prior_is_the_gaussian_of_each_class():
    """With ``ClassPrior`` last, the flow's density of ``u`` given ``y`` is ``N(m_y, diag(exp(2
    s_y)))``: the standard normal of ``z`` plus the log-determinant, checked against torch's
    Normal; without a label the map is the identity."""
    t = perturb(ClassPrior(4, 3).double(), 0.5, seed=3)
    u = torch.randn(6, 4, dtype=D64)
    y = torch.arange(6) % 3
    z, ladj = t(u, one_hot(6, 3))
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1) + ladj
    ref = torch.distributions.Normal(t.mean[y], t.log_scale[y].exp()).log_prob(u).sum(-1)
    torch.testing.assert_close(log_p, ref)
    same, zero = t(u)
    assert torch.equal(same, u) and torch.equal(zero, torch.zeros(6, dtype=D64))


def test_squeeze_moves_blocks_to_channels():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    y, _ = Squeeze()(x)
    assert y.shape == (1, 4, 2, 2)
    # channel 2i + j holds the pixel at offset (i, j) of each 2x2 block
    torch.testing.assert_close(y[0, :, 0, 0], torch.tensor([0.0, 1.0, 4.0, 5.0]))
    with pytest.raises(ValueError, match="even"):
        Squeeze().output_shape((1, 3, 4))


def test_checkerboard_coupling_keeps_its_colour():
    t = perturb(ImageCoupling(1, "checkerboard", 0, 8).double(), 0.5)
    x = torch.randn(2, 1, 4, 4, dtype=D64)
    y, _ = t(x)
    m = checkerboard_mask(4, 4, 0).expand_as(x)
    assert torch.equal(y[m], x[m]) and not torch.allclose(y[~m], x[~m])


def test_multiscale_factors_out_half_the_channels():
    levels = [Composite([Squeeze()]), Composite([Squeeze()])]
    ms = MultiScale(levels, (1, 4, 4))
    assert ms.parts == [(2, 2, 2), (8, 1, 1)] and ms.output_shape((1, 4, 4)) == (16,)
    x = torch.randn(2, 1, 4, 4, dtype=D64)
    z, _ = ms(x)
    first, _ = Squeeze()(x)
    torch.testing.assert_close(z[:, :8], first[:, :2].flatten(1))  # z_1 left at level 1


def test_actnorm_initialises_from_data_and_keeps_its_state():
    x = 3 + 2 * torch.randn(256, 2, 3, 3, dtype=D64)
    a = ActNorm(2).double().train()
    y, _ = a(x)
    assert bool(a.initialized)
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(2, dtype=D64), atol=1e-9, rtol=0)
    torch.testing.assert_close(
        y.std(dim=(0, 2, 3), unbiased=False), torch.ones(2, dtype=D64), atol=1e-6, rtol=0
    )
    before = a.log_scale.detach().clone()
    a(x + 5)  # initialised once only
    assert torch.equal(a.log_scale, before)
    b = ActNorm(2).double()
    b.load_state_dict(a.state_dict())
    assert bool(b.initialized) and torch.equal(b.log_scale, a.log_scale)
    fresh = ActNorm(2).double().eval()
    assert torch.equal(fresh(x)[0], x)  # not initialised in eval mode: the identity


def test_conv1x1_weight_and_inverse_weight():
    t = perturb(InvConv1x1(5, seed=4).double(), 0.2)
    w = t.weight()
    torch.testing.assert_close(t.inverse_weight() @ w, torch.eye(5, dtype=D64))
    torch.testing.assert_close(torch.linalg.slogdet(w)[1], t.log_s.sum())
    one = InvConv1x1(1)
    assert [n for n, _ in one.named_parameters()] == ["log_s"]


def test_logit_maps_the_unit_interval_to_the_real_line():
    t = Logit(0.05).double()
    y, _ = t(torch.tensor([[0.0, 0.5, 1.0]], dtype=D64))
    torch.testing.assert_close(y[0, 1], torch.tensor(0.0, dtype=D64))
    assert torch.isfinite(y).all() and y[0, 0] < -2.9 and y[0, 2] > 2.9
    with pytest.raises(ValueError, match="alpha"):
        Logit(0.5)
