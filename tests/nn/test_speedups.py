"""Speed-ups keep the numerics: each fast path against the plain form it replaces."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from dgm.nn.masked import MADENet, MaskedLinear, made_order, mask_from_degrees


def _mask(out: int, inp: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return mask_from_degrees(torch.randint(1, 6, (inp,), generator=g),
                             torch.randint(1, 6, (out,), generator=g), strict=False)  # fmt: skip


def test_premasked_linear_matches_the_plain_form_in_value_and_gradient():
    torch.manual_seed(0)
    mask = _mask(7, 5)
    fast = MaskedLinear(5, 7, mask, premasked=True).double()
    torch.manual_seed(0)
    plain = MaskedLinear(5, 7, mask).double()
    assert not torch.equal(plain.weight, plain.weight * plain.mask)  # masked entries hold values
    torch.testing.assert_close(fast.weight, plain.weight * plain.mask, rtol=0, atol=0)
    x = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    y_fast, y_plain = fast(x), plain(x)
    torch.testing.assert_close(y_fast, y_plain)
    w = torch.randn_like(y_plain)
    gx_fast, gw_fast, gb_fast = torch.autograd.grad((y_fast * w).sum(), [x, *fast.parameters()])
    gx_plain, gw_plain, gb_plain = torch.autograd.grad(
        (y_plain * w).sum(), [x, *plain.parameters()]
    )
    torch.testing.assert_close(gx_fast, gx_plain)
    torch.testing.assert_close(gw_fast, gw_plain)
    torch.testing.assert_close(gb_fast, gb_plain)
    assert (gw_fast[mask == 0] == 0).all()


def test_premasked_linear_supports_second_derivatives():
    torch.manual_seed(0)
    mask = _mask(6, 4, seed=1)
    fast = MaskedLinear(4, 6, mask, premasked=True).double()
    plain = copy.deepcopy(fast)
    plain.premasked = False
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    out = []
    for layer in (fast, plain):
        (g,) = torch.autograd.grad(torch.tanh(layer(x)).sum(), x, create_graph=True)
        out.append(torch.autograd.grad(g.square().sum(), [x, layer.weight]))
    for a, b in zip(*out):
        torch.testing.assert_close(a, b)


def test_premasked_made_trains_like_the_plain_one_and_keeps_masked_weights_zero():
    order = made_order(6, "random", seed=3)
    nets = []
    for premasked in (True, False):
        torch.manual_seed(0)
        net = MADENet(order, [9, 8], direct=True, out_features=2).double()
        for layer in [*net.layers, net.out, net.direct]:
            layer.premasked = premasked  # the plain form on the same initial weights
        nets.append(net)
    fast, plain = nets
    assert fast.layers[0].premasked is True  # a single mask set is premasked by default
    x = torch.randn(16, 6, dtype=torch.float64)
    opts = [torch.optim.Adam(n.parameters(), lr=1e-2, weight_decay=1e-3) for n in nets]
    for _ in range(5):
        for net, opt in zip(nets, opts):
            loss = net(x).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    torch.testing.assert_close(fast(x), plain(x))
    for layer in [*fast.layers, fast.out, fast.direct]:
        assert (layer.weight[layer.mask == 0] == 0).all()


def test_premasked_layer_masks_weights_loaded_from_the_plain_form():
    mask = _mask(5, 4, seed=2)
    torch.manual_seed(0)
    plain = MaskedLinear(4, 5, mask)
    fast = MaskedLinear(4, 5, mask, premasked=True)
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(3, 4)
    torch.testing.assert_close(fast(x), F.linear(x, plain.weight * mask, plain.bias))
    assert (fast.weight[mask == 0] == 0).all()


def test_several_mask_sets_keep_the_plain_form():
    net = MADENet(made_order(5, "natural"), [8], num_masks=3)
    assert all(not layer.premasked for layer in [*net.layers, net.out])


def test_values_written_under_the_mask_by_hand_do_not_reach_the_function():
    torch.manual_seed(0)
    mask = _mask(6, 5, seed=4)
    fast = MaskedLinear(5, 6, mask, premasked=True).double()
    x = torch.randn(3, 5, dtype=torch.float64)
    before = fast(x)
    with torch.no_grad():
        fast.weight.add_(torch.randn_like(fast.weight) * (1 - fast.mask))  # noise under the mask
    torch.testing.assert_close(fast(x), before)


def test_premasked_linear_under_bf16_autocast_matches_the_plain_form():
    torch.manual_seed(0)
    mask = _mask(8, 6, seed=5)
    fast = MaskedLinear(6, 8, mask, premasked=True)
    plain = copy.deepcopy(fast)
    plain.premasked = False
    x = torch.randn(5, 6)
    grads = []
    for layer in (fast, plain):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(x)
        assert y.dtype == torch.bfloat16
        grads.append(torch.autograd.grad(y.float().square().sum(), list(layer.parameters())))
    for a, b in zip(*grads):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)
