r"""Noise schedules: the forward process, its closed-form marginals and the reverse steps.

A schedule owns the noise process and nothing else (diffusers' ``DDPMScheduler`` idea): the network
predicts, the schedule turns predictions into steps. Two objects live here.

:class:`DiscreteSchedule` (Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models",
NeurIPS 2020, arXiv:2006.11239). With ``beta_1..beta_T``, ``alpha_t = 1 - beta_t`` and
``abar_t = prod_{s<=t} alpha_s``, the forward process and its closed form are

.. math::

    q(x_t \mid x_{t-1}) = N(\sqrt{\alpha_t} x_{t-1}, \beta_t I), \qquad
    q(x_t \mid x_0) = N(\sqrt{\bar\alpha_t} x_0, (1 - \bar\alpha_t) I),

and the posterior is ``q(x_{t-1} | x_t, x_0) = N(mu~_t, beta~_t I)`` with
``mu~_t = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x_0 + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t)
x_t`` and ``beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t`` (Ho et al. eq. 6-7). A network
predicting the noise ``eps`` gives ``x0^ = (x_t - sqrt(1 - abar_t) eps^) / sqrt(abar_t)`` and the
score ``grad log q(x_t) = -eps / sqrt(1 - abar_t)`` (Tweedie).

:meth:`DiscreteSchedule.step` is the DDIM update (Song, Meng & Ermon, "Denoising Diffusion Implicit
Models", ICLR 2021, arXiv:2010.02502, eq. 12) from ``t`` to any earlier ``s``:

.. math::

    x_s = \sqrt{\bar\alpha_s}\, \hat x_0 + \sqrt{1 - \bar\alpha_s - \sigma^2}\, \hat\epsilon
          + \sigma z, \quad
    \sigma = \eta \sqrt{(1-\bar\alpha_s)/(1-\bar\alpha_t)} \sqrt{1 - \bar\alpha_t/\bar\alpha_s}.

With ``s = t - 1`` and ``eta = 1`` it *is* DDPM's ancestral step with variance ``beta~_t``; with
``eta = 0`` it is deterministic. Index convention: arrays are 0-based, index ``i`` is the paper's
``t = i + 1``, and ``s = -1`` means ``abar = 1`` (the data).

Schedules: ``linear`` (Ho et al.: ``beta`` from 1e-4 to 0.02 over 1000 steps; for another ``T`` the
endpoints are scaled by ``1000 / T`` as in Nichol & Dhariwal 2021 and clipped at 0.999) and
``cosine`` (Nichol & Dhariwal, "Improved Denoising Diffusion Probabilistic Models", ICML 2021,
eq. 17: ``abar_t = f(t) / f(0)``, ``f(t) = cos^2((t/T + s) / (1 + s) pi / 2)``, ``s = 0.008``,
``beta_t`` clipped at 0.999).

:class:`VPSDE` (Song et al., "Score-Based Generative Modeling through Stochastic Differential
Equations", ICLR 2021, arXiv:2011.13456): ``dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw`` with
``beta(t) = beta_min + t (beta_max - beta_min)`` on ``t in [0, 1]``, the continuous limit of the
discrete schedule with ``beta_i = beta(i / N) / N``; ``x_t | x_0 ~ N(m_t x_0, s_t^2 I)`` with
``log m_t = -t^2 (beta_max - beta_min) / 4 - t beta_min / 2`` and ``s_t^2 = 1 - m_t^2``.
Everything is computed in float64 and cast to the input's dtype.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from dgm.core.errors import ConfigError

__all__ = [
    "DiscreteSchedule",
    "VPSDE",
    "eps_to_score",
    "geometric_sigmas",
    "make_betas",
    "score_to_eps",
]

D64 = torch.float64


def eps_to_score(eps: Tensor, std: Tensor | float) -> Tensor:
    """Score of the noised marginal from a noise prediction: ``grad log q = -eps / std``."""
    return -eps / std


def score_to_eps(score: Tensor, std: Tensor | float) -> Tensor:
    """Noise prediction from a score: ``eps = -std * score`` (inverse of :func:`eps_to_score`)."""
    return -score * std


def make_betas(
    kind: Literal["linear", "cosine"],
    timesteps: int,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
) -> Tensor:
    """The variances ``beta_1..beta_T`` of a named schedule, ``(T,)`` float64 (see module doc)."""
    if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 2:
        raise ConfigError(f"timesteps must be an integer >= 2, not {timesteps!r}")
    T = timesteps
    if kind == "linear":
        if not 0 < beta_start < beta_end < 1:
            raise ConfigError(
                f"the linear schedule needs 0 < beta_start < beta_end < 1, "
                f"not {beta_start} and {beta_end}"
            )
        scale = 1000.0 / T
        betas = torch.linspace(scale * beta_start, scale * beta_end, T, dtype=D64)
        return betas.clamp(max=0.999)
    if kind == "cosine":
        s = 0.008
        steps = torch.arange(T + 1, dtype=D64) / T  # (T+1,)
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        abar = f / f[0]
        return (1 - abar[1:] / abar[:-1]).clamp(min=0.0, max=0.999)
    raise ConfigError(f"schedule must be 'linear' or 'cosine', not {kind!r}")


def _gather(values: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """``values[t]`` shaped ``(B, 1, ..., 1)`` to broadcast against ``like (B, *event)``."""
    out = values.to(like.device)[t.long().to(like.device)]  # (B,)
    return out.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


class DiscreteSchedule:
    """A discrete-time Gaussian diffusion ``beta_1..beta_T`` (see the module docstring).

    Args:
        betas: ``(T,)`` variances in ``(0, 1)``, e.g. from :func:`make_betas`.
    """

    def __init__(self, betas: Tensor) -> None:
        betas = torch.as_tensor(betas, dtype=D64).flatten()
        if betas.numel() < 2 or not ((betas > 0) & (betas < 1)).all():
            raise ConfigError("a schedule needs at least 2 betas, each in (0, 1)")
        self.betas = betas  # (T,)
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)  # abar_t, (T,)
        # abar_{t-1} with abar_0 = 1 (index -1 is the data)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=D64), self.alphas_cumprod[:-1]])
        self.posterior_variance = (
            betas * (1 - self.alphas_cumprod_prev) / (1 - self.alphas_cumprod)
        )  # beta~_t, 0 at t = 1

    @classmethod
    def named(
        cls, kind: str, timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02
    ) -> DiscreteSchedule:
        return cls(make_betas(kind, timesteps, beta_start, beta_end))  # type: ignore[arg-type]

    @property
    def timesteps(self) -> int:
        return int(self.betas.numel())

    # ---------------------------------------------------------------- forward process
    def marginal(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean ``sqrt(abar_t) x0`` and variance ``1 - abar_t`` of ``q(x_t | x_0)``."""
        abar = _gather(self.alphas_cumprod, t, x0)
        return abar.sqrt() * x0, (1 - abar).expand_as(x0)

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """A draw of ``x_t ~ q(x_t | x_0)``: ``sqrt(abar_t) x0 + sqrt(1 - abar_t) noise``."""
        abar = _gather(self.alphas_cumprod, t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def one_step(self, x_prev: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """One forward step ``x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) noise``."""
        beta = _gather(self.betas, t, x_prev)
        return (1 - beta).sqrt() * x_prev + beta.sqrt() * noise

    def posterior(self, x0: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance ``beta~_t`` of ``q(x_{t-1} | x_t, x_0)`` (Ho et al. eq. 7)."""
        beta = _gather(self.betas, t, xt)
        abar = _gather(self.alphas_cumprod, t, xt)
        abar_prev = _gather(self.alphas_cumprod_prev, t, xt)
        c0 = abar_prev.sqrt() * beta / (1 - abar)
        ct = (1 - beta).sqrt() * (1 - abar_prev) / (1 - abar)
        var = _gather(self.posterior_variance, t, xt).expand_as(xt)
        return c0 * x0 + ct * xt, var

    # ---------------------------------------------------------------- parameterisations
    def std(self, t: Tensor, like: Tensor) -> Tensor:
        """``sqrt(1 - abar_t)`` broadcastable against ``like``."""
        return (1 - _gather(self.alphas_cumprod, t, like)).sqrt()

    def predict_x0(self, xt: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """``x0^ = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``."""
        abar = _gather(self.alphas_cumprod, t, xt)
        return (xt - (1 - abar).sqrt() * eps) / abar.sqrt()

    def eps_from_x0(self, xt: Tensor, x0: Tensor, t: Tensor) -> Tensor:
        """The noise that maps ``x0`` to ``x_t``: ``(x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)``."""
        abar = _gather(self.alphas_cumprod, t, xt)
        return (xt - abar.sqrt() * x0) / (1 - abar).sqrt()

    # ---------------------------------------------------------------- reverse steps
    def step(
        self,
        eps: Tensor,
        t: int,
        xt: Tensor,
        *,
        prev_t: int | None = None,
        eta: float = 1.0,
        clip: float | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """One reverse step from index ``t`` to ``prev_t`` (default ``t - 1``) given ``eps``.

        The DDIM update of the module docstring: ``prev_t = t - 1, eta = 1`` is DDPM's ancestral
        step (posterior variance ``beta~_t``); ``eta = 0`` is deterministic DDIM. ``prev_t = -1``
        returns ``x0^``. ``clip`` clamps ``x0^`` to ``[-clip, clip]`` (images in [-1, 1]); the
        noise direction is then recomputed from the clipped ``x0^``.
        """
        prev_t = t - 1 if prev_t is None else prev_t
        if not -1 <= prev_t < t < self.timesteps:
            raise ConfigError(
                f"a reverse step goes from t to an earlier index in -1..t-1, not {t} -> {prev_t}"
            )
        if eta < 0:
            raise ConfigError(f"eta must be >= 0, not {eta}")
        abar_t = float(self.alphas_cumprod[t])
        abar_s = 1.0 if prev_t < 0 else float(self.alphas_cumprod[prev_t])
        # scalar coefficients, then two fused tensor updates (no per-step tensors but x0 and x)
        x0 = torch.add(xt, eps, alpha=-math.sqrt(1 - abar_t)).div_(math.sqrt(abar_t))
        if clip is not None:
            x0.clamp_(-clip, clip)
        if prev_t < 0:
            return x0
        sigma2 = eta**2 * (1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s)
        c_eps = math.sqrt(max(1 - abar_s - sigma2, 0.0))
        if clip is None:  # x = sqrt(abar_s) x0 + c_eps eps
            x = torch.add(x0.mul_(math.sqrt(abar_s)), eps, alpha=c_eps)
        else:  # the noise direction of the clipped x0: eps = (x_t - sqrt(abar_t) x0) / std_t
            k = c_eps / math.sqrt(1 - abar_t)
            x = torch.add(x0.mul_(math.sqrt(abar_s) - k * math.sqrt(abar_t)), xt, alpha=k)
        if sigma2 > 0:
            z = torch.randn(xt.shape, generator=generator, dtype=xt.dtype, device=xt.device)
            x = x + math.sqrt(sigma2) * z
        return x

    def ancestral_step(
        self,
        eps: Tensor,
        t: int,
        xt: Tensor,
        *,
        variance: str = "small",
        clip: float | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """DDPM's ancestral step ``x_{t-1} ~ N(mu~_t(x0^, x_t), sigma_t^2 I)`` (Ho et al. Alg. 2)
        with ``sigma_t^2 = beta~_t`` (``"small"``) or ``beta_t`` (``"large"``); no noise at the
        last step (index 0), which returns ``x0^``."""
        if variance not in ("small", "large"):
            raise ConfigError(f"variance must be 'small' or 'large', not {variance!r}")
        if not 0 <= t < self.timesteps:
            raise ConfigError(f"t must be an index in 0..{self.timesteps - 1}, not {t}")
        # scalar coefficients: one step of a whole batch at the same t
        beta, abar = float(self.betas[t]), float(self.alphas_cumprod[t])
        abar_prev = float(self.alphas_cumprod_prev[t])
        x0 = torch.add(xt, eps, alpha=-math.sqrt(1 - abar)).div_(math.sqrt(abar))  # (B, *event)
        if clip is not None:
            x0.clamp_(-clip, clip)
        c0 = math.sqrt(abar_prev) * beta / (1 - abar)
        ct = math.sqrt(1 - beta) * (1 - abar_prev) / (1 - abar)
        mean = torch.add(x0.mul_(c0), xt, alpha=ct)  # c0 x0^ + ct x_t
        if t == 0:
            return mean
        var = beta if variance == "large" else float(self.posterior_variance[t])
        z = torch.randn(xt.shape, generator=generator, dtype=xt.dtype, device=xt.device)
        return mean.add_(z, alpha=math.sqrt(var))

    def ddim_timesteps(self, steps: int) -> list[int]:
        """``steps`` distinct indices from ``T - 1`` down to 0, evenly spaced (DDIM's "linear"
        sub-sequence), ending at index 0."""
        T = self.timesteps
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
            raise ConfigError(f"steps must be an integer in 1..{T} (the timesteps), not {steps!r}")
        seq = torch.linspace(0, T - 1, steps, dtype=D64).round().long().unique().tolist()
        return sorted(seq, reverse=True)


class VPSDE:
    """The variance-preserving SDE (see the module docstring).

    Args:
        beta_min, beta_max: ``beta(0)`` and ``beta(1)``; Song et al. use 0.1 and 20.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        if not 0 < beta_min < beta_max:
            raise ConfigError(
                f"the VP SDE needs 0 < beta_min < beta_max, not {beta_min}, {beta_max}"
            )
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)

    def beta(self, t: Tensor) -> Tensor:
        """``beta(t) = beta_min + t (beta_max - beta_min)`` (also ``g(t)^2``)."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_mean_coeff(self, t: Tensor) -> Tensor:
        """``log m_t = -t^2 (beta_max - beta_min) / 4 - t beta_min / 2``."""
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(m_t, s_t)``: ``x_t | x_0 ~ N(m_t x_0, s_t^2 I)``, with ``s_t = sqrt(1 - m_t^2)``."""
        lm = self.log_mean_coeff(t)
        return lm.exp(), (-torch.expm1(2 * lm)).sqrt()

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """``f(x, t) = -beta(t) x / 2``; ``t`` is ``(B,)``."""
        return -0.5 * self.beta(t).view(-1, *([1] * (x.dim() - 1))) * x

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """``log N(z; 0, I)`` summed over the event, ``(B,)``."""
        d = z[0].numel()
        return -0.5 * (z.flatten(1) ** 2).sum(1) - 0.5 * d * math.log(2 * math.pi)


def geometric_sigmas(sigma_max: float, sigma_min: float, num: int) -> Tensor:
    """``num`` noise levels from ``sigma_max`` down to ``sigma_min`` in geometric progression
    (Song & Ermon 2019), ``(num,)`` float64."""
    if not 0 < sigma_min < sigma_max:
        raise ConfigError(
            f"noise levels need 0 < sigma_min < sigma_max, not {sigma_min} and {sigma_max}"
        )
    if isinstance(num, bool) or not isinstance(num, int) or num < 2:
        raise ConfigError(f"the number of noise levels must be an integer >= 2, not {num!r}")
    return torch.logspace(math.log10(sigma_max), math.log10(sigma_min), num, dtype=D64)
