r"""The teacher of a few-step model: a trained ``flow-matching``, ``reflow``, ``ddpm`` or
``score-sde`` run, read safely.

A student names its teacher by the run directory of a ``dgm train`` run (its ``teacher`` option).
The run's ``config.yaml`` (YAML, safe-loaded) names the model and its hyperparameters, and its
final weights ``model.safetensors`` are loaded into a model built on the student's data spec;
nothing is unpickled. The teacher was trained on the same data and preprocessing as the
student (a different event shape is one :class:`~dgm.core.errors.CheckpointError`), and it works
in the same standardised model space: the student copies the teacher's ``shift`` and ``scale``.

With no teacher run (``teacher=""``) :func:`example_teacher` builds an **untrained**
``flow-matching`` model from its registry example config, with a fixed seed, so that a student
can be built, trained one step and checked by the conformance suite without a run on disk; its
pairs are noise, so a student trained on them learns nothing useful.

**A diffusion teacher** (``ddpm``, ``score-sde``) is read on flow matching's straight path by
:class:`DiffusionTeacher`. Its marginals are those of :math:`x = a x_1 + \sigma \epsilon` (``ddpm``:
:math:`a^2 = \bar\alpha`, ``score-sde``'s VP SDE: :math:`a = m_s`, both with
:math:`\sigma^2 = 1 - a^2`), and a point of the straight path :math:`z = t x_1 + (1 - t)\epsilon`
is that point scaled, :math:`x = (a + \sigma) z`, at the noise level where
:math:`a / (a + \sigma) = t`, i.e. :math:`\bar\alpha = r^2 / (1 + r^2)` with
:math:`r = t / (1 - t)`. Along the probability-flow ODE the noise prediction :math:`\hat\epsilon`
and the data prediction :math:`\hat x_1 = (x - \sigma \hat\epsilon) / a` are what moves (Song,
Meng & Ermon 2021, DDIM, eq. 14; Karras et al. 2022, eq. 4), and in straight-path coordinates the
ODE is

.. math::

    \frac{dz}{dt} = \hat x_1 - \hat\epsilon = \frac{z - \hat\epsilon(x, s(t))}{t},

the same velocity a flow-matching model learns, so a student distils a diffusion teacher as it
distils a flow. The noise level is found in closed form for the VP SDE (a quadratic in ``s``) and
by interpolating ``log abar`` between ``ddpm``'s integer steps (its network takes fractional
steps); outside the teacher's range (``t`` below its noisiest level, about 0.007 for the default
VP SDE, or above its cleanest) the level is clamped to the range's end and the velocity is
:math:`\hat x_1 - \hat\epsilon` at that level.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from torch import Tensor, nn

from dgm.core.config import build_config, translate_renamed
from dgm.core.errors import CheckpointError, ConfigError
from dgm.core.io import load_tensors
from dgm.core.registry import get
from dgm.core.spec import DataSpec
from dgm.models.diffusion.ddpm import DDPM
from dgm.models.diffusion.sde import ScoreSDE
from dgm.models.flow_matching.model import FlowMatching

__all__ = ["DiffusionTeacher", "Teacher", "as_teacher", "load_teacher", "example_teacher"]

#: the models a run directory may hold to teach a few-step student
TEACHERS = (FlowMatching, DDPM, ScoreSDE)


class DiffusionTeacher(nn.Module):
    """A ``ddpm`` or ``score-sde`` model read as a flow on the straight path (module docstring):
    :meth:`velocity` and :meth:`_field` as a :class:`FlowMatching` teacher has them."""

    def __init__(self, model: DDPM | ScoreSDE) -> None:
        super().__init__()
        self.model = model
        self._log_abar: Tensor | None = None  # ddpm's log alpha-bar table, read once per device

    # the student reads these as it reads a flow-matching teacher's
    @property
    def conditional(self) -> bool:
        return self.model.conditional

    @property
    def shift(self) -> Tensor:
        return self.model.shift

    @property
    def scale(self) -> Tensor:
        return self.model.scale

    def level(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """For straight-path times ``t (B,)``: the teacher's time input ``s`` (``ddpm``: a
        fractional step; ``score-sde``: its time in ``[t_eps, 1]``), ``a`` and ``sigma`` there."""
        t64 = t.double().clamp(1e-12, 1 - 1e-12)
        r2 = (t64 / (1 - t64)).square()
        log_abar = (r2 / (1 + r2)).log()  # the level where a / (a + sigma) = t
        m = self.model
        if isinstance(m, DDPM):
            table = self._log_abar_table(t64.device)  # (T,) float64, decreasing
            # steps i with table[i] >= log_abar > table[i + 1]: interpolate linearly between them
            target = log_abar.clamp(float(table[-1]), float(table[0]))
            i = torch.searchsorted(-table, -target).clamp(1, table.numel() - 1)  # (B,)
            lo, hi = table[i - 1], table[i]
            frac = ((lo - target) / (lo - hi)).clamp(0, 1)
            s = (i - 1).double() + frac
            la = lo + frac * (hi - lo)
        else:
            sde, t_eps = m.sde, m.config.t_eps
            half_delta = 0.5 * (sde.beta_max - sde.beta_min)
            # log m_s = -(half_delta / 2) s^2 - (beta_min / 2) s = log_abar / 2: a quadratic in s
            b, c = 0.5 * sde.beta_min, 0.5 * log_abar
            s = (-b + (b * b - 2 * half_delta * c).sqrt()) / half_delta
            s = s.clamp(t_eps, 1.0)
            la = 2 * sde.log_mean_coeff(s)
        a = (0.5 * la).exp()
        sigma = (-torch.expm1(la)).sqrt()
        return s, a, sigma

    def _log_abar_table(self, device: torch.device) -> Tensor:
        if self._log_abar is None or self._log_abar.device != device:
            self._log_abar = self.model.schedule.alphas_cumprod.double().log().to(device)
        return self._log_abar

    def velocity(self, z: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """``dz/dt = x1_hat - eps_hat`` at model-space ``z (B, *event)`` and straight-path times
        ``t (B,)`` (noise at 0, data at 1), given the teacher's network labels ``y``."""
        s, a, sigma = self.level(t)
        shape = (-1, *([1] * (z.dim() - 1)))
        a, sigma = a.to(z.dtype).view(shape), sigma.to(z.dtype).view(shape)
        x = (a + sigma) * z
        args = (y,) if self.conditional else ()
        eps = self.model.eps(x, s.to(z.dtype), *args)
        return (x - sigma * eps) / a - eps

    def _field(self, flat: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """:meth:`velocity` on flat states ``(B, D)`` at a 0-dim time; a conditional teacher
        without labels runs its unconditional branch."""
        B = flat.shape[0]
        labels = self.model.net_labels(y, B)
        z = flat.view(B, *self.model.event_shape)
        return self.velocity(z, t.to(flat).expand(B), labels).reshape(B, -1)


#: what a student holds as its teacher
Teacher = FlowMatching | DiffusionTeacher


def as_teacher(model: nn.Module) -> Teacher:
    """``model`` as a student's teacher: a flow-matching model as it is, a diffusion model read on
    the straight path; anything else is one :class:`ConfigError`."""
    if isinstance(model, FlowMatching | DiffusionTeacher):
        return model.eval()
    if isinstance(model, DDPM | ScoreSDE):
        return DiffusionTeacher(model.eval()).eval()
    raise ConfigError(
        "the teacher must be a flow-matching, reflow, ddpm or score-sde model, not "
        f"{type(model).__name__}"
    )


def load_teacher(path: str | Path, spec: DataSpec) -> Teacher:
    """The teacher of the run directory ``path`` (a flow-matching or reflow model, or a diffusion
    model read on the straight path), built for data ``spec``, in eval mode with its final weights
    (float32 on the CPU; move it with ``.to``)."""
    path = Path(path)
    cfg_path = path / "config.yaml"
    if not cfg_path.is_file():
        raise CheckpointError(
            f"teacher {str(path)!r} is not a dgm run directory (no config.yaml); give the --out "
            "of a finished `dgm train flow-matching` (or reflow, ddpm, score-sde) run"
        )
    try:
        cfg = yaml.safe_load(cfg_path.read_text())
        name, model_cfg = cfg["model"], cfg["model_config"]
    except (yaml.YAMLError, UnicodeDecodeError, KeyError, TypeError):
        raise CheckpointError(
            f"{cfg_path} is not a dgm run config; the teacher run is corrupt"
        ) from None
    cls = get(name)
    if not issubclass(cls, TEACHERS):
        raise ConfigError(
            f"teacher {str(path)!r} is a {name!r} run; the teacher must be a flow-matching, "
            "reflow, ddpm or score-sde run"
        )
    shape = tuple((cfg.get("spec") or {}).get("event_shape") or ())
    if shape and shape != tuple(spec.event_shape):
        raise CheckpointError(
            f"teacher {str(path)!r} was trained on data of shape {shape}, but the student's data "
            f"has shape {tuple(spec.event_shape)}; train both on the same data"
        )
    config = build_config(cls.Config, translate_renamed(cls.Config, dict(model_cfg)))
    teacher = cls(spec, config)
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(
            f"teacher {str(path)!r} has no final weights (model.safetensors); let its training "
            "finish first"
        )
    try:
        teacher.load_state_dict(load_tensors(weights))
    except RuntimeError:
        raise CheckpointError(
            f"the weights in {weights} do not fit model {name!r} as configured; the run is corrupt"
        ) from None
    return as_teacher(teacher)


def example_teacher(spec: DataSpec, seed: int = 0) -> FlowMatching:
    """An untrained ``flow-matching`` model from its example config, seeded (see the module
    docstring: for tests and the conformance suite only)."""
    config = build_config(FlowMatching.Config, dict(FlowMatching.example.config))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        teacher = FlowMatching(spec, config)
    return teacher.eval()
