r"""``realnvp``: affine coupling flow for vectors (Dinh et al. 2017).

Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017, arXiv:1605.08803.

``num_layers`` affine coupling layers with alternating masks (even dimensions pass through in
even layers, odd dimensions in odd layers) and a standard-normal base. Layer ``l`` maps

.. math::

    y_A = x_A, \qquad y_B = x_B \odot \exp(s(x_A)) + t(x_A), \qquad
    \log |\det J| = \textstyle\sum_B s(x_A),

with a bounded log-scale ``s = c \tanh(\tilde s / c)`` (``c = log_scale_bound``) for stability,
and an MLP conditioner whose last layer starts at zero (the flow starts as the identity). Any event
shape is flattened to ``D >= 2`` dimensions; the multi-scale convolutional image variant is a
separate model.

>>> from dgm.core.spec import DataSpec
>>> model = RealNVP(DataSpec((2,)), RealNVP.Config(num_layers=2))
>>> model.sample(3).shape
torch.Size([3, 2])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dgm.core.distributions import NormalizingFlow
from dgm.core.errors import ConfigError
from dgm.core.registry import register
from dgm.core.spec import DataSpec
from dgm.core.transforms import Composite, MonotonicAffine
from dgm.models.flows.base import FlowModel
from dgm.models.flows.coupling import Coupling, alternating_mask

__all__ = ["RealNVP", "RealNVPConfig"]


@dataclass
class RealNVPConfig:
    """Hyperparameters of :class:`RealNVP`.

    Attributes:
        num_layers: number of affine coupling layers (masks alternate between layers).
        hidden: hidden widths of each conditioner MLP.
        activation: activation of the conditioners.
        log_scale_bound: ``c``; each layer's log-scale lies in ``(-c, c)``.
    """

    num_layers: int = 8
    hidden: tuple[int, ...] = (64, 64)
    activation: Literal["relu", "tanh", "elu"] = "relu"
    log_scale_bound: float = 3.0

    def __post_init__(self) -> None:
        if self.num_layers < 1:
            raise ConfigError(f"num_layers must be at least 1, not {self.num_layers}")
        if not self.log_scale_bound > 0:
            raise ConfigError(f"log_scale_bound must be positive, not {self.log_scale_bound}")
        if len(self.hidden) == 0 or min(self.hidden) < 1:
            raise ConfigError(f"hidden must list one or more positive widths, not {self.hidden}")


@register
class RealNVP(FlowModel):
    """RealNVP affine coupling flow over continuous vectors (see the module docstring).

    :meth:`forward_transform` (data to noise) and :meth:`inverse_transform` (noise to data) expose
    the bijection and its log-determinant; ``sample`` runs under the caller's grad mode.
    """

    name = "realnvp"
    description = "RealNVP: affine coupling layers with alternating masks, exact likelihood (Dinh et al. 2017)"
    Config = RealNVPConfig
    supports_labels = False
    test_config = {"num_layers": 2, "hidden": (16,)}
    test_spec = DataSpec((2,))

    def __init__(self, spec: DataSpec, config: RealNVPConfig | None = None) -> None:
        super().__init__(spec, config)
        c: RealNVPConfig = self.config
        d = self.num_dims
        if d < 2:
            raise ConfigError(
                "realnvp needs at least 2 dimensions to split between coupling halves; "
                "use model 'nsf' with transform='autoregressive' for 1-D data"
            )
        affine = MonotonicAffine(c.log_scale_bound)
        layers = [
            Coupling(alternating_mask(d, i), affine, c.hidden, activation=c.activation)
            for i in range(c.num_layers)
        ]
        self.flow = NormalizingFlow(Composite(layers), self.event_shape)
