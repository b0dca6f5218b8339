r"""``reflow``: rectified flow's reflow (Liu, Gong & Liu, "Flow Straight and Fast", ICLR 2023,
arXiv:2209.03003, section 2.2): a second flow trained on the couplings of a first.

A trained flow :math:`v^{(k)}` (the *teacher*: a ``flow-matching`` or ``reflow`` run) transports
noise :math:`X_0 \sim N(0, I)` to samples :math:`X_1 = \mathrm{ODE}[v^{(k)}](X_0)`. Reflow fits a
new field by flow matching on the straight line between the two ends of that *deterministic*
coupling,

.. math::

    v^{(k+1)} = \arg\min_v E_{t \sim U[0,1]} \big| (X_1 - X_0) - v(t X_1 + (1 - t) X_0, t) \big|^2,

whose flow has the same marginals as the teacher's (Liu et al., theorem 3.3) and straighter
paths (their theorem 3.6), so that few Euler steps suffice: with perfectly straight paths one
step, :math:`X_1 = X_0 + v(X_0, 0)`, is exact.

**Pairs.** At the start of training (:meth:`Reflow.on_train_start`, or on the first ``loss``)
the teacher draws ``pairs`` noise points from a generator seeded by ``pair_seed`` and solves its
ODE (``teacher_method`` with ``teacher_steps``) on them ``pair_batch`` at a time, so memory stays
bounded by the pairs themselves, ``2 x pairs x D`` numbers; every training step then draws a
minibatch of pairs (the data batch only sets its size and is checked). The student works in the
teacher's standardised model space (it copies the teacher's ``shift`` and ``scale``). The teacher
is not part of the student's weights: a saved ``reflow`` run samples and scores without it.

**Initialisation.** Liu et al. start the k+1-rectified flow from the k-rectified one: with a
straight-path flow teacher whose network has the student's layout, the student's network starts
as a copy of the teacher's (``init``), so it begins at the teacher's field and only has to
straighten it. On MNIST the 15-minute student of the default flow-matching run samples at FID*
3.65 in two Euler steps (``flow_matching_mnist_fid_students.json``); a 16-channel student from
random weights, of an older teacher, read 39.8 (``flow_matching_mnist_fid.json``).

**Sampling** is the flow-matching samplers' (default: one Euler step), and the **likelihood** is
flow matching's probability-flow ODE (:mod:`dgm.models.diffusion.probability_flow`).

>>> from dgm.core.spec import DataSpec
>>> m = Reflow(DataSpec((2,)), ReflowConfig(width=16, depth=1, pairs=64, teacher_steps=2))
>>> m.loss(torch.zeros(8, 2))["loss"].shape
torch.Size([])
>>> m.sample(3).shape
torch.Size([3, 2])
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from dgm.core.errors import ConfigError
from dgm.core.model import Batch, Example, unpack
from dgm.core.registry import register
from dgm.core.spec import DataSpec
from dgm.models.diffusion.probability_flow import ODELikelihoodConfig
from dgm.models.flow_matching.model import FlowMatching
from dgm.models.flow_matching.teacher import Teacher, as_teacher, example_teacher, load_teacher
from dgm.samplers.ode import odeint

__all__ = ["Reflow", "ReflowConfig", "ReflowSampleOptions", "TeacherMixin"]

#: reflow's pairs and the teacher's rk4 steps per pair on images above 16 pixels a side
LARGE_IMAGE_PAIRS, LARGE_IMAGE_TEACHER_STEPS = 4000, 5


class TeacherMixin:
    """Holding a teacher outside the student's weights (not a submodule: no parameters, no
    state-dict entries, built lazily on first use)."""

    _teacher: Teacher | None = None

    def teacher_model(self) -> Teacher:
        """The teacher (loaded on first use) in the student's dtype and device, with the student's
        model space set to the teacher's."""
        if self._teacher is None:
            path = self.config.teacher  # type: ignore[attr-defined]
            spec = self.spec  # type: ignore[attr-defined]
            teacher = load_teacher(path, spec) if path else example_teacher(spec)
            object.__setattr__(self, "_teacher", teacher)
        teacher = self._teacher
        assert teacher is not None
        teacher.to(self.device, self.dtype)  # type: ignore[attr-defined]
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.shift.copy_(teacher.shift)  # type: ignore[attr-defined]
        self.scale.copy_(teacher.scale)  # type: ignore[attr-defined]
        return teacher

    def use_teacher(self, teacher: nn.Module) -> None:
        """Use ``teacher`` (a flow-matching, reflow, ddpm or score-sde model on the same data)
        instead of the configured one."""
        object.__setattr__(self, "_teacher", as_teacher(teacher))

    def start_from_teacher(self) -> bool:
        """Copy the teacher's network into the student's as ``init`` asks (see the students'
        configs); ``True`` when it did. A start that cannot be honoured is one
        :class:`ConfigError`; under ``"auto"`` a teacher run whose network does not fit is one
        stderr line and a random start."""
        init, path = self.config.init, self.config.teacher  # type: ignore[attr-defined]
        if init == "random" or (init == "auto" and not path):
            return False
        teacher = self.teacher_model()
        flow = isinstance(teacher, FlowMatching) and teacher.straight_path
        fits = flow and _same_shapes(self.net, teacher.net)  # type: ignore[attr-defined]
        if fits:
            self.net.load_state_dict(teacher.net.state_dict())  # type: ignore[attr-defined]
            return True
        name = self.name  # type: ignore[attr-defined]
        why = (
            "its teacher is not a straight-path flow (a ddpm or score-sde network predicts "
            "noise, a vp-path flow another velocity)"
            if not flow
            else f"its network ({_layout(self)}) differs from its teacher's ({_layout(teacher)})"
        )
        if init == "teacher":
            raise ConfigError(
                f"{name} cannot start from its teacher's weights: {why}; give the student the "
                "teacher's network options or set init=random"
            )
        print(f"dgm: {name} starts from random weights: {why}", file=sys.stderr)
        return False


def _same_shapes(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape for k in sa)


def _layout(model: nn.Module) -> str:
    """The network options that set a student's or teacher's weight shapes, as one phrase."""
    c = model.config  # type: ignore[attr-defined]
    convs = [m for m in model.net.modules() if isinstance(m, nn.Conv2d)]  # type: ignore[attr-defined]
    keys = ("unet_mults", "unet_depth") if convs else ("width", "depth", "fourier_features")
    parts = [f"unet_width {convs[0].out_channels}"] if convs else []
    resolved = {"fourier_features": getattr(model, "fourier_features", 0)}  # None resolved
    parts += [f"{k} {resolved.get(k, getattr(c, k))}" for k in (*keys, "time_dim", "conditional")]
    return ", ".join(parts)


@dataclass
class ReflowConfig(ODELikelihoodConfig):
    """Hyperparameters of :class:`Reflow` (network fields: :class:`NetConfig`; likelihood
    fields: :class:`ODELikelihoodConfig`).

    Attributes:
        teacher: run directory of a trained ``flow-matching``, ``reflow``, ``ddpm`` or
            ``score-sde`` run on the same data (a diffusion run is read on the straight path);
            ``""``: an untrained in-process flow-matching teacher (tests and the conformance
            suite only; see :mod:`dgm.models.flow_matching.teacher`).
        pairs: (noise, teacher sample) pairs generated at the start of training; ``None``:
            4000 on images above 16 pixels a side (about 5 minutes of the 32-channel MNIST
            teacher on two cores, half the recipe's budget), 20000 otherwise.
        pair_batch: pairs generated per teacher solve (bounds the memory of the solve).
        pair_seed: seed of the pairs' noise.
        teacher_method: the teacher's ODE solver: ``"euler"``, ``"heun"``, ``"rk4"`` or
            ``"dopri5"`` (at ``rtol``/``atol``).
        teacher_steps: the fixed-step teacher solver's steps; ``None``: 5 on images above 16
            pixels a side, 20 otherwise.
        init: the student's first weights: ``"teacher"``, a copy of the teacher's network (Liu
            et al. start the k+1-rectified flow from the k-rectified one; the student's network
            options must be the teacher's), ``"random"``, or ``"auto"``: the teacher's when
            ``teacher`` names a straight-path flow run whose network fits, else random (a
            teacher run that does not fit says so on stderr).
    """

    teacher: str = ""
    pairs: int | None = None
    pair_batch: int = 1000
    pair_seed: int = 0
    teacher_method: Literal["euler", "heun", "rk4", "dopri5"] = "rk4"
    teacher_steps: int | None = None
    init: Literal["auto", "teacher", "random"] = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("pairs", "pair_batch", "teacher_steps"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"{key} must be a positive integer, not {getattr(self, key)}")


@dataclass
class ReflowSampleOptions:
    """Options of :meth:`Reflow.sample`.

    Attributes:
        method: the ODE solver: ``"euler"``, ``"heun"``, ``"rk4"`` (``steps`` equal steps; 1, 2
            and 4 network evaluations per step) or adaptive ``"dopri5"``.
        steps: the number of equal steps of a fixed-step solver (reflow's point: 1 or 2).
    """

    method: Literal["euler", "heun", "rk4", "dopri5"] = "euler"
    steps: int = 1


@register
class Reflow(TeacherMixin, FlowMatching):
    """Rectified flow's reflow from a flow-matching teacher (see the module docstring)."""

    name = "reflow"
    family = "flow_matching"
    description = (
        "Reflow (rectified flow, Liu et al. 2023): a straighter flow trained on a flow-matching "
        "teacher's (noise, sample) pairs; 1-2 Euler steps"
    )
    Config = ReflowConfig
    SampleOptions = ReflowSampleOptions
    example = Example(
        spec=DataSpec((2,)),
        config={
            "width": 16,
            "depth": 1,
            "time_dim": 8,
            "pairs": 256,
            "teacher_steps": 4,
            "fourier_features": 0,
        },
        variants=(
            {
                "teacher_method": "euler",
                "trace": "hutchinson",
                "fourier_features": 4,
                "fourier_scale": 2.0,
            },
        ),
    )
    train_defaults = {"steps": 3000, "batch_size": 256, "lr": 1e-3}
    #: on MNIST the few-step students' benchmark recipe: the student starts from its teacher's
    #: weights (``init``; the teacher's 32-channel U-Net) and fine-tunes them at 4e-4 with bf16
    #: products where AMX or ``avx512_bf16`` is, 15 minutes of which the teacher's pairs take up to
    #: half (a 12-minute probe on 4000 pairs of 5 rk4 steps: FID* 5.94 / 4.13 / 3.36 at one / two /
    #: four Euler steps; these 15 minutes: 5.23 / 3.65 / 3.03,
    #: ``flow_matching_mnist_fid_students.json``). There its pairs default to 4000 of 5 rk4 steps
    #: (``pairs``, ``teacher_steps``): 20000 of 20 would not fit half the budget on two cores
    large_image_train_defaults = {"max_minutes": 15, "batch_size": 64, "ema": 0.999,
                                  "schedule": "cosine", "precision": "auto", "lr": 4e-4}  # fmt: skip

    #: reflow trains on the straight lines between its teacher's pairs; its config has no ``path``
    straight_path = True

    def __init__(self, spec: DataSpec, config: ReflowConfig | None = None) -> None:
        super().__init__(spec, config)
        c: ReflowConfig = self.config
        large = spec.is_large_image
        #: ``pairs`` and ``teacher_steps`` with ``None`` resolved for these data
        self.pairs = c.pairs or (LARGE_IMAGE_PAIRS if large else 20_000)
        self.teacher_steps = c.teacher_steps or (LARGE_IMAGE_TEACHER_STEPS if large else 20)
        self._pairs: tuple[Tensor, Tensor] | None = None
        #: the number of teacher pairs made (fewer than ``pairs`` when a time budget cut them)
        self.pairs_drawn = 0

    def on_train_start(self, train_data: Tensor, labels: Tensor | None = None) -> None:
        """Generate the pairs (the data only serves the teacher; the model space is its) and
        start from the teacher's weights (``init``)."""
        self.make_pairs()
        self.start_from_teacher()

    @torch.no_grad()
    def make_pairs(self) -> tuple[Tensor, Tensor]:
        """``(x0, x1)``, each ``(pairs, D)`` in model space: noise and the teacher's sample of it.

        The pairs are drawn in batches of ``pair_batch`` until ``pairs`` or the engine's
        :attr:`~dgm.core.model.Model.setup_deadline` (a share of a time budget), whichever comes
        first; at least one batch. A cut is stderr's one line, and :attr:`pairs_drawn` says how
        many pairs the run trains on.
        """
        teacher = self.teacher_model()
        c: ReflowConfig = self.config
        g = torch.Generator().manual_seed(c.pair_seed)
        x0 = torch.randn(self.pairs, self.num_dims, generator=g, dtype=torch.float64)
        x0 = x0.to(self.device, self.dtype)
        x1 = torch.empty_like(x0)
        drawn = 0
        while drawn < self.pairs and (drawn == 0 or not self.setup_deadline.passed()):
            chunk = x0[drawn : drawn + c.pair_batch]
            x1[drawn : drawn + len(chunk)] = odeint(
                lambda t, f: teacher._field(f, t), chunk, 0.0, 1.0, method=c.teacher_method,
                steps=None if c.teacher_method == "dopri5" else self.teacher_steps,
                rtol=c.rtol, atol=c.atol,
            )  # fmt: skip
            drawn += len(chunk)
        if drawn < self.pairs:
            print(
                f"dgm: reflow drew {drawn} of its {self.pairs} teacher pairs in its share of the "
                f"time budget and trains on those; give more --max-minutes or fewer pairs",
                file=sys.stderr,
            )
        self.pairs_drawn = drawn
        self._pairs = (x0[:drawn], x1[:drawn])
        return self._pairs

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        x, _ = unpack(batch)
        B = self.check_input(x).shape[0]
        x0, x1 = self._pairs if self._pairs is not None else self.make_pairs()
        x0, x1 = x0.to(self.device, self.dtype), x1.to(self.device, self.dtype)
        idx = torch.randint(0, x0.shape[0], (B,), device=x0.device)
        z0 = x0[idx].view(B, *self.event_shape)  # (B, *event)
        z1 = x1[idx].view(B, *self.event_shape)
        t = torch.rand(B, dtype=z0.dtype, device=z0.device)
        tt = t.view(-1, *([1] * (z0.dim() - 1)))
        mse = (self.velocity(tt * z1 + (1 - tt) * z0, t) - (z1 - z0)).square().flatten(1).mean(1)
        return {"loss": mse.mean()}

    @torch.no_grad()
    def sample(
        self,
        n: int,
        y: Tensor | None = None,
        method: str = "euler",
        steps: int = 1,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``n`` samples by ``steps`` steps of ``method`` (default: one Euler step)."""
        return super().sample(n, y, method=method, steps=steps, generator=generator)
