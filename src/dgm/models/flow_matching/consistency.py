r"""``consistency``: a consistency model (Song, Dhariwal, Chen & Sutskever, "Consistency Models",
ICML 2023, arXiv:2303.01469), trained by consistency training or distilled from a flow-matching
teacher, sampled in one or a few steps.

A consistency function maps every point of a probability-flow trajectory to the trajectory's
data end. dgm writes it in flow matching's time (noise at ``t = 0``, data at ``t = 1``, the
straight path :math:`x_t = t x_1 + (1 - t) x_0`) with the boundary condition built in (Song et
al., eq. 5, in this time):

.. math::

    f_\theta(x, t) = x + (1 - t)\, F_\theta(x, t), \qquad f_\theta(x, 1) = x,

so :math:`F_\theta` plays the part of an average velocity and one step from noise is
:math:`f_\theta(x_0, 0) = x_0 + F_\theta(x_0, 0)`.

**Training** on the grid :math:`t_k = k / N`, ``k = 0..N`` (``levels = N``): for data
:math:`x_1`, noise :math:`x_0` and a random ``k < N``, with the point :math:`x_{t_k}` of the
straight path,

.. math::

    \ell = E\, d\big(f_\theta(x_{t_k}, t_k),\ \mathrm{sg}\, f_\theta(\hat x_{t_{k+1}},
        t_{k+1})\big),

where :math:`\hat x_{t_{k+1}}` is one step of the probability-flow ODE from :math:`x_{t_k}`:

* ``objective="ct"`` (consistency training, Song et al. section 5): the conditional velocity
  :math:`x_1 - x_0` stands for the marginal one, i.e. :math:`\hat x_{t_{k+1}} = x_{t_{k+1}}`, the
  same path at the next time (their theorem 2's estimator); no teacher is needed.
* ``objective="cd"`` (consistency distillation, section 4): a Heun step of the teacher's field
  (a ``flow-matching``, ``reflow``, ``ddpm`` or ``score-sde`` run, ``teacher``; a diffusion
  teacher's probability flow is read on the straight path, :mod:`~dgm.models.flow_matching.teacher`).

The target network is the student itself under a stop-gradient (``sg``), the EMA decay
:math:`\mu = 0` that Song & Dhariwal 2023 ("Improved Techniques for Training Consistency Models",
arXiv:2310.14189, section 3.2) found better than an averaged target; the engine's weight average
still smooths the saved weights. From the same paper (section 3.3 and 3.5), the metric ``d`` is
the pseudo-Huber distance :math:`\sqrt{|a - b|^2 + c^2} - c`, :math:`c = 0.00054 \sqrt{D}` (LPIPS
would be a network outside dgm), and the interval ``k`` is drawn with the mass that a log-normal
over the noise level :math:`\sigma = (1 - t) / t`, :math:`\log \sigma \sim N(-1.1, 2^2)`,
gives it, which favours the times near the data. On 8gaussians (3000 steps, ``levels`` 20, one
step) these took the C2ST from 0.726 (squared distance, uniform ``k``) to 0.599 (pseudo-Huber) and
0.502 (both); their discretisation curriculum (``double_every``: ``N`` doubling from 10 to 1280)
gave 0.566 on top of both, so it is an option, off by default.

**Sampling** (Song et al., algorithm 1, multistep): one step is :math:`f_\theta(x_0, 0)`; with
``steps = S`` the sample is pushed back to a time :math:`t_s` on the straight path with
fresh noise, :math:`x_t = t_s x + (1 - t_s)\, \epsilon`, and mapped again, ``S`` network
evaluations in all. Song et al. choose the intermediate times by search; dgm's default is
:math:`t_s = 1 - (1 - s / S)^3` (0.875 for two steps; ``times`` sets others): on MNIST a
distilled student's FID* at two steps was 4.27 re-noising to 0.5, 3.32 to 0.7, 3.10 to 0.8,
3.04 to 0.9 and 3.10 to 0.95, and at four steps 12.8 at ``s / 4`` against 4.12 at the cubic's
0.58, 0.875, 0.98 (500 samples x 3 sets). The model has no likelihood: it is judged by its
samples.

**Multistep consistency** (``segments = S`` > 1; Heek, Obukhov, Salimans & Hoogeboom,
"Multistep Consistency Models", 2024, arXiv:2403.06807): the time axis is cut into ``S`` equal
segments with ends :math:`e_j = j / S`, and the model maps a point to its trajectory's point at
the end of the point's own segment,

.. math::

    f_\theta(x, t) = x + (e(t) - t)\, F_\theta(x, t), \qquad f_\theta(x, e(t)) = x,

trained by the same loss on the grid (``levels`` a multiple of ``S``; a pair whose next time is
its segment's end takes the teacher's step itself as the target). Sampling is deterministic:
:math:`x_{e_1} = f_\theta(x_0, 0)`, then :math:`x_{e_{j+1}} = f_\theta(x_{e_j}, e_j)`, exactly
``S`` network evaluations and no re-noising. Each map spans ``1 / S`` of the trajectory, an easier
function to learn than the whole; with one segment this is the model above. A distilled student
that starts from its teacher's weights starts as ``S`` Euler steps of the teacher.

**Adversarial term** (``adversarial = w`` > 0; the GAN loss that consistency trajectory models
add to distillation, Kim et al., "Consistency Trajectory Models", ICLR 2024, arXiv:2310.02279,
and adversarial diffusion distillation, Sauer et al. 2023, arXiv:2311.17042): a discriminator
``D`` (the GAN family's DCGAN-style convolutional one on images, an MLP on vectors) learns to tell
the student's samples, drawn from noise in the model's own steps with their graph kept, from the
training batch, with the R1 penalty on the real ones (``adv_r1``), and the student's step adds
``lambda`` times the generator's loss on them to the consistency loss. ``lambda`` is
``w`` times the ratio of the two terms' gradient norms at the network's last layer (the adaptive
weight of Esser et al., "Taming Transformers", CVPR 2021, that consistency trajectory models use),
so neither term drowns the other whatever their scales. The consistency loss ties the student to
its teacher's trajectories; the adversarial term judges the samples themselves, the one lever
with which a one- or two-step student has matched or beaten its many-step teacher in the
literature. ``D`` is trained by its own optimizer (a parameter group ``"discriminator"``) and
kept with the run's weights; sampling never reads it. :meth:`training_step` steps each player
on its own terms; :meth:`loss` reports them summed, as the GAN's does.

>>> from dgm.core.spec import DataSpec
>>> m = Consistency(DataSpec((2,)), ConsistencyConfig(width=16, depth=1))
>>> m.loss(torch.zeros(8, 2))["loss"].shape
torch.Size([])
>>> m.sample(3, steps=2).shape
torch.Size([3, 2])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from dgm.core.errors import ConfigError
from dgm.core.model import Batch, Example, Stepper, unpack
from dgm.core.registry import register
from dgm.core.spec import DataSpec
from dgm.models.diffusion.base import DiffusionBase, NetConfig
from dgm.models.flow_matching.model import FlowMatching
from dgm.models.flow_matching.reflow import TeacherMixin
from dgm.models.gan.losses import discriminator_loss, generator_loss, r1_from_output
from dgm.models.gan.networks import ConvDiscriminator, MLPDiscriminator

__all__ = ["Consistency", "ConsistencyConfig", "ConsistencySampleOptions"]

TIME_SCALE = 20.0  # the network sees 20 t, as flow matching's (see flow_matching/model.py)
#: the log-normal over the noise level of ``time_sampling="lognormal"`` (Song & Dhariwal 2023)
P_MEAN, P_STD = -1.1, 2.0


@dataclass
class ConsistencyConfig(NetConfig):
    """Hyperparameters of :class:`Consistency` (network fields: :class:`NetConfig`).

    Attributes:
        objective: ``"ct"`` (consistency training, no teacher) or ``"cd"`` (consistency
            distillation from ``teacher``).
        teacher: for ``"cd"``, the run directory of a trained ``flow-matching``, ``reflow``,
            ``ddpm`` or ``score-sde`` run on the same data (a diffusion run is read on the
            straight path); ``""``: an untrained in-process teacher (tests and the conformance
            suite only; see :mod:`dgm.models.flow_matching.teacher`).
        levels: ``N``, the number of intervals of the time grid ``t_k = k / N`` (with a
            curriculum, the largest ``N``).
        levels_start: with ``double_every`` > 0, the ``N`` of the first training steps.
        double_every: the discretisation curriculum of Song & Dhariwal 2023 (their eq. 8): ``N``
            doubles every ``double_every`` training steps from ``levels_start`` up to
            ``levels``; 0: ``N = levels`` throughout.
        metric: the distance between the two ends: ``"l2"`` (squared, per dimension) or
            ``"pseudo-huber"`` (``sqrt(|a - b|^2 + c^2) - c``, Song & Dhariwal 2023).
        huber_c: ``c`` of the pseudo-Huber metric; ``None``: ``0.00054 sqrt(D)`` (theirs).
        time_sampling: which interval ``k`` a pair is drawn from: ``"uniform"`` or
            ``"lognormal"`` (Song & Dhariwal 2023: the interval's share of a log-normal
            ``log sigma ~ N(-1.1, 2^2)`` over the noise level ``sigma = (1 - t) / t`` of the
            straight path, which favours the times near the data).
        segments: ``S``, the multistep consistency model's segments (see the module
            docstring): ``f`` maps to the end of its segment and sampling takes exactly ``S``
            steps; 1: the consistency model of Song et al. (``levels`` and, with the curriculum,
            ``levels_start`` must be multiples of ``S``).
        init: the student's first weights under ``"cd"``: ``"teacher"``, a copy of the
            teacher's network (Song et al. initialise a distilled consistency model from its
            teacher; with ``f = z + (1 - t) F`` the copy starts as one Euler step of the
            teacher to ``t = 1``; the student's network options must be the teacher's),
            ``"random"``, or ``"auto"``: the teacher's when ``teacher`` names a straight-path
            flow run whose network fits, else random (a teacher run that does not fit says so
            on stderr).
        adversarial: ``w``, the weight of the adversarial term over its adaptive scale (the
            ratio of the consistency and adversarial gradient norms at the network's last
            layer; see the module docstring); 0: off.
        adv_loss: the adversarial objective, ``"non-saturating"`` or ``"hinge"``.
        adv_width: the discriminator's width (conv channels of its first layer on images, the
            hidden width of its two-layer MLP on vectors).
        adv_batch: the student's samples per step that the adversarial term judges (at most the
            training batch; as many real examples of the batch stand beside them).
        adv_r1: ``gamma`` of the R1 penalty on the real examples (``gamma / 2`` times the mean
            squared gradient norm joins the discriminator's loss); 0: none.
        adv_start: training steps before the adversarial term joins the student's loss (the
            discriminator learns from the first step, on samples drawn without a graph until
            then).
    """

    objective: Literal["ct", "cd"] = "ct"
    teacher: str = ""
    levels: int = 20
    levels_start: int = 10
    double_every: int = 0
    metric: Literal["l2", "pseudo-huber"] = "pseudo-huber"
    huber_c: float | None = None
    time_sampling: Literal["uniform", "lognormal"] = "lognormal"
    segments: int = 1
    init: Literal["auto", "teacher", "random"] = "auto"
    adversarial: float = 0.0
    adv_loss: Literal["non-saturating", "hinge"] = "non-saturating"
    adv_width: int = 64
    adv_batch: int = 32
    adv_r1: float = 0.1
    adv_start: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("adversarial", "adv_r1", "adv_start"):
            if not getattr(self, key) >= 0:  # also NaN
                raise ConfigError(f"{key} must be 0 or positive, not {getattr(self, key)}")
        for key in ("adv_width", "adv_batch"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be a positive integer, not {getattr(self, key)}")
        if self.adv_loss not in ("non-saturating", "hinge"):
            raise ConfigError(
                f"adv_loss must be 'non-saturating' or 'hinge', not {self.adv_loss!r}"
            )
        for key in ("levels", "levels_start", "segments"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be a positive integer, not {getattr(self, key)}")
        grids = ("levels", "levels_start") if self.double_every else ("levels",)
        for key in grids:
            if getattr(self, key) % self.segments:
                raise ConfigError(
                    f"{key} must be a multiple of segments ({self.segments}), not "
                    f"{getattr(self, key)}: each segment takes whole intervals of the time grid"
                )
        if self.double_every < 0:
            raise ConfigError(f"double_every must be 0 or positive, not {self.double_every}")
        if self.huber_c is not None and not self.huber_c > 0:
            raise ConfigError(f"huber_c must be positive or null, not {self.huber_c}")
        if self.teacher and self.objective != "cd":
            raise ConfigError("a teacher is for objective='cd'; set objective=cd or drop teacher")
        if self.init == "teacher" and self.objective != "cd":
            raise ConfigError("init='teacher' is for objective='cd'; set objective=cd or init=auto")


@dataclass
class ConsistencySampleOptions:
    """Options of :meth:`Consistency.sample`.

    Attributes:
        steps: network evaluations per sample (1: one step from noise; more: Song et al.'s
            multistep sampler); ``None``: the model's ``segments`` (1 unless it has more). A
            model of ``S`` > 1 segments samples in exactly ``S`` steps.
        times: the ``steps - 1`` increasing times in (0, 1) the multistep sampler re-noises
            to; empty: ``t_s = 1 - (1 - s / steps)^3`` (see the module docstring). Not for a
            model of several segments (it does not re-noise).
    """

    steps: int | None = None
    times: tuple[float, ...] = ()


@register
class Consistency(TeacherMixin, DiffusionBase):
    """Consistency model, trained or distilled from flow matching (see the module docstring)."""

    name = "consistency"
    family = "flow_matching"
    description = (
        "Consistency model (Song et al. 2023): consistency training or distillation from a "
        "flow-matching teacher; 1-2 step sampling"
    )
    Config = ConsistencyConfig
    SampleOptions = ConsistencySampleOptions
    example = Example(
        spec=DataSpec((2,)),
        config={"width": 16, "depth": 1, "time_dim": 8, "levels": 8, "fourier_features": 0},
        variants=(
            {"objective": "cd", "fourier_features": 4, "fourier_scale": 2.0},
            {"objective": "cd", "segments": 2},
            {
                "objective": "cd",
                "segments": 2,
                "adversarial": 1.0,
                "adv_width": 8,
                "adv_batch": 4,
            },
        ),
    )
    train_defaults = {"steps": 3000, "batch_size": 256, "lr": 1e-3, "ema": 0.999}
    #: on MNIST the few-step students' benchmark recipe: a distilled student starts from its
    #: teacher's weights (``init``), so it keeps the teacher's 32-channel U-Net and fine-tunes it at
    #: 4e-4 with bf16 products where AMX or ``avx512_bf16`` is (10-minute probes from the 30-minute
    #: teacher, FID* at one / two steps: 14.0 / 13.4 from random 16-channel weights, 4.27 / 4.68
    #: from the teacher's at 1e-3, 3.74 / 4.10 at 4e-4 re-noising to 0.5); these 20 minutes: 3.51 /
    #: 2.73 (``flow_matching_mnist_fid_students.json``)
    large_image_train_defaults = {"max_minutes": 20, "batch_size": 64, "ema": 0.999,
                                  "schedule": "cosine", "precision": "auto", "lr": 4e-4}  # fmt: skip
    large_image_unet_width = FlowMatching.large_image_unet_width
    #: flow matching's Fourier features on 2-D data, its teacher's layout (so a distilled student
    #: starts from the teacher's weights); for consistency training itself no clear gain: C2ST at
    #: the defaults 0.551 / 0.530 / 0.559 with 256 against 0.502 / 0.585 / 0.574 without
    #: (8gaussians / rings / checkerboard, ``benchmarks/results/defaults.json``)
    auto_fourier_features = FlowMatching.auto_fourier_features

    def __init__(self, spec: DataSpec, config: ConsistencyConfig | None = None) -> None:
        super().__init__(spec, config)
        c: ConsistencyConfig = self.config
        self.discriminator: nn.Module | None = None
        if c.adversarial > 0:
            shape = tuple(spec.event_shape)
            self.discriminator = (
                ConvDiscriminator(shape, c.adv_width)  # type: ignore[arg-type]
                if len(shape) == 3
                else MLPDiscriminator(self.num_dims, (c.adv_width, c.adv_width))
            )

    def on_train_start(self, train_data: Tensor, labels: Tensor | None = None) -> None:
        """Consistency training standardises the data; distillation takes the teacher's space
        (and, by ``init``, its weights)."""
        if self.config.objective == "cd":
            self.teacher_model()
            self.start_from_teacher()
        else:
            super().on_train_start(train_data)

    def consistency(
        self, z: Tensor, t: Tensor, y: Tensor | None = None, end: Tensor | None = None
    ) -> Tensor:
        """``f_theta(z, t) = z + (end - t) F_theta(z, t)`` at model-space ``z (B, *event)``,
        given network labels ``y`` (a conditional model; the null class is the unconditional
        one); ``end (B,)``: the end of each point's segment (``None``: 1, the data)."""
        shape = (-1, *([1] * (z.dim() - 1)))
        tt = t.to(z.dtype).view(shape)
        span = 1 - tt if end is None else end.to(z.dtype).view(shape) - tt
        return z + span * self.network(z, TIME_SCALE * t.to(z.dtype), y)

    @torch.no_grad()
    def _teacher_step(self, z: Tensor, t: Tensor, h: float, y: Tensor | None = None) -> Tensor:
        """One Heun step of the teacher's flow from ``z`` at ``t (B,)`` to ``t + h`` (given the
        teacher's network labels ``y`` when it is conditional)."""
        teacher = self.teacher_model()
        args = (y,) if teacher.conditional else ()
        v1 = teacher.velocity(z, t, *args)
        v2 = teacher.velocity(z + h * v1, t + h, *args)
        return z + 0.5 * h * (v1 + v2)

    def levels_at(self, step: int | None) -> int:
        """``N`` at training step ``step`` (the curriculum; ``None``: outside training, the
        largest)."""
        c: ConsistencyConfig = self.config
        if not c.double_every or step is None:
            return c.levels
        return min(c.levels_start * 2 ** (step // c.double_every), c.levels)

    def segment_ends(self, k: Tensor, n: int, dtype: torch.dtype) -> Tensor | None:
        """The end of the segment of each interval ``k (B,)`` of the grid of ``n`` intervals,
        ``(B,)`` (``None`` with one segment: the data end, 1). Computed as ``t_k+1 = (k + 1) / n``
        is, so that an interval that ends its segment has ``end - t_k+1 = 0`` exactly: its
        target is the teacher's step itself."""
        per = n // self.config.segments  # intervals per segment
        return None if per == n else ((k // per + 1) * per).to(dtype) / n

    def interval_probs(self, n: int) -> Tensor:
        """``(n,)`` probabilities of the intervals ``[t_k, t_k+1]`` of the grid ``t_k = k / n``."""
        if self.config.time_sampling == "uniform":
            return torch.full((n,), 1.0 / n, dtype=torch.float64)
        t = torch.arange(n + 1, dtype=torch.float64) / n
        # sigma = (1 - t) / t falls from inf to 0; the interval's mass of N(-1.1, 2^2) on log sigma
        log_sigma = torch.log1p(-t.clamp(max=1.0)) - torch.log(t)  # (n+1,), +inf .. -inf
        cdf = torch.special.ndtr((log_sigma - P_MEAN) / P_STD)
        probs = (cdf[:-1] - cdf[1:]).clamp_min(0.0)
        return probs / probs.sum()

    def distance(self, a: Tensor, b: Tensor) -> Tensor:
        """``(B,)`` distances between two ``(B, *event)`` batches by ``metric``."""
        sq = (a - b).square().flatten(1)
        if self.config.metric == "l2":
            return sq.mean(1)
        c = self.config.huber_c or 0.00054 * self.num_dims**0.5
        return (sq.sum(1) + c * c).sqrt() - c

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        """The consistency loss on ``batch``; with the adversarial term (outside training, or
        from ``adv_start`` on) also both players' terms on fresh samples, ``loss`` then being
        their sum (a summary, as the GAN's: :meth:`training_step` steps each player on its own
        terms)."""
        z1, y = self._model_batch(batch)
        main = self.consistency_loss(z1, y)
        if not self._adversarial_now():
            return {"loss": main}
        fake, real = self._adversarial_pair(z1, y)
        d_loss, terms = self._discriminator_loss(real, fake.detach())
        adv = generator_loss(self.discriminator(fake), self.config.adv_loss)  # type: ignore[misc]
        lam = self.adaptive_weight(main, adv)
        return {"loss": main + lam * adv + d_loss, "consistency": main, "g_adv": adv,
                "d_loss": d_loss, "adv_weight": lam, **terms}  # fmt: skip

    def _model_batch(self, batch: Batch) -> tuple[Tensor, Tensor | None]:
        """Model-space data ``(B, *event)`` and the network labels (with label dropout) of a
        training batch."""
        x, y = unpack(batch)
        z1, _ = self.to_model_space(self.check_input(x))
        return z1, self.train_labels(y if self.conditional else None, z1.shape[0])

    def consistency_loss(self, z1: Tensor, y: Tensor | None) -> Tensor:
        """The consistency loss of model-space data ``z1 (B, *event)`` with network labels
        ``y``."""
        B, N = z1.shape[0], self.levels_at(self.step_in_training)
        z0 = torch.randn_like(z1)
        if self.config.time_sampling == "uniform":
            k = torch.randint(0, N, (B,), device=z1.device)
        else:
            k = torch.multinomial(self.interval_probs(N), B, replacement=True).to(z1.device)
        t, t_next = k.to(z1.dtype) / N, (k + 1).to(z1.dtype) / N  # (B,)
        end = self.segment_ends(k, N, z1.dtype)
        shape = (-1, *([1] * (z1.dim() - 1)))
        zt = t.view(shape) * z1 + (1 - t.view(shape)) * z0
        if self.config.objective == "cd":
            z_next = self._teacher_step(zt, t, 1.0 / N, y)
        else:
            z_next = t_next.view(shape) * z1 + (1 - t_next.view(shape)) * z0
        with torch.no_grad():
            target = self.consistency(z_next, t_next, y, end)
        return self.distance(self.consistency(zt, t, y, end), target).mean()

    # ------------------------------------------------------------------ the adversarial term
    def param_groups(self) -> list[dict]:
        """One group ``"model"`` (the student), and with the adversarial term a second,
        ``"discriminator"``, with the GAN family's Adam ``betas`` (0.5, 0.999)."""
        if self.discriminator is None:
            return super().param_groups()
        d = set(map(id, self.discriminator.parameters()))
        student = [p for p in self.parameters() if p.requires_grad and id(p) not in d]
        critic = [p for p in self.discriminator.parameters() if p.requires_grad]
        return [
            {"name": "model", "params": student},
            {"name": "discriminator", "params": critic, "betas": (0.5, 0.999)},
        ]

    def last_layer(self) -> Tensor:
        """The weight of the network's last layer (where the adaptive weight compares the
        terms' gradients)."""
        net = self.net
        return net.conv_out.weight if hasattr(net, "conv_out") else net.out[-1].weight

    def generate(self, z0: Tensor, y: Tensor | None = None) -> Tensor:
        """Model-space samples from prior noise ``z0 (B, *event)`` in the model's own steps
        (its ``segments``; one step with one segment), differentiable."""
        S, n = self.config.segments, z0.shape[0]
        x = z0
        for j in range(S):
            t = torch.full((n,), j / S, dtype=x.dtype, device=x.device)
            x = self.consistency(x, t, y, None if S == 1 else t.new_full((n,), (j + 1) / S))
        return x

    def adaptive_weight(self, main: Tensor, adv: Tensor) -> Tensor:
        """``w |grad_W main| / |grad_W adv|`` at the last layer's weight ``W`` (clamped to
        1e4), detached."""
        w = self.last_layer()
        (g_main,) = torch.autograd.grad(main, w, retain_graph=True)
        (g_adv,) = torch.autograd.grad(adv, w, retain_graph=True)
        ratio = g_main.norm() / (g_adv.norm() + 1e-8)
        return (self.config.adversarial * ratio.clamp(max=1e4)).detach()

    def _adversarial_now(self) -> bool:
        step = self.step_in_training
        return self.discriminator is not None and (step is None or step >= self.config.adv_start)

    def _adversarial_pair(self, z1: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        """``adv_batch`` of the student's samples (graph kept) and as many real examples of the
        model-space batch ``z1`` (a leaf that requires grad when R1 is on)."""
        m = min(self.config.adv_batch, z1.shape[0])
        fake = self.generate(torch.randn_like(z1[:m]), None if y is None else y[:m])
        return fake, z1[:m].detach().requires_grad_(self.config.adv_r1 > 0)

    def _discriminator_loss(self, real: Tensor, fake: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The discriminator's loss on ``real`` and (detached) ``fake``, with R1 on ``real``."""
        c: ConsistencyConfig = self.config
        D = self.discriminator
        assert D is not None
        r = D(real)
        loss = discriminator_loss(r, D(fake), c.adv_loss)
        if not c.adv_r1 > 0:
            return loss, {}
        r1 = r1_from_output(r, real)
        return loss + 0.5 * c.adv_r1 * r1, {"r1": r1.detach()}

    def training_step(self, batch: Batch, step: int, stepper: Stepper) -> dict[str, Tensor]:
        """The consistency step; with the adversarial term, first one discriminator update on
        ``adv_batch`` of the student's samples against as many real examples, then (from
        ``adv_start`` on) the student's update on the consistency loss plus ``lambda`` times the
        generator's loss on the same samples, judged by the updated discriminator (see the
        module docstring). Before ``adv_start`` the discriminator learns on samples drawn
        without a graph, so that it is not untrained when its term begins."""
        D = self.discriminator
        if D is None:
            return super().training_step(batch, step, stepper)
        joined = step >= self.config.adv_start
        with self.training_at(step):
            z1, y = self._model_batch(batch)
            main = self.consistency_loss(z1, y)
        with torch.set_grad_enabled(joined):
            fake, real = self._adversarial_pair(z1, y)
        d_loss, terms = self._discriminator_loss(real, fake.detach())
        stepper(d_loss, "discriminator")
        terms["d_loss"] = d_loss.detach()
        if not joined:
            stepper(main, "model")
            return {"loss": main.detach(), "consistency": main.detach(), **terms}
        D.requires_grad_(False)  # the student's step needs no discriminator weight gradients
        try:
            adv = generator_loss(D(fake), self.config.adv_loss)
        finally:
            D.requires_grad_(True)
        lam = self.adaptive_weight(main, adv)
        total = main + lam * adv
        stepper(total, "model")
        return {"loss": total.detach(), "consistency": main.detach(), "g_adv": adv.detach(),
                "adv_weight": lam, **terms}  # fmt: skip

    @torch.no_grad()
    def sample(
        self,
        n: int,
        y: Tensor | None = None,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        times: tuple[float, ...] | None = None,
    ) -> Tensor:
        """``n`` samples in ``steps`` network evaluations (see the module docstring)."""
        given = {"steps": steps, "times": times}
        o = self.sample_config({k: v for k, v in given.items() if v is not None})
        S = self.config.segments
        steps = S if o.steps is None else o.steps
        if isinstance(steps, bool) or int(steps) != steps or steps < 1:
            raise ConfigError(f"steps must be a positive integer, not {steps!r}")
        y = self.net_labels(y, n)  # checked; a conditional model without labels: the null class
        if S > 1:
            if steps != S or o.times:
                raise ConfigError(
                    f"a consistency model of {S} segments samples in exactly {S} steps without "
                    f"re-noising times; drop steps and times (or set steps={S})"
                )
            return self.from_model_space(self.generate(self.prior_noise(n, generator), y))
        times = self.renoise_times(int(steps), tuple(o.times))
        z = self.prior_noise(n, generator)
        x = self.consistency(z, torch.zeros(n, dtype=z.dtype, device=z.device), y)
        for t in times:
            noise = self.prior_noise(n, generator)
            zt = t * x + (1 - t) * noise
            x = self.consistency(zt, torch.full((n,), t, dtype=z.dtype, device=z.device), y)
        return self.from_model_space(x)

    @staticmethod
    def renoise_times(steps: int, times: tuple[float, ...] = ()) -> tuple[float, ...]:
        """The ``steps - 1`` times the multistep sampler re-noises to: ``times`` checked, or the
        default ``1 - (1 - s / steps)^3``."""
        if not times:
            return tuple(1 - (1 - s / steps) ** 3 for s in range(1, steps))
        ok = len(times) == steps - 1 and all(0 < a < 1 for a in times)
        if not ok or any(b <= a for a, b in zip(times, times[1:], strict=False)):
            raise ConfigError(
                f"times must be {steps - 1} increasing numbers in (0, 1) for steps={steps}, "
                f"not {list(times)}"
            )
        return tuple(float(a) for a in times)

    def nfe(self, steps: int | None = None, times: tuple[float, ...] = ()) -> int:
        """Network evaluations of one sample: ``steps`` (``None``: ``segments``)."""
        return int(self.config.segments if steps is None else steps)
