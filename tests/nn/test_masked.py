"""Masked layers: the autoregressive property checked through the Jacobian's sparsity, in float64."""

from __future__ import annotations

import pytest
import torch
from torch.autograd.functional import jacobian

from dgm.core.errors import ConfigError
from dgm.nn.masked import MADENet, MaskedConv2d, MaskedLinear, hidden_degrees, made_order
from dgm.nn.pixel import StackConv2d


def made_jacobian(
    net: MADENet, x: torch.Tensor, context: torch.Tensor | None = None
) -> torch.Tensor:
    """d out[d, p] / d in[j, f] for one example, shape (D, P, D, F)."""
    d, f, p = net.num_dims, net.in_features, net.out_features

    def fn(v: torch.Tensor) -> torch.Tensor:
        return net(v[None], None if context is None else context[None])[0]  # (D, P)

    return jacobian(fn, x).reshape(d, p, d, f)


def check_autoregressive(net: MADENet, jac: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (dependence (D, D), allowed (D, D)) with allowed[i, j] = order(j) < order(i)."""
    dep = jac.abs().amax(dim=(1, 3)) > 0  # (D, D): output dim i depends on input dim j
    order = net.order
    allowed = order[None, :] < order[:, None]
    return dep, allowed


@pytest.mark.parametrize("ordering", ["natural", "random"])
@pytest.mark.parametrize("connectivity", ["cyclic", "random"])
@pytest.mark.parametrize("hidden", [(12,), (10, 9, 11)])
@pytest.mark.parametrize("in_features,out_features", [(1, 1), (3, 3), (1, 5)])
def test_made_net_is_autoregressive(ordering, connectivity, hidden, in_features, out_features):
    torch.manual_seed(0)
    num_dims = 6
    net = MADENet(
        made_order(num_dims, ordering, seed=3),
        hidden,
        in_features=in_features,
        out_features=out_features,
        activation="tanh",
        connectivity=connectivity,
        seed=3,
    ).double()
    x = torch.randn(num_dims * in_features, dtype=torch.float64)  # continuous relaxation
    dep, allowed = check_autoregressive(net, made_jacobian(net, x))
    assert not (dep & ~allowed).any(), "an output depends on an input of equal or later rank"
    assert dep.sum() > 0.5 * allowed.sum(), "too few allowed dependencies: masks too sparse"


@pytest.mark.parametrize("ordering", ["natural", "random"])
def test_cyclic_made_uses_every_allowed_connection(ordering):
    # With >= D-1 units per layer every degree is present, so each allowed (i, j) has a path.
    torch.manual_seed(1)
    net = MADENet(made_order(5, ordering, seed=7), (8, 8), activation="tanh").double()
    dep, allowed = check_autoregressive(
        net, made_jacobian(net, torch.randn(5, dtype=torch.float64))
    )
    assert torch.equal(dep, allowed)


def test_direct_connection_and_context_keep_the_property():
    torch.manual_seed(2)
    net = MADENet(
        made_order(5, "random", seed=1), (7,), out_features=2, context_features=3, direct=True
    ).double()
    x = torch.randn(5, dtype=torch.float64)
    ctx = torch.randn(3, dtype=torch.float64)
    dep, allowed = check_autoregressive(net, made_jacobian(net, x, ctx))
    assert not (dep & ~allowed).any()
    # the context reaches every output, including the first in the ordering
    jc = jacobian(lambda c: net(x[None], c[None])[0], ctx)  # (D, P, C)
    assert (jc.abs().amax(dim=(1, 2)) > 0).all()


def test_the_jacobian_check_catches_a_broken_mask():
    torch.manual_seed(3)
    net = MADENet(made_order(4, "natural"), (8,)).double()
    net.out.mask.fill_(1.0)  # break the strict output mask
    # a single mask set keeps its weights masked (premasked): give the opened entries values
    net.out.weight.data.normal_(generator=torch.Generator().manual_seed(0))
    dep, allowed = check_autoregressive(
        net, made_jacobian(net, torch.randn(4, dtype=torch.float64))
    )
    assert (dep & ~allowed).any()


def test_single_dimension_has_only_a_bias():
    net = MADENet(made_order(1, "natural"), (4,), out_features=3).double()
    jac = made_jacobian(net, torch.randn(1, dtype=torch.float64))
    assert (jac == 0).all()


def test_orderings_and_degrees():
    assert torch.equal(made_order(5, "natural"), torch.arange(5))
    r = made_order(50, "random", seed=4)
    assert torch.equal(r.sort().values, torch.arange(50))
    assert torch.equal(r, made_order(50, "random", seed=4))
    assert not torch.equal(r, made_order(50, "random", seed=5))
    for conn in ("cyclic", "random"):
        for deg in hidden_degrees(7, (20, 3, 20), conn, seed=0):
            assert deg.min() >= 1 and deg.max() <= 6
    with pytest.raises(ConfigError, match="ordering"):
        made_order(3, "reversed")  # type: ignore[arg-type]


def test_masked_linear_ignores_masked_weights_and_saves_its_mask():
    torch.manual_seed(0)
    mask = (torch.rand(4, 6) > 0.5).float()
    layer = MaskedLinear(6, 4, mask).double()
    assert layer.mask.dtype == torch.float64 and "mask" in layer.state_dict()
    x = torch.randn(3, 6, dtype=torch.float64)
    before = layer(x)
    with torch.no_grad():
        layer.weight[mask == 0] += 10.0
    assert torch.equal(layer(x), before)
    layer(x).sum().backward()
    assert (layer.weight.grad[mask == 0] == 0).all()
    assert (layer.weight.grad[mask == 1] != 0).any()
    with pytest.raises(ValueError, match="mask has shape"):
        MaskedLinear(6, 4, torch.ones(6, 4))


def conv_dependence(conv: torch.nn.Module, channels: int, size: int = 5) -> torch.Tensor:
    """dep[o, r, c, i, r', c']: output (o, r, c) depends on input (i, r', c')."""
    x = torch.randn(1, channels, size, size, dtype=torch.float64)
    jac = jacobian(lambda v: conv(v), x)  # (1, C_out, H, W, 1, C_in, H, W)
    return jac[0, :, :, :, 0].abs() > 0


@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_masked_conv_sees_only_the_past(mask_type):
    torch.manual_seed(0)
    size = 5
    conv = MaskedConv2d(2, 3, 3, mask_type).double()
    dep = conv_dependence(conv, 2, size)  # (C_out, H, W, C_in, H, W)
    pos = torch.arange(size * size).view(size, size)  # raster index
    earlier = pos[:, :, None, None] > pos[None, None, :, :]  # (H, W, H, W) strictly before
    same = pos[:, :, None, None] == pos[None, None, :, :]
    pix = dep.any(dim=0).any(dim=2)  # (H, W, H, W)
    assert not (pix & ~(earlier | same)).any(), "depends on a later pixel"
    assert pix[same].any() == (mask_type == "B")
    assert pix[earlier].any()


@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_masked_conv_channel_groups(mask_type):
    torch.manual_seed(0)
    conv = MaskedConv2d(3, 6, 3, mask_type, channel_groups=3).double()
    dep = conv_dependence(conv, 3)
    centre = dep[:, 2, 2, :, 2, 2]  # (C_out, C_in) at the same pixel
    g_out = torch.arange(6) // 2
    g_in = torch.arange(3)
    allowed = g_out[:, None] > g_in if mask_type == "A" else g_out[:, None] >= g_in
    assert torch.equal(centre, allowed)


def test_stacked_masked_convs_stay_causal():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        MaskedConv2d(1, 4, 3, "A"),
        torch.nn.Tanh(),
        MaskedConv2d(4, 4, 3, "B"),
        torch.nn.Tanh(),
        MaskedConv2d(4, 1, 3, "B"),
    ).double()
    dep = conv_dependence(net, 1, 6)[0, :, :, 0]  # (H, W, H, W)
    pos = torch.arange(36).view(6, 6)
    later_or_same = pos[:, :, None, None] <= pos[None, None, :, :]
    assert not (dep & later_or_same).any()


def test_masked_conv_rejects_bad_arguments():
    with pytest.raises(ConfigError, match="odd"):
        MaskedConv2d(1, 1, 4, "A")
    with pytest.raises(ConfigError, match="mask_type"):
        MaskedConv2d(1, 1, 3, "C")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="multiples"):
        MaskedConv2d(3, 4, 3, "A", channel_groups=3)


def test_narrow_layers_still_reach_every_degree():
    """With fewer hidden units than D - 1 the degrees must still span 1..D-1, or the last outputs
    would be cut off from most of their allowed inputs (a real bug: 500 units, D = 784)."""
    (deg,) = hidden_degrees(784, [500], "cyclic")
    assert int(deg.min()) == 1 and int(deg.max()) >= 780
    assert torch.all(deg[1:] >= deg[:-1])


@pytest.mark.parametrize("kernel", [1, 3, 5, 7])
def test_cropped_masked_convolutions_equal_the_full_masked_kernel(kernel):
    """The forward passes convolve only the kept rectangle; the result and the weight gradient
    must equal those of the full ``k x k`` kernel times its mask (float64)."""
    torch.manual_seed(kernel)
    x = torch.randn(2, 4, 6, 5, dtype=torch.float64)
    convs = [MaskedConv2d(4, 6, kernel, t, channel_groups=2) for t in "AB"] + [
        StackConv2d(4, 6, kernel, kind, centre=centre)
        for kind in ("vertical", "horizontal")
        for centre in (True, False)
    ]
    for conv in convs:
        conv = conv.double()
        with torch.no_grad():
            conv.weight.normal_()
        out = conv(x)
        ref = torch.nn.functional.conv2d(x, conv.weight * conv.mask, conv.bias, padding=kernel // 2)
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
        g = torch.autograd.grad(out.square().sum(), conv.weight)[0]
        g_ref = torch.autograd.grad(ref.square().sum(), conv.weight)[0]
        torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-12)
