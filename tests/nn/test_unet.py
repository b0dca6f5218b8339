"""The small U-Net and the time embeddings: shapes for the image sizes dgm uses, dependence on
time, gradients to every parameter, and the skip connections at odd sizes."""

from __future__ import annotations

import math

import pytest
import torch

from dgm.nn.embeddings import TimeEmbedding, TimeMLP, sinusoidal_embedding
from dgm.nn.unet import UNet


@pytest.mark.parametrize(
    "shape,mults", [((1, 8, 8), (1, 2)), ((1, 28, 28), (1, 2, 2)), ((3, 7, 5), (1, 2))]
)
def test_unet_maps_images_to_images(shape, mults):
    torch.manual_seed(0)
    net = UNet(shape[0], channels=8, mults=mults, time_dim=16)
    x = torch.randn(3, *shape)
    out = net(x, torch.tensor([0.0, 10.0, 999.0]))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_unet_depends_on_time_and_gradients_reach_every_parameter():
    torch.manual_seed(1)
    net = UNet(1, channels=8, mults=(1, 2), blocks=2, time_dim=16).double()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    a, b = (
        net(x, torch.zeros(2, dtype=torch.float64)),
        net(x, torch.full((2,), 500.0, dtype=torch.float64)),
    )
    assert not torch.allclose(a, b)
    # a scalar time is broadcast over the batch
    torch.testing.assert_close(net(x, torch.tensor(500.0, dtype=torch.float64)), b)
    (a.square().sum() + b.square().sum()).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_examples_do_not_mix():
    """Examples do not mix: changing one image leaves the output for the others unchanged."""
    torch.manual_seed(2)
    net = UNet(1, channels=8, mults=(1, 2), time_dim=16).double()
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    t = torch.arange(4, dtype=torch.float64)
    y = x.clone()
    y[0] += 1.0
    torch.testing.assert_close(net(x, t)[1:], net(y, t)[1:])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("channels", [1, 3])
def test_channels_last_maps_keep_the_values_and_gradients(dtype, channels, monkeypatch):
    """The channels-last layout (the default) is a speed choice: the output and the gradients
    equal the channels-first network's, and the output is channels-first either way."""
    torch.manual_seed(4)
    net = UNet(channels, channels=8, mults=(1, 2), blocks=1, time_dim=16, num_classes=2).to(dtype)
    x = torch.randn(3, channels, 12, 10, dtype=dtype)
    t, y = torch.tensor([1.0, 40.0, 700.0], dtype=dtype), torch.tensor([0, 1, 2])
    w = torch.randn(3, channels, 12, 10, dtype=dtype)
    out, grads = {}, {}
    for layout in (True, False):
        monkeypatch.setattr(UNet, "channels_last", layout)
        net.zero_grad()
        out[layout] = net(x, t, y)
        (out[layout] * w).sum().backward()
        grads[layout] = [p.grad.clone() for p in net.parameters()]
        assert out[layout].is_contiguous()
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(out[True], out[False], rtol=tol, atol=tol)
    # gradients are sums over the batch and pixels, in either order; some are zero up to rounding
    # (a bias before a group norm), so the absolute tolerance scales with the largest gradient
    scale = max(g.abs().max().item() for g in grads[False])
    for a, b in zip(grads[True], grads[False]):
        torch.testing.assert_close(a, b, rtol=5 * tol, atol=5 * tol * scale)


def test_sinusoidal_embedding_values():
    t = torch.tensor([0.0, 1.0, 250.0], dtype=torch.float64)
    e = sinusoidal_embedding(t, 8)
    assert e.shape == (3, 8)
    torch.testing.assert_close(e[0], torch.tensor([1.0] * 4 + [0.0] * 4, dtype=torch.float64))
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(4, dtype=torch.float64) / 4)
    torch.testing.assert_close(e[2, :4], torch.cos(250.0 * freqs))
    torch.testing.assert_close(e[2, 4:], torch.sin(250.0 * freqs))
    # distinct times get distinct embeddings
    assert torch.cdist(e, e).triu(1)[torch.ones(3, 3).triu(1).bool()].min() > 0.1
    with pytest.raises(ValueError, match="even"):
        sinusoidal_embedding(t, 7)


def test_time_mlp_and_embedding_shapes():
    torch.manual_seed(3)
    mlp = TimeMLP(2, hidden=16, blocks=2, time_dim=8)
    assert mlp(torch.randn(5, 2), torch.rand(5)).shape == (5, 2)
    assert TimeEmbedding(8, 12)(torch.rand(4)).shape == (4, 12)
