"""Analytic 2-D densities with exact ``log_prob`` and exact samplers.

These are the toy problems of the normalizing-flow literature (Grathwohl et al., "FFJORD", ICLR 2019;
Durkan et al., "Neural Spline Flows", NeurIPS 2019), defined here so that the density is known in
closed form: a model's KL divergence from the truth and its grid integral can then be measured, not
guessed.

=============  ==================================================================================
name           definition
=============  ==================================================================================
8gaussians     8 equal Gaussians, centres ``2 sqrt(2) (cos k pi/4, sin k pi/4)``, std ``1/(2 sqrt 2)``
checkerboard   uniform on the 8 dark cells of a 4x4 board of 2x2 cells on ``[-4, 4]^2``
rings          4 equal rings, radii 0.75, 1.5, 2.25, 3, blurred by isotropic noise of std 0.08
ring8          8 equal Gaussians on the circle of radius 2, std 0.02
grid25         25 equal Gaussians at ``{-4, -2, 0, 2, 4}^2``, std 0.05
moons          scikit-learn's two moons, noise 0.1, scaled by 2 and shifted by (-1, -0.2); no
               closed-form density (``exact_log_prob = False``)
=============  ==================================================================================

>>> d = get_density("ring8")
>>> x = d.sample(4, generator=torch.Generator().manual_seed(0))
>>> x.shape, d.log_prob(x).shape
(torch.Size([4, 2]), torch.Size([4]))
"""

from __future__ import annotations

import difflib
import math

import torch
from torch import Tensor

from dgm.core.errors import DataError

__all__ = [
    "Checkerboard",
    "Density2D",
    "EightGaussians",
    "GaussianMixture2D",
    "Grid25",
    "Moons",
    "Ring8",
    "Rings",
    "density_names",
    "get_density",
]


def _half_width(extent: float) -> float:
    """Round a half-width up to a multiple of 0.5, so plot boxes have tidy limits."""
    return math.ceil(2.0 * extent - 1e-9) / 2.0


class Density2D:
    """A probability density on the plane with an exact sampler.

    Attributes:
        name: registry name.
        description: one line for ``dgm list``.
        exact_log_prob: ``log_prob`` is the exact log-density (False when there is no closed form).
        bounds: ``(xmin, xmax, ymin, ymax)``, a box holding all but a negligible part (< 1e-6) of
            the mass, for grid plots and grid integrals.
        modes, mode_std: ``(K, 2)`` centres and the common std of separated modes, for the
            mode-coverage metric (:func:`dgm.eval.mode_coverage`); ``None`` for a density that is
            not made of separated modes.
    """

    name: str = ""
    description: str = ""
    exact_log_prob: bool = True
    bounds: tuple[float, float, float, float] = (-4.0, 4.0, -4.0, 4.0)
    modes: Tensor | None = None
    mode_std: float | None = None

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-density in nats of points ``x`` of shape ``(B, 2)``; returns ``(B,)`` in the
        dtype of ``x`` (float32 or float64)."""
        raise NotImplementedError

    def sample(
        self, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """Draw ``n`` exact samples, shape ``(n, 2)``. The draw is made in float64 on the device of
        ``generator`` (CPU by default) and returned in ``dtype``."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise DataError(f"number of samples must be a non-negative integer, not {n!r}")
        device = generator.device if generator is not None else torch.device("cpu")
        return self._sample(n, generator, device).to(dtype)

    def _sample(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        raise NotImplementedError

    def _check(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise DataError(f"{self.name} log_prob needs a floating-point tensor of shape (B, 2)")
        if x.ndim != 2 or x.shape[1] != 2:
            raise DataError(
                f"{self.name} log_prob needs points of shape (B, 2), not {tuple(x.shape)}"
            )
        return x

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class GaussianMixture2D(Density2D):
    """Equal-weight mixture of isotropic Gaussians with a common std.

    ``p(x) = (1/K) sum_k N(x; mu_k, sigma^2 I)``, so
    ``log p(x) = logsumexp_k(-|x - mu_k|^2 / (2 sigma^2)) - log(2 pi sigma^2) - log K``,
    computed with ``logsumexp`` so that it stays finite in float32 far from every mode.

    Attributes:
        modes: ``(K, 2)`` float64 centres ``mu_k``, for mode-coverage metrics.
        mode_std: the common standard deviation ``sigma``.
    """

    def __init__(self, modes: Tensor, mode_std: float) -> None:
        self.modes = torch.as_tensor(modes, dtype=torch.float64)  # (K, 2)
        self.mode_std = float(mode_std)
        half = _half_width(float(self.modes.abs().max()) + 6.0 * self.mode_std)
        self.bounds = (-half, half, -half, half)

    def log_prob(self, x: Tensor) -> Tensor:
        x = self._check(x)
        mu = self.modes.to(x.device, x.dtype)  # (K, 2)
        sq = (x[:, None, :] - mu[None]).pow(2).sum(-1)  # (B, K)
        var = self.mode_std**2
        norm = math.log(2.0 * math.pi * var) + math.log(mu.shape[0])
        return torch.logsumexp(-0.5 * sq / var, dim=1) - norm  # (B,)

    def _sample(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        k = torch.randint(self.modes.shape[0], (n,), generator=generator, device=device)  # (n,)
        eps = torch.randn(n, 2, generator=generator, device=device, dtype=torch.float64)
        return self.modes.to(device)[k] + self.mode_std * eps  # (n, 2)


def _circle(num: int, radius: float) -> Tensor:
    angles = 2.0 * math.pi * torch.arange(num, dtype=torch.float64) / num
    return radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)  # (num, 2)


class EightGaussians(GaussianMixture2D):
    """FFJORD's ``8gaussians``: 8 Gaussians at angles ``k pi / 4`` on the circle of radius
    ``2 sqrt(2)``, each with std ``1 / (2 sqrt(2))``.

    FFJORD draws centres at radius 4 with std 0.5 and divides by 1.414; we divide by ``sqrt(2)``
    exactly so that the definition is clean (the two differ by 0.01%).
    """

    name = "8gaussians"
    description = "8 Gaussians on a circle of radius 2.83, std 0.35 (FFJORD's 8gaussians)"

    def __init__(self, radius: float = 2.0 * math.sqrt(2.0), std: float = 0.5 / math.sqrt(2.0)):
        super().__init__(_circle(8, radius), std)


class Ring8(GaussianMixture2D):
    """8 narrow Gaussians at angles ``k pi / 4`` on the circle of radius 2, std 0.02: a test of
    mode coverage (a model that drops a mode is obvious)."""

    name = "ring8"
    description = "8 narrow Gaussians on a circle of radius 2, std 0.02 (mode coverage)"

    def __init__(self, radius: float = 2.0, std: float = 0.02) -> None:
        super().__init__(_circle(8, radius), std)


class Grid25(GaussianMixture2D):
    """25 narrow Gaussians on the 5x5 grid ``{-4, -2, 0, 2, 4}^2``, std 0.05."""

    name = "grid25"
    description = "25 narrow Gaussians on a 5x5 grid with spacing 2, std 0.05 (mode coverage)"

    def __init__(self, spacing: float = 2.0, std: float = 0.05) -> None:
        c = spacing * torch.arange(-2, 3, dtype=torch.float64)  # (5,)
        gy, gx = torch.meshgrid(c, c, indexing="ij")
        super().__init__(torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1), std)


class Checkerboard(Density2D):
    """FFJORD's ``checkerboard``: uniform on 8 of the 16 cells of a 4x4 board on ``[-4, 4)^2``.

    Cells have side 2; cell ``(i, j) = (floor(x / 2), floor(y / 2))``, ``i, j in {-2, ..., 1}``,
    is dark when ``i + j`` is even. The dark area is ``8 * 4 = 32``, so
    ``log p(x) = -log 32`` on dark cells and ``-inf`` elsewhere (the density is exactly zero
    there). True samples always lie on dark cells, so ``KL(true || model)`` stays finite.
    """

    name = "checkerboard"
    description = "uniform on the 8 dark cells of a 4x4 checkerboard on [-4, 4]^2"
    bounds = (-4.0, 4.0, -4.0, 4.0)
    #: side of one cell and number of cells per side
    cell, cells = 2.0, 4

    def log_prob(self, x: Tensor) -> Tensor:
        x = self._check(x)
        half = self.cell * self.cells / 2
        inside = ((x >= -half) & (x < half)).all(dim=1)  # (B,)
        ij = torch.floor(x / self.cell)  # (B, 2)
        dark = torch.remainder(ij.sum(dim=1), 2.0) == 0  # (B,)
        area = (self.cells**2 / 2) * self.cell**2
        inf = torch.full_like(x[:, 0], -math.inf)
        return torch.where(inside & dark, torch.full_like(inf, -math.log(area)), inf)

    def _sample(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        # FFJORD's construction in units of one cell: column i = floor(u) picks dark rows of its
        # parity; every dark cell has probability 1/8 and the point is uniform inside it.
        kw = {"generator": generator, "device": device, "dtype": torch.float64}
        u = torch.rand(n, **kw) * 4 - 2  # (n,) in [-2, 2)
        row = torch.rand(n, **kw) - 2 * torch.randint(2, (n,), generator=generator, device=device)
        v = row + torch.remainder(torch.floor(u), 2.0)
        return self.cell * torch.stack([u, v], dim=1)  # (n, 2)


class Rings(Density2D):
    """FFJORD's ``rings``: a point uniform on one of 4 equally likely circles, radii
    ``r_k = 0.75, 1.5, 2.25, 3``, plus isotropic Gaussian noise of std ``sigma = 0.08``.

    Averaging ``N(x; r_k (cos t, sin t), sigma^2 I)`` over the angle ``t`` gives, with
    ``rho = |x|`` and the modified Bessel function ``I_0``,
    ``p_k(x) = exp(-(rho^2 + r_k^2) / (2 sigma^2)) I_0(rho r_k / sigma^2) / (2 pi sigma^2)``.
    With the scaled ``i0e(z) = exp(-z) I_0(z)`` this is
    ``log p_k = -(rho - r_k)^2 / (2 sigma^2) + log i0e(rho r_k / sigma^2) - log(2 pi sigma^2)``,
    finite and exact in float32. (FFJORD spaces the angles evenly; we draw them uniformly so
    that the samples are i.i.d.)
    """

    name = "rings"
    description = "4 concentric rings, radii 0.75 to 3, blurred by Gaussian noise of std 0.08"

    def __init__(self, radii: tuple[float, ...] = (0.75, 1.5, 2.25, 3.0), std: float = 0.08):
        self.radii = torch.tensor(radii, dtype=torch.float64)  # (K,)
        self.std = float(std)
        half = _half_width(float(self.radii.max()) + 6.0 * self.std)
        self.bounds = (-half, half, -half, half)

    def log_prob(self, x: Tensor) -> Tensor:
        x = self._check(x)
        r = self.radii.to(x.device, x.dtype)  # (K,)
        # clamp keeps the gradient finite at the origin, where it is zero by symmetry
        rho = x.pow(2).sum(dim=1).clamp_min(1e-30).sqrt()[:, None]  # (B, 1)
        var = self.std**2
        terms = -0.5 * (rho - r).pow(2) / var + torch.log(torch.special.i0e(rho * r / var))
        norm = math.log(2.0 * math.pi * var) + math.log(r.shape[0])
        return torch.logsumexp(terms, dim=1) - norm  # (B,)

    def _sample(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        kw = {"generator": generator, "device": device, "dtype": torch.float64}
        k = torch.randint(self.radii.shape[0], (n,), generator=generator, device=device)
        t = 2.0 * math.pi * torch.rand(n, **kw)  # (n,)
        r = self.radii.to(device)[k]  # (n,)
        centre = r[:, None] * torch.stack([torch.cos(t), torch.sin(t)], dim=1)  # (n, 2)
        return centre + self.std * torch.randn(n, 2, **kw)


class Moons(Density2D):
    """Two interleaving half circles (scikit-learn's ``make_moons(noise=0.1)``), scaled by 2 and
    shifted by ``(-1, -0.2)`` as in FFJORD.

    Each point picks a moon with probability 1/2 and an angle ``t ~ U[0, pi]``: the upper moon is
    ``(cos t, sin t)``, the lower ``(1 - cos t, 0.5 - sin t)``; Gaussian noise of std 0.1 is added
    before scaling. The density is an integral over ``t`` with no closed form, so ``log_prob``
    raises and only sample-based metrics apply.
    """

    name = "moons"
    description = "two interleaving moons with noise 0.1 (sampling only: no closed-form density)"
    exact_log_prob = False
    bounds = (-4.5, 4.5, -2.5, 3.0)
    noise = 0.1

    def log_prob(self, x: Tensor) -> Tensor:
        raise DataError(
            "moons has no closed-form density (it is a continuous mixture along two arcs); "
            "judge models on it with sample-based metrics such as c2st or mmd"
        )

    def _sample(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        kw = {"generator": generator, "device": device, "dtype": torch.float64}
        lower = torch.randint(2, (n,), generator=generator, device=device).bool()  # (n,)
        t = math.pi * torch.rand(n, **kw)
        upper_pts = torch.stack([torch.cos(t), torch.sin(t)], dim=1)  # (n, 2)
        lower_pts = torch.stack([1.0 - torch.cos(t), 0.5 - torch.sin(t)], dim=1)  # (n, 2)
        pts = torch.where(lower[:, None], lower_pts, upper_pts) + self.noise * torch.randn(
            n, 2, **kw
        )
        return 2.0 * pts + torch.tensor([-1.0, -0.2], dtype=torch.float64, device=device)


_DENSITIES: dict[str, type[Density2D]] = {
    cls.name: cls for cls in (EightGaussians, Checkerboard, Rings, Ring8, Grid25, Moons)
}


def density_names() -> list[str]:
    """Names of the analytic 2-D densities."""
    return list(_DENSITIES)


def get_density(name: str) -> Density2D:
    """A new instance of the analytic 2-D density called ``name`` (``"8gaussians"``, ...)."""
    if name not in _DENSITIES:
        close = difflib.get_close_matches(name, list(_DENSITIES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(
            f"unknown 2-D density {name!r}{hint}; the densities are: {', '.join(_DENSITIES)}"
        )
    return _DENSITIES[name]()
