"""The one activation table and the one multilayer-perceptron builder of dgm.

Every family builds its fully connected networks here: the VAE's encoders and decoders, the
flows' coupling conditioners, the GAN's players, the EBM's energy and the diffusion time
embedding. :func:`mlp` returns an ``nn.Sequential``

.. code-block:: text

    Linear(in, h_1), act, [Dropout], Linear(h_1, h_2), act, [Dropout], ..., Linear(h_L, out)

so its state-dict keys are ``0.weight, 0.bias, 2.weight, ...`` (with ``dropout > 0`` every hidden
layer has one module more), and with ``hidden=()`` it is a single linear map. The layers are
created in order, each with PyTorch's default initialisation, so a seed gives the same weights
as a hand-written ``nn.Sequential`` of the same layers.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from functools import partial

from torch import nn

from dgm.core.errors import ConfigError

__all__ = ["ACTIVATIONS", "activation", "mlp"]

#: activation name -> a constructor of a fresh module; ``leaky_relu`` has slope 0.2 (DCGAN)
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": partial(nn.LeakyReLU, 0.2),
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
}


def activation(name: str, choices: Collection[str] | None = None) -> nn.Module:
    """A fresh activation module by name; ``choices`` narrows the valid names (e.g. to the
    smooth ones a model needs). An unknown name is a :class:`ConfigError` naming the valid ones."""
    valid = [n for n in ACTIVATIONS if choices is None or n in choices]
    if name not in valid:
        raise ConfigError(f"activation must be one of {', '.join(valid)}, not {name!r}")
    return ACTIVATIONS[name]()


def mlp(
    in_features: int,
    hidden: Sequence[int],
    out_features: int,
    activation: str = "relu",
    *,
    zero_last: bool = False,
    last_bias: bool = True,
    dropout: float = 0.0,
    spectral_norm: bool = False,
) -> nn.Sequential:
    """``in -> hidden... -> out`` with ``activation`` after every hidden layer (see the module
    docstring for the layout).

    Args:
        in_features, hidden, out_features: the widths; ``hidden=()`` gives one linear map.
        activation: a name of :data:`ACTIVATIONS`.
        zero_last: start the last layer at zero (a conditioner that outputs 0 makes its flow
            layer the identity).
        last_bias: give the last layer a bias (an energy or a decoder with a free bias of its
            own does without).
        dropout: dropout probability after every hidden activation (training mode only).
        spectral_norm: divide every weight by its largest singular value (Miyato et al. 2018),
            one power iteration per training forward.
    """
    if any(h < 1 for h in hidden):
        raise ConfigError(f"hidden widths must be positive, not {tuple(hidden)}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be a probability in [0, 1), not {dropout}")
    act = _activation(activation)
    sizes = [in_features, *hidden, out_features]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        linear = nn.Linear(a, b, bias=last_bias or not last)
        if last and zero_last:
            nn.init.zeros_(linear.weight)
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)
        layers.append(nn.utils.parametrizations.spectral_norm(linear) if spectral_norm else linear)
        if not last:
            layers.append(act())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def _activation(name: str) -> Callable[[], nn.Module]:
    activation(name)  # the check and its message
    return ACTIVATIONS[name]
