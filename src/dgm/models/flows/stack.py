r"""The layer loop of the vector flows: MAF, IAF, NSF and RealNVP are one stack with another
elementwise map or conditioner.

Papamakarios, Pavlakou & Murray, "Masked Autoregressive Flow for Density Estimation", NeurIPS
2017; Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017; Durkan,
Bekasov, Murray & Papamakarios, "Neural Spline Flows", NeurIPS 2019 (zuko's
``flows/spline.py`` is the shape: NSF is MAF with another univariate transform).

A stack of ``L`` layers maps data to noise as

.. math::

    f = f_L \circ \pi_{L-1} \circ \dots \circ \pi_1 \circ f_1, \qquad
    \log |\det J_f| = \textstyle\sum_l \log |\det J_{f_l}|,

where each :math:`f_l` applies one elementwise map ``g`` (:class:`~dgm.core.transforms.Univariate`:
:class:`~dgm.core.transforms.MonotonicAffine` for MAF and RealNVP,
:class:`~dgm.models.flows.splines.RQSpline` for NSF) with parameters from a conditioner:

* ``"autoregressive"``: a MADE, :math:`\theta_i = \theta_i(x_{<i})`
  (:class:`~dgm.models.flows.autoregressive.MaskedAutoregressive`);
* ``"coupling"``: an MLP on a passed-through half, :math:`\theta_B = \theta(x_A)`
  (:class:`~dgm.models.flows.coupling.Coupling`), with the ``"half"`` mask (first ``D // 2``
  dimensions) or the ``"alternating"`` even/odd mask whose parity flips from layer to layer.

Between layers :math:`\pi_l` reverses the dimensions or applies a random permutation drawn from
``seed + l``; ``permutation=None`` puts none (alternating masks move the halves by themselves).
Permutations are volume preserving. With ``inverse=True`` every layer is used backwards (IAF:
the conditioner reads the noise, so sampling is one pass per layer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from dgm.core.errors import ConfigError
from dgm.core.transforms import Composite, Inverse, Permutation, Reverse, Transform, Univariate
from dgm.models.flows.autoregressive import MaskedAutoregressive
from dgm.models.flows.coupling import Coupling, alternating_mask, half_mask

__all__ = ["check_stack_config", "elementwise_stack"]


def check_stack_config(cfg: Any) -> None:
    """The checks MAF's and NSF's configs share: ``depth >= 1`` and positive ``hidden``."""
    if cfg.depth < 1:
        raise ConfigError(f"depth must be at least 1, not {cfg.depth}")
    if len(cfg.hidden) == 0 or min(cfg.hidden) < 1:
        raise ConfigError(f"hidden must list one or more positive widths, not {cfg.hidden}")


def elementwise_stack(
    num_dims: int,
    univariate: Univariate,
    num_layers: int,
    hidden: Sequence[int],
    *,
    conditioner: Literal["autoregressive", "coupling"] = "autoregressive",
    mask: Literal["half", "alternating"] = "half",
    permutation: Literal["reverse", "random"] | None = "reverse",
    seed: int = 0,
    context_features: int = 0,
    activation: str = "relu",
    unconditional: bool = False,
    inverse: bool = False,
) -> Composite:
    """``num_layers`` layers of ``univariate`` under ``conditioner`` (see the module docstring).

    Args:
        num_dims: ``D``, the size of the flat vectors.
        univariate: the elementwise map, shared by every layer (it holds no parameters of its own
            or the layers share them).
        num_layers, hidden: the number of layers and the hidden widths of each conditioner.
        conditioner: ``"autoregressive"`` (MADE) or ``"coupling"`` (MLP on half the dimensions).
        mask: coupling only: ``"half"`` or ``"alternating"`` (parity ``l`` in layer ``l``).
        permutation: between layers, ``"reverse"``, ``"random"`` or ``None``.
        seed: seed of the random permutations.
        context_features: size of an optional context (a one-hot label) every conditioner reads.
        activation: activation of the conditioners.
        unconditional: coupling only: also map the passed-through half, with parameters of its own.
        inverse: use every layer backwards (IAF).

    Every conditioner's last layer starts at zero, so the stack starts as the identity.
    """
    if conditioner not in ("autoregressive", "coupling"):
        raise ConfigError(
            f"conditioner must be 'autoregressive' or 'coupling', not {conditioner!r}"
        )
    layers: list[Transform] = []
    for i in range(num_layers):
        if i > 0 and permutation == "reverse":
            layers.append(Reverse())
        elif i > 0 and permutation == "random":
            layers.append(Permutation.random(num_dims, seed + i))
        if conditioner == "autoregressive":
            layer: Transform = MaskedAutoregressive(
                torch.arange(num_dims),
                univariate,
                hidden,
                context_features=context_features,
                activation=activation,
            )
        else:
            layer = Coupling(
                half_mask(num_dims) if mask == "half" else alternating_mask(num_dims, i),
                univariate,
                hidden,
                context_features=context_features,
                activation=activation,
                unconditional=unconditional,
            )
        layers.append(Inverse(layer) if inverse else layer)
    return Composite(layers)
