r"""``ddpm``: denoising diffusion probabilistic model with noise prediction (Ho et al. 2020).

Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020, arXiv:2006.11239.

Training minimises the simple loss ``E_{t, x_0, eps} |eps - eps_theta(x_t, t)|^2`` with
``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` and ``t`` uniform on ``1..T`` (Ho et al. eq. 14),
in the model space of :mod:`dgm.models.diffusion.base`. The schedule
(:class:`~dgm.models.diffusion.schedules.DiscreteSchedule`, ``linear`` or ``cosine``) owns the
forward process and the reverse steps; the network only predicts ``eps``.

**The bound** (:meth:`DDPM.elbo`, Ho et al. eq. 5) on the data ``x_0``:

.. math::

    -\log p(x_0) \le \underbrace{KL(q(x_T|x_0) \| N(0, I))}_{L_T}
    + \sum_{t=2}^{T} \underbrace{KL(q(x_{t-1}|x_t, x_0) \| p_\theta(x_{t-1}|x_t))}_{L_{t-1}}
    \underbrace{- \log p_\theta(x_0 | x_1)}_{L_0},

with ``p_theta(x_{t-1}|x_t) = N(mu~_t(x0^(x_t), x_t), sigma_t^2 I)`` and ``sigma_t^2 = beta~_t``
(``variance="small"``) or ``beta_t`` (``"large"``); the KLs are between Gaussians, in closed form.
Ho et al. (sec. 3.2) note that ``beta~_t`` is the right variance for data that are point masses and
``beta_t`` for data ``x_0 ~ N(0, I)``: with ``beta_t`` and the exact noise predictor of such data
the model's joint *is* ``q(x_{0:T})`` and the bound is tight. A continuous density looks smooth at
the small noise levels of the first steps, where the two differ most (``beta~_2 / beta_2 = 0.45``
on the linear schedule), so ``variance="auto"`` (the default) takes ``beta_t`` on continuous data
and ``beta~_t`` on discrete data (the levels are point masses). Measured term by term on the
default 8gaussians run (500 test points, all 999 middle terms; ``L_T`` 4e-5 nats, the decoder
``L_0`` at its best variance: the mean squared error of ``x0^`` at ``t = 1`` equals ``beta_1``),
the middle terms summed to 8.74 nats with ``beta~_t`` and 7.89 with ``beta_t``, and the bound
lay 0.90 and 0.05 nats above the true cross-entropy; steps 1-49 made most of the difference.
Each ``L_{t-1}`` is evaluated at one draw ``x_t ~ q(x_t | x_0)``, so the figure is an unbiased
Monte Carlo estimate of the bound, like a VAE's one-sample ELBO. With ``bound_terms = k`` only
``k`` of the ``T - 1`` middle terms are evaluated (one random ``t`` in each of ``k`` equal strata,
weighted by the stratum's size): still unbiased, ``T / k`` times cheaper.

* *Discrete data* (``L`` levels, model space ``[-1, 1]``, bins of half-width ``delta = 1/(L-1)``):
  the decoder is the discretized Gaussian of Ho et al. eq. 13 with variance ``beta_1``,
  ``p(x_0|x_1) = prod_i int_{delta_-(x_0^i)}^{delta_+(x_0^i)} N(v; mu_theta^i(x_1, 1), beta_1) dv``
  with the outer bins extended to infinity. It is a probability of the integer data, so the bound
  is on ``log P(x)`` of the *discrete* data: no dequantization enters (the model declares
  ``data_kinds = {"discrete", "continuous"}``, so the engine hands it the raw levels), and bits per
  dimension from it are a true upper bound on the discrete bits/dim.
* *Continuous data*: the decoder is the density ``N(x_0; mu_theta(x_1, 1), beta_1 I)``, so the
  bound is on the continuous density ``log p(x)`` (plus the standardisation's log-determinant).

**Sampling** (``sample(n, sampler=..., steps=..., eta=...)``): ``"ancestral"`` runs the DDPM
chain of all ``T`` steps (Ho et al. Alg. 2); ``"ddim"`` (Song, Meng & Ermon 2021) runs any number
of steps of a sub-sequence with stochasticity ``eta`` (0: deterministic, 1: DDPM-like). The default
is DDIM with 50 steps, 20 times cheaper than ancestral sampling with ``T = 1000`` on a CPU.
``"edm"`` is Karras et al.'s deterministic Heun sampler (arXiv:2206.00364) of the probability-flow
ODE on their ``rho = 7`` noise-level grid, snapped to the trained steps (:meth:`DDPM.edm_levels`);
:meth:`DDPM.nfe` gives the network evaluations of each setting. For
discrete data the predicted ``x0^`` is clipped to ``[-1, 1]`` at every step
(``clip_denoised``), as in Ho et al.'s code, and samples are rounded to the levels.

**Training defaults** (``DiffusionBase.train_defaults``, for every diffusion model; ddpm takes
20000 steps instead of 5000, the run length its samples needed on 8gaussians): 5000 steps
of 256 with a cosine decay and the engine's weight average ``ema=0.999`` (with its warm-up
``min(0.999, (1 + t) / (10 + t))``, so short runs do not save weights close to the
initialisation); the saved weights, hence samples and the bound, are the averaged ones. Flags
override them (``--steps``, ``--ema 0``, ...).

>>> from dgm.core.spec import DataSpec
>>> m = DDPM(DataSpec((2,)), DDPMConfig(timesteps=10, width=16, depth=1))
>>> m.sample(3, sampler="ddim", steps=5).shape
torch.Size([3, 2])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from dgm.core.errors import ConfigError
from dgm.core.likelihood import Likelihood
from dgm.core.model import Batch, Example, completion_mask, unpack
from dgm.core.registry import register
from dgm.core.spec import DataSpec
from dgm.models.diffusion.base import DiffusionBase, NetConfig, check_guidance
from dgm.models.diffusion.complete import repaint
from dgm.models.diffusion.schedules import DiscreteSchedule
from dgm.samplers.ode import edm_heun, edm_sigmas

__all__ = ["DDPM", "DDPMConfig", "DDPMSampleOptions", "discretized_gaussian_log_prob"]


@dataclass
class DDPMConfig(NetConfig):
    """Hyperparameters of :class:`DDPM` (network fields: :class:`NetConfig`).

    Attributes:
        schedule: ``"linear"`` (Ho et al.) or ``"cosine"`` (Nichol & Dhariwal 2021).
        timesteps: ``T``.
        beta_start, beta_end: endpoints of the linear schedule at ``T = 1000`` (scaled by
            ``1000 / T`` for other ``T``).
        variance: reverse-process variance ``beta~_t`` (``"small"``), ``beta_t`` (``"large"``) or
            ``"auto"``: ``beta_t`` on continuous data, ``beta~_t`` on discrete data (see the
            module docstring: on 8gaussians the bound was 0.90 nats above the true
            cross-entropy with ``beta~_t`` and 0.05 with ``beta_t``, the same network).
        bound_terms: middle terms ``L_{t-1}`` of the bound evaluated per example (one random
            ``t`` in each of that many strata: an unbiased estimate); 0: all ``T - 1`` terms.
        clip_denoised: clip ``x0^`` to ``[-1, 1]`` when sampling discrete data.
    """

    schedule: Literal["linear", "cosine"] = "linear"
    timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    variance: Literal["auto", "small", "large"] = "auto"
    bound_terms: int = 32
    clip_denoised: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.timesteps < 2:
            raise ConfigError(f"timesteps must be at least 2, not {self.timesteps}")
        if self.bound_terms < 0:
            raise ConfigError(f"bound_terms must be >= 0, not {self.bound_terms}")


@dataclass
class DDPMSampleOptions:
    """Options of :meth:`DDPM.sample`.

    Attributes:
        sampler: ``"ancestral"`` (all ``T`` reverse steps), ``"ddim"`` (Song et al. 2021) or
            ``"edm"`` (Karras et al. 2022's deterministic Heun sampler; ``2 steps - 1`` network
            evaluations).
        steps: DDIM steps, 1..T (ancestral always takes ``T``), or EDM's noise levels.
        eta: DDIM noise (>= 0; 0: deterministic, 1: the ancestral variance).
        rho: the exponent of EDM's noise-level grid (7 in Karras et al.).
        guidance: classifier-free guidance weight ``w`` (conditional models trained with label
            dropout): ``(1 + w) eps(y) - w eps(null)``; 0: the conditional sampler, -1: the
            unconditional one. Guided samples have no likelihood.
    """

    #: the options each sampler reads
    by_sampler: ClassVar[dict[str, tuple[str, ...]]] = {
        "ancestral": ("guidance",),
        "ddim": ("steps", "eta", "guidance"),
        "edm": ("steps", "rho", "guidance"),
    }

    sampler: Literal["ancestral", "ddim", "edm"] = "ddim"
    steps: int = 50
    eta: float = 0.0
    rho: float = 7.0
    guidance: float = 0.0

    def __post_init__(self) -> None:
        check_guidance(self.guidance)


def _log_ndtr_diff(a: Tensor, b: Tensor) -> Tensor:
    """``log(Phi(b) - Phi(a))`` for ``a < b`` elementwise, accurate in both tails."""
    flip = a > 0  # both in the upper tail: use Phi(b) - Phi(a) = Phi(-a) - Phi(-b)
    lo = torch.where(flip, -b, a)
    hi = torch.where(flip, -a, b)
    lhi = torch.special.log_ndtr(hi)
    llo = torch.special.log_ndtr(lo)
    return lhi + torch.log1p(-torch.exp((llo - lhi).clamp(max=0.0)).clamp(max=1 - 1e-12))


def discretized_gaussian_log_prob(z: Tensor, mean: Tensor, std: Tensor, levels: int) -> Tensor:
    """Ho et al. eq. 13: ``log P(z)`` elementwise for ``z`` on the grid of ``levels`` points in
    ``[-1, 1]`` under ``N(mean, std^2)`` integrated over the bin of ``z`` (outer bins unbounded)."""
    delta = 1.0 / (levels - 1)
    a = torch.where(z <= -1 + 1e-6, torch.full_like(z, -math.inf), (z - delta - mean) / std)
    b = torch.where(z >= 1 - 1e-6, torch.full_like(z, math.inf), (z + delta - mean) / std)
    return _log_ndtr_diff(a, b)


def _gauss_kl(m1: Tensor, v1: Tensor, m2: Tensor, v2: Tensor) -> Tensor:
    """``KL(N(m1, v1) || N(m2, v2))`` elementwise."""
    return 0.5 * (torch.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1.0)


@register
class DDPM(DiffusionBase):
    """Denoising diffusion probabilistic model (see the module docstring)."""

    name = "ddpm"
    description = "DDPM: eps-prediction diffusion, ancestral/DDIM sampling, variational bound (Ho et al. 2020)"
    Config = DDPMConfig
    SampleOptions = DDPMSampleOptions
    likelihood_bound = "elbo"
    data_kinds = frozenset({"continuous", "discrete"})
    #: 20000 steps, not the family's 5000: on 8gaussians 5000 steps left samples on a ring
    #: (C2ST 0.68), 10000 reached 0.64 and 20000 0.512 (143 CPU s, one thread); with the
    #: ``beta_t`` reverse variance its bound lies 0.010 nats above the true cross-entropy
    #: (0.832 with ``beta~_t``; ``benchmarks/results/defaults.json``)
    train_defaults: ClassVar[dict[str, Any]] = DiffusionBase.train_defaults | {"steps": 20000}
    example = Example(
        spec=DataSpec((1, 4, 4), kind="discrete", levels=4, num_classes=3),
        config={"timesteps": 12, "unet_width": 8, "time_dim": 8, "unet_mults": (1,)},
        variants=(
            {"schedule": "cosine", "variance": "large", "bound_terms": 3},
            {"conditional": True},
        ),
    )

    def __init__(self, spec: DataSpec, config: DDPMConfig | None = None) -> None:
        super().__init__(spec, config)
        c: DDPMConfig = self.config
        self.schedule = DiscreteSchedule.named(c.schedule, c.timesteps, c.beta_start, c.beta_end)

    @property
    def timesteps(self) -> int:
        return self.schedule.timesteps

    def eps(self, z: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """Predicted noise at model-space ``z (B, *event)``, integer steps ``t (B,)`` and network
        labels ``y (B,)`` (conditional models; the null class is the unconditional branch)."""
        return self.network(z, t.to(z.dtype), y)

    def score(self, z: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """``grad_z log q_t(z) ~ -eps_theta / sqrt(1 - abar_t)``."""
        return -self.eps(z, t, y) / self.schedule.std(t, z)

    # ------------------------------------------------------------------ training
    def loss(self, batch: Batch) -> dict[str, Tensor]:
        x, y = unpack(batch)
        z, _ = self.to_model_space(self.check_input(x))
        y = self.train_labels(y, z.shape[0])  # label dropout (conditional models)
        t = torch.randint(0, self.timesteps, (z.shape[0],), device=z.device)  # (B,)
        noise = torch.randn_like(z)
        zt = self.schedule.add_noise(z, noise, t)
        mse = ((self.eps(zt, t, y) - noise) ** 2).flatten(1).mean(1)  # (B,)
        return {"loss": mse.mean()}

    # ------------------------------------------------------------------ the bound
    def _bound_steps(self, batch: int) -> tuple[Tensor, Tensor]:
        """Middle-term indices in 1..T-1 to evaluate, ``(K, B)`` (row ``j``: one index per example
        drawn uniformly and independently in stratum ``j``), and each stratum's size ``(K, 1)``,
        the weight that makes the sum an unbiased estimate of the sum over all terms."""
        T = self.timesteps
        k = min(self.config.bound_terms or T - 1, T - 1)
        edges = torch.linspace(1, T, k + 1, dtype=torch.float64).round().long()  # [e_j, e_j+1)
        width = edges[1:] - edges[:-1]  # (K,), sums to T - 1, each >= 1
        u = torch.rand(k, batch, dtype=torch.float64)
        idx = edges[:-1, None] + (u * width[:, None]).long().clamp(max=width[:, None] - 1)
        return idx, width[:, None].double()

    @property
    def variance(self) -> str:
        """The reverse-process variance in use, ``"small"`` (``beta~_t``) or ``"large"``
        (``beta_t``): ``config.variance``, with ``"auto"`` resolved by the data kind."""
        v = self.config.variance
        if v == "auto":
            return "small" if self.discrete else "large"
        return v

    def _model_var(self, t: Tensor, like: Tensor) -> Tensor:
        """``sigma_t^2`` at step indices ``t (N,)``, shaped to broadcast against ``like``."""
        var = self.schedule.betas if self.variance == "large" else self.schedule.posterior_variance
        return var.to(like)[t].view(-1, *([1] * (like.dim() - 1)))

    def elbo(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Lower bound on ``log p(x)`` in nats, ``(B,)`` (see the module docstring); on
        ``log p(x | y)`` given labels, on the unconditional branch's ``log p(x)`` without."""
        x = self.check_input(x)
        z, log_det = self.to_model_space(x.to(self.dtype))
        B, sch = z.shape[0], self.schedule
        y = self.net_labels(y, B)
        T = self.timesteps
        # L_T: KL(q(x_T | x_0) || N(0, I))
        mean_T, var_T = sch.marginal(z, torch.full((B,), T - 1))
        total = _gauss_kl(mean_T, var_T, torch.zeros_like(z), torch.ones_like(z)).flatten(1).sum(1)
        # L_{t-1}, t = 2..T: KL between the true and the model posterior
        steps, weights = self._bound_steps(B)  # (K, B), (K, 1)
        # terms per network pass: K*B inputs hold at most the spec's inference batch (the maps of
        # a bigger pass are page-faulted in anew every time; dgm.core.spec.INFERENCE_VALUES)
        chunk = max(1, self.spec.inference_batch(cap=8192) // B)
        for start in range(0, steps.shape[0], chunk):
            ts, w = steps[start : start + chunk], weights[start : start + chunk]  # (K, B)
            K = ts.shape[0]
            tt = ts.reshape(-1).to(z.device)  # (K*B,), row-major: term j of example b
            z0 = z.repeat(K, *([1] * (z.dim() - 1)))  # (K*B, *event)
            zt = sch.add_noise(z0, torch.randn_like(z0), tt)
            yk = None if y is None else y.repeat(K)
            x0_hat = sch.predict_x0(zt, self.eps(zt, tt, yk), tt)
            mu_true, var_true = sch.posterior(z0, zt, tt)
            mu_model, _ = sch.posterior(x0_hat, zt, tt)
            var_model = self._model_var(tt, z0)
            kl = _gauss_kl(mu_true, var_true, mu_model, var_model.expand_as(z0))
            total = total + (w.to(z) * kl.flatten(1).sum(1).view(K, B)).sum(0)
        # L_0: decoder at t = 1 with variance beta_1
        t0 = torch.zeros(B, dtype=torch.long, device=z.device)
        z1 = sch.add_noise(z, torch.randn_like(z), t0)
        mean0 = sch.predict_x0(z1, self.eps(z1, t0, y), t0)
        std0 = math.sqrt(float(sch.betas[0]))
        if self.discrete:
            ll0 = discretized_gaussian_log_prob(z, mean0, torch.full_like(z, std0), self.levels)
        else:
            ll0 = -0.5 * ((z - mean0) / std0) ** 2 - math.log(std0) - 0.5 * math.log(2 * math.pi)
        total = total - ll0.flatten(1).sum(1)
        return -total + log_det

    def likelihood_info(self, **bound_options: Any) -> Likelihood:
        """The bound from ``bound_terms`` random middle terms and one noise draw per example: a
        stochastic (unbiased) estimate of the variational bound, so its standard error matters."""
        self._check_bound_options(bound_options)
        T = self.timesteps
        k = self.config.bound_terms or T - 1
        terms = f"{min(k, T - 1)} of {T - 1} middle terms, one draw each"
        if self.discrete:
            what = f"discretized Gaussian decoder on {self.levels} levels; {terms}"
        else:
            what = f"Gaussian decoder on the continuous density; {terms}"
        return Likelihood("bound_estimate", "elbo", what)

    # ------------------------------------------------------------------ sampling
    def edm_levels(self, steps: int, rho: float = 7.0) -> list[int]:
        """The trained steps EDM visits: Karras et al.'s ``rho`` grid between the schedule's
        smallest and largest ``sigma_t = sqrt((1 - abar_t) / abar_t)``, each level snapped to the
        nearest trained one in ``log sigma`` (their treatment of discrete-time models), repeats
        dropped; decreasing."""
        abar = self.schedule.alphas_cumprod
        sig = ((1 - abar) / abar).sqrt()  # (T,), increasing
        grid = edm_sigmas(float(sig[0]), float(sig[-1]), steps, rho)[:-1]
        near = (grid.log()[:, None] - sig.log()[None, :]).abs().argmin(1).tolist()
        return list(dict.fromkeys(near))

    def _edm(
        self, z: Tensor, steps: int, rho: float, y: Tensor | None = None, guidance: float = 0.0
    ) -> Tensor:
        """Karras et al.'s Heun sampler on the levels of :meth:`edm_levels`, from ``z ~ N(0, I)``
        at step ``T`` to ``sigma = 0``; model space (network labels ``y``, guidance ``w``)."""
        idx = self.edm_levels(steps, rho)
        abar = self.schedule.alphas_cumprod[idx]
        sigmas = torch.cat([((1 - abar) / abar).sqrt(), torch.zeros(1, dtype=abar.dtype)])
        ms = abar.sqrt().tolist()

        def slope(x: Tensor, i: int) -> Tensor:  # eps_theta(m_i x, t_i) = (x - D) / sigma_i
            tt = torch.full((x.shape[0],), float(idx[i]), dtype=x.dtype, device=x.device)
            return self.guide(lambda yy: self.eps(ms[i] * x, tt, yy), y, guidance)

        x, _ = edm_heun(slope, z / ms[0], sigmas)
        return x

    def nfe(self, sampler: str = "ddim", steps: int = 50, rho: float = 7.0) -> int:
        """Network evaluations of one draw at a sampling setting (EDM: ``2 L - 1`` for the ``L``
        distinct levels of :meth:`edm_levels`, at most ``2 steps - 1``)."""
        if sampler == "edm":
            return 2 * len(self.edm_levels(steps, rho)) - 1
        if sampler == "ancestral":
            return self.timesteps
        return len(self.schedule.ddim_timesteps(min(int(steps), self.timesteps)))

    @torch.no_grad()
    def sample(
        self,
        n: int,
        y: Tensor | None = None,
        sampler: str = "ddim",
        steps: int | None = None,
        eta: float | None = None,
        rho: float | None = None,
        guidance: float | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``n`` samples ``(n, *event_shape)`` by ancestral sampling (all ``T`` steps), DDIM or
        EDM's Heun sampler (:class:`DDPMSampleOptions`; an option the chosen sampler does not
        read is an error). A conditional model takes labels ``y`` (without them: its
        unconditional branch) and a classifier-free ``guidance`` weight (module docstring of
        :mod:`~dgm.models.diffusion.base`)."""
        given = {"sampler": sampler, "steps": steps, "eta": eta, "rho": rho, "guidance": guidance}
        o = self.sample_config({k: v for k, v in given.items() if v is not None})
        sampler, steps, eta = o.sampler, o.steps, o.eta
        y = self.sample_labels(y, n, o.guidance)
        T, sch = self.timesteps, self.schedule
        clip = 1.0 if (self.discrete and self.config.clip_denoised) else None
        z = self.prior_noise(n, generator)  # (n, *event)
        if sampler == "ancestral":
            for t in reversed(range(T)):
                tt = torch.full((n,), float(t), dtype=z.dtype, device=z.device)
                eps = self.guide(lambda yy: self.eps(z, tt, yy), y, o.guidance)  # noqa: B023
                z = sch.ancestral_step(
                    eps, t, z, variance=self.variance, clip=clip, generator=generator
                )
        elif sampler == "ddim":
            seq = sch.ddim_timesteps(min(int(steps), T))
            for j, t in enumerate(seq):
                prev = seq[j + 1] if j + 1 < len(seq) else -1
                tt = torch.full((n,), float(t), dtype=z.dtype, device=z.device)
                eps = self.guide(lambda yy: self.eps(z, tt, yy), y, o.guidance)  # noqa: B023
                z = sch.step(eps, t, z, prev_t=prev, eta=eta, clip=clip, generator=generator)
        elif sampler == "edm":
            z = self._edm(z, int(steps), o.rho, y, o.guidance)
            if clip is not None:
                z = z.clamp(-clip, clip)
        else:
            raise ConfigError(f"sampler must be 'ancestral', 'ddim' or 'edm', not {sampler!r}")
        return self.from_model_space(z)

    # ------------------------------------------------------------------ completion
    @torch.no_grad()
    def complete(
        self,
        x: Tensor,
        mask: Tensor,
        y: Tensor | None = None,
        sampler: str = "ancestral",
        resample: int = 1,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Complete ``x`` where ``mask`` is False by RePaint's replacement method on the
        ancestral chain, ``resample`` passes per step (:mod:`dgm.models.diffusion.complete`; an
        approximation of ``p(x_missing | x_observed)``); observed entries are returned as given.

        Options:
            resample: RePaint's passes per step (``u``; more passes harmonise the completion with
                the observed entries, at ``resample`` times the network evaluations).
        """
        if sampler != "ancestral":
            raise ConfigError(f"ddpm completes with the ancestral sampler only, not {sampler!r}")
        x = self.check_input(x).to(self.dtype)
        mask = completion_mask(self, x, mask).view(x.shape)
        labels = self.net_labels(y, x.shape[0])  # checked; the null class without labels
        z0, _ = self.to_model_space(x)  # (B, *event)
        clip = 1.0 if (self.discrete and self.config.clip_denoised) else None

        def eps(z: Tensor, t: int) -> Tensor:
            tt = torch.full((z.shape[0],), float(t), dtype=z.dtype, device=z.device)
            return self.eps(z, tt, labels)

        z = repaint(eps, self.schedule, z0, mask, resample=resample,
                    variance=self.variance, clip=clip, generator=generator)  # fmt: skip
        return torch.where(mask, x, self.from_model_space(z))
