r"""The forward (masking) process of absorbing-state diffusion: a schedule ``alpha(t)``.

Each pixel ``x_i`` of the clean data is kept with probability ``alpha(t)`` and replaced by the mask
token ``m`` with probability ``1 - alpha(t)``, independently (Austin et al. 2021, arXiv:2107.03006,
the absorbing-state D3PM; Shi et al. 2024, MD4, arXiv:2406.04329, eq. 1):

.. math::

    q(z_t \mid x) = \prod_i \big[\alpha(t)\, \delta(z_{t,i} = x_i)
                                 + (1 - \alpha(t))\, \delta(z_{t,i} = m)\big],

with ``alpha(0) = 1`` (nothing masked) decreasing to ``alpha(1) = 0`` (everything masked). The
continuous-time negative ELBO weighs the cross-entropy on the masked pixels at ``t`` by

.. math::

    w(t) = \frac{-\alpha'(t)}{1 - \alpha(t)}

(MD4 eq. 5; Sahoo et al. 2024, MDLM, arXiv:2406.07524, eq. 10). Two schedules:

* ``linear``: ``alpha(t) = 1 - t``, ``w(t) = 1 / t``;
* ``cosine``: ``alpha(t) = 1 - cos(pi/2 (1 - t))``, ``w(t) = (pi/2) tan(pi/2 (1 - t))``
  (MD4 Table 1), which masks fewer pixels early and so spends more sampling steps on the last ones.

>>> s = MaskSchedule("linear")
>>> float(s.alpha(torch.tensor(0.25))), float(s.weight(torch.tensor(0.25)))
(0.75, 4.0)
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from dgm.core.errors import ConfigError

__all__ = ["MaskSchedule", "SCHEDULES"]

SCHEDULES = ("linear", "cosine")


class MaskSchedule:
    """``alpha(t)``, its weight ``w(t)`` and the forward masking of :mod:`this module <.schedule>`.

    Args:
        kind: ``"linear"`` or ``"cosine"``.
    """

    def __init__(self, kind: Literal["linear", "cosine"] = "linear") -> None:
        if kind not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, not {kind!r}")
        self.kind = kind

    def alpha(self, t: Tensor) -> Tensor:
        """Probability that a pixel is still unmasked at time ``t`` in ``[0, 1]``."""
        if self.kind == "linear":
            return 1.0 - t
        return 1.0 - torch.cos(0.5 * math.pi * (1.0 - t))

    def weight(self, t: Tensor) -> Tensor:
        """``-alpha'(t) / (1 - alpha(t))``, the weight of the masked cross-entropy at ``t > 0``."""
        if self.kind == "linear":
            return 1.0 / t
        return 0.5 * math.pi * torch.tan(0.5 * math.pi * (1.0 - t))

    def time_of(self, frac: Tensor) -> Tensor:
        """The time ``t`` at which a fraction ``frac`` of the pixels is masked on average: the
        inverse of ``1 - alpha(t)``."""
        frac = frac.clamp(0.0, 1.0)
        if self.kind == "linear":
            return frac
        return 1.0 - torch.acos(frac) * (2.0 / math.pi)

    def mask(self, x: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A draw of which pixels of ``x`` (B, ...) are masked at times ``t`` (B,): bool, same shape.

        Each pixel independently with probability ``1 - alpha(t)``."""
        keep = self.alpha(t).view(-1, *([1] * (x.dim() - 1)))  # (B, 1, ...)
        u = torch.rand(x.shape, generator=generator, dtype=keep.dtype, device=x.device)
        return u >= keep

    def masked_counts(self, total: Tensor, steps: int) -> Tensor:
        """How many of ``total`` (B,) masked pixels stay masked after each of ``steps`` reverse
        steps on the grid ``t_k = 1 - k / steps``: ``(steps + 1, B)`` long, from ``total`` down to
        0, non-increasing: ``round(total * (1 - alpha(t_k)))``.

        With the linear schedule and ``steps = total`` it unmasks exactly one pixel per step."""
        t = 1.0 - torch.arange(steps + 1, dtype=torch.float64) / steps  # (steps + 1,)
        frac = (1.0 - self.alpha(t)).clamp(0.0, 1.0)  # 1 .. 0
        counts = torch.round(frac[:, None] * total.double().cpu()[None, :]).long()
        counts[0], counts[-1] = total.cpu(), 0
        return torch.cummin(counts, dim=0).values.to(total.device)
