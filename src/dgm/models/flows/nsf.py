r"""``nsf``: the neural spline flow (Durkan et al. 2019).

Durkan, Bekasov, Murray & Papamakarios, "Neural Spline Flows", NeurIPS 2019, arXiv:1906.04032.

NSF is MAF with another elementwise map: the layer loop of :mod:`dgm.models.flows.stack` with
``depth`` rational-quadratic spline transforms (:mod:`dgm.models.flows.splines`), each either
autoregressive (a MADE conditioner, :class:`~dgm.models.flows.autoregressive.MaskedAutoregressive`)
or coupling (an MLP on the first half of the dimensions, :class:`~dgm.models.flows.coupling.Coupling`),
with a permutation between layers and a standard-normal base:

.. math::

    \log p(x) = \log \mathcal{N}(f(x); 0, I) + \sum_l \log |\det J_{f_l}|.

Any event shape is flattened to ``D`` dimensions. Every spline is the identity outside
``[-tail_bound, tail_bound]``, so data (and intermediate values) should mostly lie inside; the
default ``tail_bound = 5`` covers standardised data and the 2-D toy densities (support within
about ``[-4.5, 4.5]``). Each layer starts as the identity (zero-initialised last conditioner
layer), so training starts from the base density.

>>> import torch
>>> from dgm.core.spec import DataSpec
>>> model = NSF(DataSpec((2,)), NSF.Config(depth=2))
>>> model.log_prob(torch.zeros(3, 2)).shape
torch.Size([3])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from dgm.core.errors import ConfigError
from dgm.core.model import Example
from dgm.core.registry import register
from dgm.core.spec import DataSpec
from dgm.models.flows.base import ConditionalOptions, FlowModel
from dgm.models.flows.splines import RQSpline
from dgm.models.flows.stack import check_stack_config, elementwise_stack

__all__ = ["NSF", "NSFConfig"]


@dataclass
class NSFConfig(ConditionalOptions):
    """Hyperparameters of :class:`NSF` (and ``conditional``, see
    :class:`~dgm.models.flows.base.ConditionalOptions`).

    Attributes:
        variant: ``"autoregressive"`` (MADE conditioner: every dimension is transformed in
            every layer; sampling takes ``D`` passes per layer) or ``"coupling"`` (half the
            dimensions per layer; one pass both ways; needs ``D >= 2``). Default
            autoregressive.
        depth: number of spline transforms.
        hidden: hidden widths of each conditioner network.
        bins: spline bins ``K`` per dimension.
        tail_bound: ``B``; splines act on ``[-B, B]`` and are the identity outside.
        permutation: between layers, ``"reverse"`` the dimensions or a ``"random"`` permutation
            (drawn from ``seed``). With ``D == 2`` only ``"reverse"`` guarantees alternation.
        activation: activation of the conditioners.
        unconditional: coupling variant only: also transform the conditioning half of every
            layer by a spline with learned parameters of its own (Durkan et al. 2019, eqs. 4-6;
            nflows' ``apply_unconditional_transform``), so every dimension is transformed in
            every layer, at the cost of ``3K - 1`` more parameters per conditioning dimension
            and twice the spline elements per layer.
        seed: seed of the random permutations.
    """

    #: keys of earlier versions and their names now (saved runs are translated)
    renamed: ClassVar[dict[str, str]] = {"num_layers": "depth"}

    variant: Literal["autoregressive", "coupling"] = "autoregressive"
    depth: int = 5
    hidden: tuple[int, ...] = (64, 64)
    bins: int = 8
    tail_bound: float = 5.0
    permutation: Literal["reverse", "random"] = "reverse"
    activation: Literal["relu", "tanh", "elu"] = "relu"
    unconditional: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        check_stack_config(self)
        if self.bins < 1:
            raise ConfigError(f"bins must be at least 1, not {self.bins}")
        if not self.tail_bound > 0:
            raise ConfigError(f"tail_bound must be positive, not {self.tail_bound}")
        if self.unconditional and self.variant != "coupling":
            raise ConfigError(
                "unconditional=True applies to variant='coupling' only (an autoregressive "
                "layer already transforms every dimension)"
            )


@register
class NSF(FlowModel):
    """Neural spline flow over continuous vectors of any event shape (see the module docstring).

    Besides the contract (``log_prob``, ``sample``), :meth:`forward_transform` (data to noise)
    and :meth:`inverse_transform` (noise to data) expose the bijection and its log-determinant.
    ``sample`` runs under the caller's grad mode, so samples are differentiable
    (reparameterised) unless the caller uses :meth:`inference`.
    """

    name = "nsf"
    description = "Neural spline flow: rational-quadratic spline layers, exact likelihood (Durkan et al. 2019)"
    Config = NSFConfig
    #: what ``dgm train nsf`` runs without options (``benchmarks/results/defaults.json``): 2000
    #: steps of 512 with a cosine decay (the engine's default, 1000 of 128 at a constant rate,
    #: left a KL gap of 0.08 nats on 8gaussians)
    train_defaults: ClassVar[dict[str, Any]] = {
        "steps": 2000, "batch_size": 512, "schedule": "cosine",
    }  # fmt: skip
    example = Example(
        spec=DataSpec((2,)),
        config={"depth": 2, "hidden": (16,), "bins": 4},
    )

    def __init__(self, spec: DataSpec, config: NSFConfig | None = None) -> None:
        super().__init__(spec, config)
        c: NSFConfig = self.config
        d = self.num_dims
        if c.variant == "coupling" and d < 2:
            raise ConfigError(
                "nsf with variant='coupling' needs at least 2 dimensions to split; "
                "use variant='autoregressive' for 1-D data"
            )
        stack = elementwise_stack(
            d,
            RQSpline(c.bins, c.tail_bound),
            c.depth,
            c.hidden,
            conditioner=c.variant,
            permutation=c.permutation,
            seed=c.seed,
            context_features=self.num_classes,
            activation=c.activation,
            unconditional=c.unconditional,
        )
        self._make_flow(stack)
