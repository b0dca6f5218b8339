r"""``flow-matching``: conditional flow matching (I-CFM and OT-CFM) with a probability-flow
likelihood.

Lipman, Chen, Ben-Hamu, Nickel & Le, "Flow Matching for Generative Modeling", ICLR 2023,
arXiv:2210.02747; Tong, Fatras, Malkin, Huguet, Zhang, Rector-Brooks, Wolf & Bengio, "Improving
and generalizing flow-based generative models with minibatch optimal transport", TMLR 2024,
arXiv:2302.00482; Liu, Gong & Liu, "Flow Straight and Fast", ICLR 2023, arXiv:2209.03003.

The network :math:`v_\theta(x, t)` (the diffusion models' time-conditioned MLP for vectors, the
tiny U-Net for images, in the same standardised model space) is trained by regression on the
conditional velocity of :mod:`~dgm.models.flow_matching.paths`:

.. math::

    \ell(\theta) = E_{t \sim U[0, 1],\, (x_0, x_1) \sim \pi}\;
        \big| v_\theta(x_t, t) - u_t(x_0, x_1) \big|^2 / D,

with the coupling :math:`\pi` independent (``coupling="independent"``) or the minibatch optimal
transport plan (``"ot"``, exact or Sinkhorn).

**Sampling** integrates :math:`\dot x = v_\theta(x, t)` from noise at ``t = 0`` to ``t = 1``
with ``method`` ``"euler"``, ``"heun"``, ``"rk4"`` (``steps`` equal steps: 1, 2 and 4 network
evaluations per step) or adaptive ``"dopri5"``; :meth:`FlowMatching.nfe` says how many network
evaluations a setting costs.

**Likelihood**: the learned flow is a continuous normalising flow, so by the instantaneous change
of variables (Chen et al. 2018, arXiv:1806.07366)

.. math::

    \log p_1(x) = \log N(x(0); 0, I) - \int_0^1 \nabla \cdot v_\theta(x(t), t)\, dt,

solved backward from the data at ``t = 1`` with dopri5 (``rtol``, ``atol``) for the augmented
state. The divergence is exact (``D`` vector-Jacobian products) with ``trace="exact"`` or, with
``"auto"``, for data of at most 64 dimensions (2-D densities, 8x8 digits); otherwise Hutchinson's
estimator with one probe per example fixed along the trajectory, which makes the figure an
unbiased **estimate** of log p (``log_prob_estimate``), not a bound. Exact here means exact up to
the ODE solver's tolerance, which is recorded in the likelihood's name. On discrete data the
engine's uniform dequantization makes the figure the usual lower bound on the discrete
log-likelihood, in the same column as every other continuous model.

>>> from dgm.core.spec import DataSpec
>>> m = FlowMatching(DataSpec((2,)), FlowMatchingConfig(width=16, depth=1))
>>> m.sample(3, method="euler", steps=4).shape
torch.Size([3, 2])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from dgm.core.errors import ConfigError
from dgm.core.model import Batch, Example, unpack
from dgm.core.registry import register
from dgm.core.spec import DataSpec
from dgm.models.diffusion.base import DiffusionBase, check_guidance
from dgm.models.diffusion.probability_flow import ODELikelihoodConfig, ProbabilityFlow
from dgm.models.flow_matching.paths import (
    TIME_SAMPLINGS,
    interpolate,
    ot_pairs,
    sample_times,
    sinkhorn_pairs,
)
from dgm.samplers.ode import METHODS, odeint

__all__ = ["FlowMatching", "FlowMatchingConfig", "FlowMatchingSampleOptions"]

# The network sees 20 t. The diffusion models' 999 t (DDPM's integer steps) makes the field
# oscillate in t: on a 2-D Gaussian after 600 training steps the dopri5 likelihood solve at
# rtol 1e-5 took 872 network evaluations with 999 t, 152 with 100 t and 62 with 20 t, with the
# same accuracy (mean log p within 0.014, 0.014 and 0.001 nats of the closed form).
TIME_SCALE = 20.0
_EVALS_PER_STEP = {"euler": 1, "heun": 2, "rk4": 4}


@dataclass
class FlowMatchingConfig(ODELikelihoodConfig):
    """Hyperparameters of :class:`FlowMatching` (network fields: :class:`NetConfig`; likelihood
    fields: :class:`ODELikelihoodConfig`).

    Attributes:
        coupling: ``"ot"`` (minibatch optimal transport, OT-CFM) or ``"independent"`` (I-CFM).
        ot_solver: ``"exact"`` (assignment problem) or ``"sinkhorn"`` (entropic plan).
        sinkhorn_reg: the Sinkhorn regularisation as a fraction of the batch's mean cost.
        path: ``"linear"`` (straight, optimal-transport path) or ``"vp"`` (trigonometric,
            variance preserving).
        sigma_min: width of the linear path's end at the data (0: rectified flow's straight line).
        time_sampling: ``"uniform"`` training times, or ``"likelihood"``: half of them at noise
            levels log-uniform down to 1e-3, where the likelihood's weighting of the loss puts
            its mass (:func:`~dgm.models.flow_matching.paths.sample_times`); ``"auto"``:
            ``"likelihood"`` on images above 16 pixels a side (MNIST, 30 minutes: 1.389 against
            1.505 bits/dim with uniform times on the same 200 test images), ``"uniform"``
            elsewhere (the 2-D benchmarks' setting).
    """

    coupling: Literal["ot", "independent"] = "ot"
    ot_solver: Literal["exact", "sinkhorn"] = "exact"
    sinkhorn_reg: float = 0.05
    path: Literal["linear", "vp"] = "linear"
    sigma_min: float = 0.0
    time_sampling: Literal["auto", "uniform", "likelihood"] = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.time_sampling not in ("auto", *TIME_SAMPLINGS):
            raise ConfigError(
                f"time_sampling must be one of auto, {', '.join(TIME_SAMPLINGS)}, "
                f"not {self.time_sampling!r}"
            )
        if not 0 <= self.sigma_min < 1:
            raise ConfigError(f"sigma_min must lie in [0, 1), not {self.sigma_min}")
        if self.path != "linear" and self.sigma_min:
            raise ConfigError("sigma_min applies to the linear path only; set it to 0 for 'vp'")
        if not self.sinkhorn_reg > 0:
            raise ConfigError(f"sinkhorn_reg must be positive, not {self.sinkhorn_reg}")


@dataclass
class FlowMatchingSampleOptions:
    """Options of :meth:`FlowMatching.sample`.

    Attributes:
        method: the ODE solver: ``"euler"``, ``"heun"``, ``"rk4"`` (``steps`` equal steps; 1, 2
            and 4 network evaluations per step) or adaptive ``"dopri5"`` (the model's tolerances).
        steps: the number of equal steps of a fixed-step solver.
        guidance: classifier-free guidance weight ``w`` on the velocity (conditional models,
            :mod:`~dgm.models.diffusion.base`); 0: the conditional flow, -1: the unconditional
            one. A guided flow has no likelihood.
    """

    method: Literal["euler", "heun", "rk4", "dopri5"] = "rk4"
    steps: int = 20
    guidance: float = 0.0

    def __post_init__(self) -> None:
        check_guidance(self.guidance)


@register
class FlowMatching(ProbabilityFlow, DiffusionBase):
    """Conditional flow matching with a probability-flow likelihood (see the module docstring)."""

    name = "flow-matching"
    family = "flow_matching"
    description = (
        "Flow matching (I-CFM / OT-CFM; Lipman et al. 2023, Tong et al. 2024): ODE sampling, "
        "probability-flow likelihood"
    )
    Config = FlowMatchingConfig
    SampleOptions = FlowMatchingSampleOptions
    needs_grad_for_inference = True
    exact_trace_max_dims = 64
    example = Example(
        spec=DataSpec((2,), num_classes=2),
        config={
            "width": 16,
            "depth": 1,
            "time_dim": 8,
            "rtol": 1e-5,
            "atol": 1e-5,
            "fourier_features": 0,
        },
        variants=(
            {
                "coupling": "independent",
                "path": "vp",
                "trace": "hutchinson",
                "time_sampling": "likelihood",
            },
            {
                "ot_solver": "sinkhorn",
                "sigma_min": 0.01,
                "fourier_features": 4,
                "fourier_scale": 2.0,
            },
            {"conditional": True},
        ),
    )
    #: a cosine decay and the engine's weight average: on 8gaussians in 30 s (one thread, the
    #: AVX2 host of 2026-12-07, with the Fourier features below) KL gaps 0.025 and 0.026 against
    #: 0.047 and 0.062 at a constant rate without the average (two seeds)
    train_defaults = {"steps": 3000, "batch_size": 256, "lr": 1e-3, "schedule": "cosine",
                      "ema": 0.999}  # fmt: skip
    #: on MNIST the recipe of its 30-minute benchmark: with these defaults (the 32-channel U-Net
    #: below, 2e-3, likelihood times) **1.253 ± 0.008** bits/dim on 1000 test images in 4606
    #: steps on both cores of an AMX host, ``flow_matching_mnist_bpd_default.json``; the 16-channel
    #: U-Net at 1e-3 reached 1.429 ± 0.008 there in 6719 steps with likelihood times
    #: (``flow_matching_mnist_bpd_likelihood.json``), 1.505 on 200 images with uniform times
    #: (Hutchinson estimates of the dequantization bound, an upper bound on the true bits/dim).
    #: ``precision="auto"``: bfloat16 products where the CPU has AMX or ``avx512_bf16`` (1.17x
    #: the steps per second on an AMX host, ``precision_mnist_2threads.json``), float32 elsewhere
    large_image_train_defaults = {"max_minutes": 30, "batch_size": 64, "ema": 0.999,
                                  "schedule": "cosine", "precision": "auto",
                                  "lr": 2e-3}  # fmt: skip
    #: the MNIST U-Net is 32 channels wide (8-minute probes on the same 200 test images: 1.759
    #: bits/dim at 16 channels and 1e-3, 1.667 at 24, 1.611 at 32; 1.639 at 16 channels and
    #: 2e-3, 1.566 at 24 and 2e-3: the wider net wins though it fits fewer steps)
    large_image_unet_width = 32
    #: 256 random Fourier features (scale 6) of the MLP's input on 2-D data: in 30 s of training
    #: on one thread (AVX2 host of 2026-12-07) the KL gap went from 0.10-0.45 without them to
    #: 0.03-0.04 with 128 on 8gaussians, 0.72-0.78 to 0.14 on rings, 0.45 to 0.17 on
    #: checkerboard (the rings' width from 2.5x the data's to about right); at nsf's training
    #: time flow matching's gap on 8gaussians exceeds nsf's by 0.0125 nats (median of 3 seeds)
    #: with 128 and by 0.0075 with 256 (``flow_matching_vs_nsf_ff256.json``)
    auto_fourier_features = 256

    def __init__(self, spec: DataSpec, config: FlowMatchingConfig | None = None) -> None:
        super().__init__(spec, config)
        self.init_trace()
        #: the training times' distribution, ``"auto"`` resolved by the data (reflow, whose
        #: config has no such field, trains on its pairs at uniform times)
        chosen = getattr(self.config, "time_sampling", "uniform")
        self.time_sampling = chosen
        if chosen == "auto":
            self.time_sampling = "likelihood" if spec.is_large_image else "uniform"

    # ------------------------------------------------------------------ the field
    @property
    def straight_path(self) -> bool:
        """Whether the field carries points along the straight path ``t x1 + (1 - t) x0``, the
        few-step students' coordinates (so a student may start from these weights)."""
        return self.config.path == "linear"

    def velocity(self, z: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """``v_theta(z, t)`` at model-space ``z (B, *event)`` and times ``t (B,)`` in [0, 1]
        (network labels ``y (B,)`` of a conditional model)."""
        return self.network(z, TIME_SCALE * t.to(z.dtype), y)

    def couple(self, x0: Tensor, x1: Tensor, y: Tensor | None = None) -> Tensor:
        """The noise ``x0`` reordered (or redrawn from the plan) to pair with the data ``x1``;
        with labels ``y``, within each class (so each class's noise stays ``N(0, I)``)."""
        c: FlowMatchingConfig = self.config
        if c.coupling == "independent":
            return x0
        if y is not None:
            out = x0.clone()
            for k in y.unique():
                rows = (y == k).nonzero().squeeze(1)
                out[rows] = self.couple(x0[rows], x1[rows])
            return out
        if c.ot_solver == "exact":
            return x0[ot_pairs(x0, x1)]
        return x0[sinkhorn_pairs(x0, x1, c.sinkhorn_reg)]

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        x, y = unpack(batch)
        x1, _ = self.to_model_space(self.check_input(x))
        y = y if self.conditional else None
        with torch.no_grad():
            x0 = self.couple(torch.randn_like(x1), x1, y)
        y = self.train_labels(y, x1.shape[0])  # label dropout (conditional models)
        t = sample_times(x1.shape[0], self.time_sampling, dtype=x1.dtype, device=x1.device)
        xt, target = interpolate(self.config.path, x0, x1, t, self.config.sigma_min)
        mse = (self.velocity(xt, t, y) - target).square().flatten(1).mean(1)  # (B,)
        return {"loss": mse.mean()}

    # ------------------------------------------------------------------ likelihood
    def _field(self, flat: Tensor, t: Tensor, y: Tensor | None = None, w: float = 0.0) -> Tensor:
        B = flat.shape[0]
        tt, zz = t.to(flat).expand(B), flat.view(B, *self.event_shape)
        v = self.velocity if self.conditional else lambda z_, t_, _: self.velocity(z_, t_)
        return self.guide(lambda yy: v(zz, tt, yy), y, w).reshape(B, -1)

    def pf_field(self, flat: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        return self._field(flat, t, y)

    @property
    def pf_span(self) -> tuple[float, float]:
        """Backward from the data at ``t = 1`` to the noise at ``t = 0``."""
        return 1.0, 0.0

    # ------------------------------------------------------------------ sampling
    @staticmethod
    def nfe(method: str, steps: int) -> int | None:
        """Network evaluations of one sample at a fixed-step setting (``None`` for dopri5,
        whose count depends on the tolerance)."""
        return _EVALS_PER_STEP[method] * int(steps) if method in _EVALS_PER_STEP else None

    @torch.no_grad()
    def sample(
        self,
        n: int,
        y: Tensor | None = None,
        method: str = "rk4",
        steps: int = 20,
        guidance: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``n`` samples ``(n, *event_shape)`` by integrating the learned flow from noise (given
        labels ``y`` and a ``guidance`` weight for a conditional model)."""
        y = self.sample_labels(y, n, guidance)
        if method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
        if method != "dopri5" and (isinstance(steps, bool) or int(steps) != steps or steps < 1):
            raise ConfigError(f"steps must be a positive integer, not {steps!r}")
        c: FlowMatchingConfig = self.config
        z = self.prior_noise(n, generator).reshape(n, -1)
        flat = odeint(
            lambda t, f: self._field(f, t, y, guidance), z, 0.0, 1.0, method=method,
            steps=None if method == "dopri5" else int(steps), rtol=c.rtol, atol=c.atol,
        )  # fmt: skip
        return self.from_model_space(flat.view(n, *self.event_shape))
