r"""``ncsn``: noise-conditional score network, annealed Langevin sampling (Song & Ermon 2019).

Song & Ermon, "Generative Modeling by Estimating Gradients of the Data Distribution", NeurIPS 2019,
arXiv:1907.05600; with two of the improvements of Song & Ermon, "Improved Techniques for Training
Score-Based Generative Models", NeurIPS 2020, arXiv:2006.09011 (NCSNv2).

A network ``s_theta(z, i)`` estimates the score ``grad log q_{sigma_i}`` of the model-space data
convolved with ``N(0, sigma_i^2 I)`` for a geometric sequence ``sigma_1 > ... > sigma_L``. It is
trained by denoising score matching (Vincent 2011) with the weighting ``lambda(sigma) = sigma^2``
(Song & Ermon 2019, eq. 5-6):

.. math::

    \ell = \frac{1}{2} E_{i, z, \epsilon}\, \sigma_i^2
        \Big| s_\theta(z + \sigma_i \epsilon, i) + \frac{\epsilon}{\sigma_i} \Big|^2,

averaged over dimensions. The score is parameterised as ``s_theta(z, i) = f_theta(z, i) /
sigma_i`` (NCSNv2 technique 3), so the loss is ``|f_theta + eps|^2 / 2``. With ``sigma_max = 0``
the largest level is set on the first training batch to the largest pairwise distance between
(model-space) examples (NCSNv2 technique 1); the levels live in a buffer and are saved.

Sampling is annealed Langevin dynamics (:func:`dgm.samplers.annealed.annealed_langevin`), started
from ``N(0, sigma_1^2 I)``, with ``steps_each`` steps per level, step size ``alpha_i = step_lr
sigma_i^2 / sigma_L^2`` and a final denoising step; ``step_lr = 0`` picks ``0.2 sigma_L^2``,
so every level moves by ``0.1 sigma_i^2`` per step (Song & Ermon's 2e-5 for ``sigma_L = 0.01``).
Samples are approximate (MCMC) and the model has **no likelihood**:
``dgm score`` refuses it, ``dgm eval`` judges it by its samples.

>>> from dgm.core.spec import DataSpec
>>> m = NCSN(DataSpec((2,)), NCSNConfig(width=16, depth=1, num_sigmas=3, sigma_max=1.0))
>>> m.sample(4, steps_each=2).shape
torch.Size([4, 2])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dgm.core.errors import ConfigError
from dgm.core.model import Batch, Example, unpack
from dgm.core.registry import register
from dgm.core.spec import DataSpec
from dgm.models.diffusion.base import DiffusionBase, NetConfig, check_guidance
from dgm.models.diffusion.schedules import geometric_sigmas
from dgm.samplers.annealed import annealed_langevin

__all__ = ["NCSN", "NCSNConfig", "NCSNSampleOptions"]


@dataclass
class NCSNConfig(NetConfig):
    """Hyperparameters of :class:`NCSN` (network fields: :class:`NetConfig`).

    Attributes:
        num_sigmas: number of noise levels ``L``.
        sigma_min: the smallest level (model space, where the data has a scale of about one).
        sigma_max: the largest level; 0: the largest pairwise distance in the first training
            batch (1.0 until training starts).
    """

    num_sigmas: int = 10
    sigma_min: float = 0.01
    sigma_max: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_sigmas < 2:
            raise ConfigError(f"num_sigmas must be at least 2, not {self.num_sigmas}")
        if not self.sigma_min > 0:
            raise ConfigError(f"sigma_min must be positive, not {self.sigma_min}")
        if self.sigma_max and self.sigma_max <= self.sigma_min:
            raise ConfigError(
                f"sigma_max ({self.sigma_max}) must exceed sigma_min ({self.sigma_min}), "
                "or be 0 to set it from the data"
            )


@dataclass
class NCSNSampleOptions:
    """Options of :meth:`NCSN.sample` (annealed Langevin dynamics).

    Attributes:
        steps_each: Langevin steps per noise level.
        step_lr: ``epsilon`` of the step sizes ``epsilon sigma_i^2 / sigma_L^2``; 0 picks
            ``0.2 sigma_L^2``.
        denoise: end with one Tweedie denoising step.
        guidance: classifier-free guidance weight ``w`` on the score (conditional models
            trained with label dropout): ``(1 + w) s(y) - w s(null)``; 0: the conditional
            sampler, -1: the unconditional one.
    """

    steps_each: int = 100
    step_lr: float = 0.0
    denoise: bool = True
    guidance: float = 0.0

    def __post_init__(self) -> None:
        check_guidance(self.guidance)


@register
class NCSN(DiffusionBase):
    """Noise-conditional score network (see the module docstring)."""

    name = "ncsn"
    description = (
        "NCSN: score matching over noise levels, annealed Langevin sampling (Song & Ermon 2019)"
    )
    Config = NCSNConfig
    SampleOptions = NCSNSampleOptions
    data_kinds = frozenset({"continuous", "discrete"})
    example = Example(
        spec=DataSpec((2,), num_classes=2),
        config={"width": 16, "depth": 1, "time_dim": 8, "num_sigmas": 4, "sigma_max": 2.0},
        variants=({"conditional": True},),
    )

    def __init__(self, spec: DataSpec, config: NCSNConfig | None = None) -> None:
        super().__init__(spec, config)
        c: NCSNConfig = self.config
        sigma_max = c.sigma_max or max(1.0, 2 * c.sigma_min)
        self.register_buffer("sigmas", geometric_sigmas(sigma_max, c.sigma_min, c.num_sigmas))

    def on_train_start(self, train_data: Tensor, labels: Tensor | None = None) -> None:
        """Standardise the data (base class), then set ``sigma_1`` from the data if asked."""
        super().on_train_start(train_data)
        c: NCSNConfig = self.config
        if c.sigma_max:
            return
        z, _ = self.to_model_space(train_data.to(self.sigmas.dtype))
        flat = z.reshape(z.shape[0], -1)
        dmax = float(torch.cdist(flat, flat).max()) if flat.shape[0] > 1 else 1.0
        sigma_max = max(dmax, 2 * c.sigma_min)
        self.sigmas.copy_(geometric_sigmas(sigma_max, c.sigma_min, c.num_sigmas))

    def score(self, z: Tensor, i: Tensor, y: Tensor | None = None) -> Tensor:
        """``s_theta(z, i) = f_theta(z, i) / sigma_i`` for level indices ``i (B,)`` (and network
        labels ``y (B,)`` of a conditional model)."""
        sigma = self.sigmas.to(z.dtype)[i.long()].view(-1, *([1] * (z.dim() - 1)))
        return self.network(z, i.to(z.dtype), y) / sigma

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        x, y = unpack(batch)
        z, _ = self.to_model_space(self.check_input(x))
        y = self.train_labels(y, z.shape[0])  # label dropout (conditional models)
        i = torch.randint(0, self.sigmas.numel(), (z.shape[0],), device=z.device)  # (B,)
        sigma = self.sigmas.to(z.dtype)[i].view(-1, *([1] * (z.dim() - 1)))
        noise = torch.randn_like(z)
        f = self.network(z + sigma * noise, i.to(z.dtype), y)  # sigma * score
        dsm = 0.5 * ((f + noise) ** 2).flatten(1).mean(1)  # (B,)
        return {"loss": dsm.mean()}

    @torch.no_grad()
    def sample(
        self,
        n: int,
        y: Tensor | None = None,
        steps_each: int = 100,
        step_lr: float = 0.0,
        denoise: bool = True,
        guidance: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``n`` samples ``(n, *event_shape)`` by annealed Langevin dynamics; a conditional
        model takes labels ``y`` (without them: its unconditional branch) and a classifier-free
        ``guidance`` weight on the score."""
        o = self.sample_config(
            {"steps_each": steps_each, "step_lr": step_lr, "denoise": denoise, "guidance": guidance}
        )
        y = self.sample_labels(y, n, o.guidance)
        sigmas = self.sigmas.double()
        lr = step_lr if step_lr > 0 else 0.2 * float(sigmas[-1]) ** 2

        def score(z: Tensor, i: int) -> Tensor:
            ii = torch.full((z.shape[0],), i, device=z.device)
            with torch.no_grad():
                return self.guide(lambda yy: self.score(z, ii, yy), y, o.guidance)

        z0 = float(sigmas[0]) * self.prior_noise(n, generator)  # (n, *event)
        z = annealed_langevin(
            z0, score, sigmas, int(steps_each), lr, denoise=denoise, generator=generator
        )
        return self.from_model_space(z)
