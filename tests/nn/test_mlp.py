"""The MLP builder and the activation table: layout, options and errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dgm.core.errors import ConfigError
from dgm.nn.mlp import ACTIVATIONS, activation, mlp


def test_layout_and_the_hand_written_sequential_it_replaces():
    net = mlp(3, [5, 4], 2, "tanh")
    kinds = [type(m) for m in net]
    assert kinds == [nn.Linear, nn.Tanh, nn.Linear, nn.Tanh, nn.Linear]
    assert [m.out_features for m in net if isinstance(m, nn.Linear)] == [5, 4, 2]
    # the same seed gives the same weights as the Sequential written by hand
    torch.manual_seed(0)
    built = mlp(3, [5], 2, "relu")
    torch.manual_seed(0)
    by_hand = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    for (ka, a), (kb, b) in zip(built.state_dict().items(), by_hand.state_dict().items()):
        assert ka == kb and torch.equal(a, b)
    single = mlp(3, [], 2)
    assert len(single) == 1 and isinstance(single[0], nn.Linear)


def test_options():
    zero = mlp(3, [4], 2, zero_last=True)
    x = torch.randn(6, 3)
    assert torch.equal(zero(x), torch.zeros(6, 2))
    assert zero[-1].weight.abs().sum() == 0
    assert mlp(3, [4], 1, last_bias=False)[-1].bias is None
    assert mlp(3, [4], 1)[0].bias is not None
    # parameters: (3 * 4 + 4) + (4 * 1) without the last bias
    assert sum(p.numel() for p in mlp(3, [4], 1, last_bias=False).parameters()) == 20
    drop = mlp(3, [4, 4], 1, dropout=0.5)
    assert [type(m) for m in drop].count(nn.Dropout) == 2
    sn = mlp(3, [4], 1, "leaky_relu", spectral_norm=True)
    assert all(
        nn.utils.parametrize.is_parametrized(m, "weight") for m in sn if isinstance(m, nn.Linear)
    )
    assert sn[1].negative_slope == 0.2


def test_activation_table_and_errors():
    assert isinstance(activation("silu"), nn.SiLU)
    assert set(ACTIVATIONS) >= {"relu", "leaky_relu", "elu", "tanh", "silu", "softplus"}
    with pytest.raises(ConfigError, match=r"one of relu, .*not 'swish'"):
        activation("swish")
    with pytest.raises(ConfigError, match=r"one of tanh, silu, not 'relu'"):
        activation("relu", ("silu", "tanh"))
    with pytest.raises(ConfigError, match="not 'swish'"):
        mlp(2, [3], 1, "swish")
    with pytest.raises(ConfigError, match="positive"):
        mlp(2, [0], 1)
    with pytest.raises(ConfigError, match="dropout"):
        mlp(2, [3], 1, dropout=1.0)
