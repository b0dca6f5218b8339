"""Variational autoencoders: the ELBO-trained ``vae`` and the importance-weighted ``iwae``.

A latent-variable model ``p(x, z) = p(z) p(x | z)`` with a prior ``p(z)`` (``N(0, I)``, or the
VampPrior below) and a decoder likelihood ``p(x | z)`` (see :mod:`dgm.models.vae.likelihoods`),
paired with a Gaussian encoder ``q(z | x) = N(mu(x), diag sigma(x)^2)``. With
``z = mu + sigma * eps``, ``eps ~ N(0, I)`` (the reparameterization trick, Kingma & Welling, 2014),

* the evidence lower bound (ELBO)::

      log p(x) >= E_q[log p(x | z)] - KL(q(z | x) || p(z))

  with the KL in closed form for ``N(0, I)``, ``KL = 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - 2 log
  sigma_j)``;

* the importance-weighted bound (Burda, Grosse & Salakhutdinov, 2016)::

      log p(x) >= L_k = E[log 1/k sum_{i=1..k} w_i],   w_i = p(x, z_i) / q(z_i | x),

  which is the ELBO at ``k = 1``, never decreases with ``k`` and tends to ``log p(x)``.

The ``vae`` maximises the ELBO (with the KL weighted by ``beta``, Higgins et al., 2017), the
``iwae`` maximises ``L_k`` with ``k`` training samples. Both report ``L_k`` with ``k = eval_k``
(or the ``k`` given to ``dgm score --k`` / ``dgm eval --k``) as their likelihood: a lower bound, so
the NLL they report is an upper bound on the true NLL. The bound is computed in chunks of importance
samples with a running log-sum-exp, so ``k = 5000`` fits in a fixed memory budget.

**Priors.** ``prior="standard"`` is ``N(0, I)``. ``prior="vamp"`` is the VampPrior (Tomczak &
Welling, 2018): the encoder's own posteriors at ``K`` learned pseudo-inputs ``u_k``,

    p(z) = 1/K sum_k q(z | u_k),

a mixture of Gaussians that the encoder and the data shape together. Its KL term has no closed
form, so the ELBO and the ``vae``'s training loss estimate it with the same reparameterized samples
as the reconstruction term (``log q(z | x) - log p(z)``); the IWAE bound needs only ``log p(z)``.
The pseudo-inputs start as training examples (``on_train_start``) and are trained with the rest.

Class-conditional variants (``conditional=True``) feed a one-hot label to encoder and decoder:
``q(z | x, y)``, ``p(x | z, y)``, and bound ``log p(x | y)``.

**Sampling** (:class:`VAESampleOptions`): by default ``sample`` draws from the model,
``z ~ p(z)`` then ``x ~ p(x | z)``. A factorized decoder adds independent noise to every pixel
of such a draw, so a VAE's honest samples of images look grainy. ``output="mean"`` returns the
decoder's mean ``E[x | z]`` instead, the figure VAE papers usually show, and ``temperature=T``
draws ``z ~ N(0, T^2 I)`` (with the VampPrior, ``z ~ N(m_k, T^2 s_k^2)`` for a uniform component
``k``); neither is a sample of ``p(x)``, and results obtained with them say so.

References: D. P. Kingma and M. Welling, "Auto-encoding variational Bayes", ICLR 2014;
Y. Burda, R. Grosse and R. Salakhutdinov, "Importance weighted autoencoders", ICLR 2016;
J. M. Tomczak and M. Welling, "VAE with a VampPrior", AISTATS 2018.

>>> from dgm.core.spec import DataSpec
>>> m = VAE(DataSpec((1, 8, 8), "discrete", levels=17), VAEConfig(latent_dim=4, hidden=(32,)))
>>> x = m.sample(5)
>>> m.elbo(x).shape, m.iwae_bound(x, k=10).shape
(torch.Size([5]), torch.Size([5]))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from dgm.core.errors import ConfigError, DataError
from dgm.core.likelihood import Likelihood
from dgm.core.model import Batch, Example, Model, unpack
from dgm.core.registry import register
from dgm.core.spec import DataSpec
from dgm.models.vae.likelihoods import make_likelihood
from dgm.models.vae.networks import build_networks

__all__ = [
    "IWAE",
    "IWAEConfig",
    "VAE",
    "VAEConfig",
    "VAESampleOptions",
    "CPU_CHUNK_BUDGET",
    "MEMORY_BUDGET",
    "gaussian_kl",
]

#: bytes of decoder activations one chunk of importance samples may use in :meth:`VAE.iwae_bound`
#: on a GPU
MEMORY_BUDGET = 256 * 2**20
#: the same on a CPU: chunks whose activations stay in the processor's caches. The IWAE bound of
#: the default vae on one inference batch (k = 1000 on 41 binarized-MNIST images, k = 100 on 1000
#: 8gaussians points) took 1.21x and 1.30x less time than in 256 MB chunks on one thread, 1.38x
#: and 1.35x on two, the same values (the AMD EPYC of 2026-12-07, ``iwae_chunks.json``)
CPU_CHUNK_BUDGET = 16 * 2**20
_LOG_2PI = math.log(2.0 * math.pi)


@dataclass
class VAESampleOptions:
    """Options of :meth:`VAE.sample`.

    Attributes:
        output: ``"sample"``: a draw of ``p(x | z)``, so with ``temperature=1`` a sample of the
            model's ``p(x)`` (integer levels for discrete data); ``"mean"``: the decoder's mean
            ``E[x | z]`` (real-valued between levels), not a sample of ``p(x)``.
        temperature: ``T``; the codes are ``z ~ N(0, T^2 I)`` (the VampPrior: its components'
            standard deviations times ``T``). 1: the prior; below 1 codes near the prior's
            modes, not samples of ``p(x)``.
    """

    output: Literal["sample", "mean"] = "sample"
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.output not in ("sample", "mean"):
            raise ConfigError(
                f"output must be 'sample' (a draw of p(x | z)) or 'mean' (the decoder's mean), "
                f"not {self.output!r}"
            )
        if isinstance(self.temperature, bool) or not (
            isinstance(self.temperature, (int, float)) and 0 <= self.temperature < float("inf")
        ):
            raise ConfigError(
                f"temperature must be a finite number >= 0 (1: the prior N(0, I)), "
                f"not {self.temperature!r}"
            )


@dataclass
class _CommonConfig:
    """Hyperparameters shared by the ``vae`` and the ``iwae``.

    Attributes:
        latent_dim: dimension of the latent code ``z``; ``None``: ``min(D, 32)`` for data of
            ``D`` dimensions (2 for 2-D points, where 32 left the IWAE bound 1.4 nats above the
            entropy of 8gaussians).
        hidden: hidden widths of the MLP encoder (the decoder mirrors them), or conv channel
            counts.
        architecture: ``"mlp"`` or ``"conv"`` (images) encoder and decoder.
        activation: activation of the encoder and decoder; ``"auto"`` (the vae's default): tanh on
            continuous data, elu on discrete data. On the 2-D densities at the defaults tanh took
            the vae's IWAE-bound gap on 8gaussians from 0.41 to 0.26 nats and its C2ST on
            checkerboard from 0.656 to 0.548 (rings unchanged); the image figures were measured
            with elu. The iwae keeps elu (with tanh it lost: C2ST 0.598 -> 0.723 on 8gaussians).
        decoder: ``p(x | z)``: ``"auto"`` is Bernoulli for 2 levels, categorical up to 32,
            the discretized logistic above (256-level MNIST: 0.12 s a step against 11 s),
            Gaussian if continuous.
        gaussian_scale: fixed standard deviation of a Gaussian decoder; ``None``: learned per
            dimension by the decoder.
        eval_k: importance samples of the reported bound when no ``k`` is given (summaries,
            validation).
        conditional: take class labels: ``q(z | x, y)`` and ``p(x | z, y)``.
        prior: ``"standard"``, ``N(0, I)``; ``"vamp"``, the VampPrior ``1/K sum_k q(z | u_k)``
            on ``pseudo_inputs`` learned pseudo-inputs (Tomczak & Welling, 2018; unconditional
            models only); ``"auto"``: the VampPrior for an unconditional model of images above
            16 pixels a side (MNIST), ``N(0, I)`` otherwise.
        pseudo_inputs: ``K``, the VampPrior's number of pseudo-inputs (500 in the paper).
    """

    #: dimension of the latent code z; None: ``min(D, 32)`` for data of ``D`` dimensions (2 for
    #: 2-D points, where 32 left the IWAE bound 1.4 nats above the entropy of 8gaussians)
    latent_dim: int | None = None
    #: hidden widths of the MLP encoder (the decoder mirrors them), or conv channel counts
    hidden: tuple[int, ...] = (512, 256)
    architecture: Literal["mlp", "conv"] = "mlp"
    activation: Literal["auto", "relu", "tanh", "elu"] = "auto"
    #: p(x | z): "auto" is Bernoulli for 2 levels, categorical up to 32, logistic above, Gaussian
    #: if continuous
    decoder: Literal["auto", "bernoulli", "categorical", "gaussian", "logistic"] = "auto"
    #: fixed standard deviation of a Gaussian decoder; None: learned per dimension by the decoder
    gaussian_scale: float | None = None
    #: importance samples of the reported bound when no k is given (summaries, validation)
    eval_k: int = 100
    #: take class labels: q(z | x, y) and p(x | z, y)
    conditional: bool = False
    #: p(z): "standard" N(0, I), or "vamp", the mixture of the encoder's posteriors at learned
    #: pseudo-inputs (Tomczak & Welling 2018); "auto": vamp on MNIST-sized images, unconditional
    prior: Literal["auto", "standard", "vamp"] = "auto"
    #: K, the VampPrior's pseudo-inputs
    pseudo_inputs: int = 500
    #: keys added since and the values that behave as before (saved runs are read with them)
    added: ClassVar[dict[str, Any]] = {"prior": "standard"}

    def __post_init__(self) -> None:
        if self.latent_dim is not None and self.latent_dim < 1:
            raise ValueError(f"latent_dim must be at least 1, not {self.latent_dim}")
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden sizes must be positive, not {list(self.hidden)}")
        if self.prior not in ("auto", "standard", "vamp"):
            raise ConfigError(
                f"prior must be 'standard' (N(0, I)), 'vamp' (the VampPrior) or 'auto', "
                f"not {self.prior!r}"
            )
        if self.pseudo_inputs < 1:
            raise ValueError(f"pseudo_inputs must be at least 1, not {self.pseudo_inputs}")
        for key in ("k", "eval_k"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ValueError(f"{key} must be at least 1, not {getattr(self, key)}")
        if self.gaussian_scale is not None and not self.gaussian_scale > 0:
            raise ValueError(f"gaussian_scale must be positive or null, not {self.gaussian_scale}")


@dataclass
class VAEConfig(_CommonConfig):
    """Hyperparameters of the ``vae``.

    ``k`` is the number of samples of the Monte Carlo ELBO in training (1 as in Kingma & Welling);
    ``beta`` weights the KL term of the training loss (1: the ELBO; the reported ``elbo`` is always
    the unweighted one). ``eval_k`` (default 100) sets the cost of ``dgm train`` summaries and
    validation: each example is decoded ``eval_k`` times.

    Attributes:
        k: samples of the Monte Carlo ELBO in training; ``None``: 4 on continuous data (a
            cheap decoder: on 8gaussians with tanh, C2ST 0.611 -> 0.553 and bound gap 0.26 ->
            0.23 nats at 2.3x the step time), 1 on discrete data.
        beta: weight of the KL term in the training loss (1: the ELBO). With labels
            (``conditional=True``) a weight above 1 leaves less of the class in the code, so
            prior codes decode to the class asked for: on MNIST binarized at a fixed threshold
            (20 min, one thread) ``beta=2`` took the conditional accuracy of honest samples from
            0.814 to 0.920 and the per-class FID* from 5.84 to 4.28
            (``benchmarks/results/conditional_mnist_vae20b2.json``).
        kl_warmup: KL annealing (Bowman et al. 2016; Sonderby et al. 2016): the KL weight rises
            linearly from ``beta / kl_warmup`` to ``beta`` over the first ``kl_warmup`` training
            steps (0: off, the default). On 8gaussians at the defaults it did not help: 1500
            steps took the C2ST from 0.612 to 0.718 and the bound gap from 0.41 to 0.64 nats.
    """

    k: int | None = None
    beta: float = 1.0
    kl_warmup: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, not {self.beta}")
        if self.kl_warmup < 0:
            raise ValueError(f"kl_warmup must be >= 0, not {self.kl_warmup}")


@dataclass
class IWAEConfig(_CommonConfig):
    """Hyperparameters of the ``iwae``.

    Attributes:
        k: importance samples in the training bound ``L_k``.
    """

    k: int = 5
    #: elu: with tanh ("auto" on continuous data, the vae's default) the iwae on 8gaussians went
    #: from C2ST 0.598 and bound gap 0.18 to 0.723 and 0.85
    activation: Literal["auto", "relu", "tanh", "elu"] = "elu"


def gaussian_kl(mu: Tensor, log_std: Tensor) -> Tensor:
    """``KL(N(mu, diag sigma^2) || N(0, I)) = 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - 2 log sigma_j)``.

    ``mu``, ``log_std``: ``(B, L)`` -> ``(B,)``.
    """
    return 0.5 * (mu.square() + torch.exp(2.0 * log_std) - 1.0 - 2.0 * log_std).sum(-1)


@register
class VAE(Model):
    """Variational autoencoder trained on the ELBO (Kingma & Welling, 2014); see the module
    docstring for the maths. Its likelihood is the IWAE bound ``iwae_bound(x, k)``."""

    name = "vae"
    family = "vae"
    description = "variational autoencoder (ELBO), Gaussian encoder, reports the IWAE bound"
    Config = VAEConfig
    #: what ``dgm train vae|iwae`` runs without options (``benchmarks/results/defaults.json``):
    #: 3000 steps of 512 with a cosine decay
    train_defaults: ClassVar[dict[str, Any]] = {
        "steps": 3000, "batch_size": 512, "schedule": "cosine",
    }  # fmt: skip
    #: on MNIST-sized images, the recipe of ``benchmarks/vae.py``: batches of 100 within a
    #: 30-minute budget, validated every 500 steps (an epoch of MNIST) on 1000 examples, the best
    #: validated weights kept and training stopped after 10 validations without a gain
    large_image_train_defaults: ClassVar[dict[str, Any]] = {
        "max_minutes": 30, "batch_size": 100, "eval_every": 500, "eval_size": 1000,
        "patience": 10,
    }  # fmt: skip
    exact_likelihood = False
    likelihood_bound = "iwae_bound"
    bound_options = ("k",)
    SampleOptions = VAESampleOptions
    data_kinds = frozenset({"discrete", "continuous"})
    example = Example(
        spec=DataSpec((1, 8, 8), "discrete", levels=17, num_classes=10),
        config={"latent_dim": 3, "hidden": (16,), "eval_k": 8},
        variants=({"prior": "vamp", "pseudo_inputs": 4},),
    )

    def __init__(self, spec: DataSpec, config: Any | None = None) -> None:
        super().__init__(spec, config)
        cfg = self.config
        if cfg.conditional and not spec.num_classes:
            raise ConfigError("conditional=true needs data with class labels (spec.num_classes)")
        self.num_classes = int(spec.num_classes) if cfg.conditional else 0
        self.latent_dim = cfg.latent_dim or min(math.prod(spec.event_shape), 32)
        #: the activation in use (``"auto"`` resolved by the kind of data)
        self.activation = cfg.activation
        if cfg.activation == "auto":
            self.activation = "tanh" if spec.kind == "continuous" else "elu"
        #: samples per example of the training loss (``k``; the vae's ``None`` resolved)
        self.train_k = cfg.k if cfg.k is not None else (4 if spec.kind == "continuous" else 1)
        self.likelihood = make_likelihood(spec, cfg.decoder, cfg.gaussian_scale)
        self.encoder, self.decoder = build_networks(
            cfg.architecture,
            spec.event_shape,
            tuple(cfg.hidden),
            self.latent_dim,
            self.likelihood.num_params,
            self.num_classes,
            self.activation,
        )
        #: the prior in use (``"auto"`` resolved by the data and ``conditional``)
        self.prior = cfg.prior
        if cfg.prior == "auto":
            self.prior = "vamp" if spec.is_large_image and not cfg.conditional else "standard"
        if self.prior == "vamp":
            if cfg.conditional:
                raise ConfigError(
                    "prior='vamp' is for unconditional models; a conditional model takes "
                    "prior='standard'"
                )
            # the pseudo-inputs u_k, in the encoder's input space; on_train_start sets them to
            # training examples, so the engine hands it K of them
            self.pseudo_inputs = torch.nn.Parameter(
                torch.rand(cfg.pseudo_inputs, *spec.event_shape)
            )
            self.init_examples = cfg.pseudo_inputs

    # ------------------------------------------------------------------ inputs
    def encoder_input(self, x: Tensor) -> Tensor:
        """What the encoder sees: discrete levels scaled to [0, 1], continuous data as is."""
        return x / (self.spec.levels - 1) if self.spec.kind == "discrete" else x

    def _onehot(self, y: Tensor | None, n: int) -> Tensor | None:
        """Check labels ``(n,)`` and return them one-hot ``(n, C)``, or None when unconditional."""
        if not self.conditional:
            if y is not None:
                raise DataError(
                    f"model {self.name!r} was built without labels (conditional=false); "
                    "call it without y"
                )
            return None
        if y is None:
            raise DataError(
                f"model {self.name!r} is conditional; pass class labels y of shape (N,)"
            )
        if not isinstance(y, Tensor) or tuple(y.shape) != (n,):
            shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
            raise DataError(f"labels y must be a tensor of shape ({n},), not {shape}")
        if y.is_floating_point() and (y != y.round()).any():
            raise DataError("labels y must be integers")
        if ((y < 0) | (y >= self.num_classes)).any():
            raise DataError(f"labels y must lie in 0..{self.num_classes - 1}")
        return F.one_hot(y.long(), self.num_classes).to(self.dtype)

    # ------------------------------------------------------------------ the two networks
    def _encode(self, x: Tensor, y1h: Tensor | None) -> tuple[Tensor, Tensor]:
        return self.encoder(self.encoder_input(x), y1h)  # (B, L), (B, L)

    def encode(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Mean and log standard deviation of q(z | x), each ``(B, latent_dim)``."""
        x = self.check_input(x)
        return self._encode(x, self._onehot(y, x.shape[0]))

    def decoder_params(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Likelihood parameters ``(N, P, *event_shape)`` for codes ``z`` of shape ``(N, L)``."""
        return self.decoder(z, self._onehot(y, z.shape[0]))

    def decode(self, z: Tensor, y: Tensor | None = None, *, sample: bool = False) -> Tensor:
        """Data-space output for codes ``z`` ``(N, L)``: the decoder's mean (e.g. pixel
        probabilities; real-valued between levels), or with ``sample=True`` a draw from
        p(x | z) (integer levels for discrete data). Shape ``(N, *event_shape)``."""
        params = self.decoder_params(z, y)
        return self.likelihood.sample(params) if sample else self.likelihood.mean(params)

    @staticmethod
    def reparameterize(mu: Tensor, log_std: Tensor, eps: Tensor) -> Tensor:
        """``z = mu + sigma * eps``: a draw of q(z | x) differentiable in ``mu`` and ``log_std``.

        ``mu``, ``log_std``: ``(B, L)``; ``eps``: ``(..., B, L)`` standard normal.
        """
        return mu + torch.exp(log_std) * eps

    # ------------------------------------------------------------------ the prior
    @property
    def vamp(self) -> bool:
        """Whether p(z) is the VampPrior."""
        return self.prior == "vamp"

    def prior_components(self) -> tuple[Tensor, Tensor] | None:
        """The VampPrior's components ``q(z | u_k)``: means and log standard deviations, each
        ``(K, L)``; ``None`` for the standard prior."""
        if not self.vamp:
            return None
        return self.encoder(self.pseudo_inputs, None)

    def log_prior(self, z: Tensor, components: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """``log p(z)`` for codes ``(..., L)`` -> ``(...)``: ``log N(z; 0, I)``, or the VampPrior's
        ``log 1/K sum_k N(z; m_k, diag s_k^2)`` (``components`` from :meth:`prior_components`,
        computed when not given)."""
        L = z.shape[-1]
        if not self.vamp:
            return -0.5 * z.square().sum(-1) - 0.5 * L * _LOG_2PI
        m, log_s = self.prior_components() if components is None else components  # (K, L)
        inv = torch.exp(-2.0 * log_s)  # (K, L) 1 / s^2
        flat = z.reshape(-1, L)  # (N, L)
        # sum_j (z_j - m_kj)^2 / s_kj^2 as three matrix products: (N, K)
        quad = flat.square() @ inv.T - 2.0 * flat @ (m * inv).T + (m.square() * inv).sum(-1)
        log_comp = -0.5 * quad.clamp_min(0.0) - log_s.sum(-1) - 0.5 * L * _LOG_2PI  # (N, K)
        out = torch.logsumexp(log_comp, dim=-1) - math.log(m.shape[0])
        return out.reshape(z.shape[:-1])

    def _log_ratio(
        self,
        z: Tensor,
        eps: Tensor,
        log_std: Tensor,
        components: tuple[Tensor, Tensor] | None,
    ) -> Tensor:
        """``log p(z) - log q(z | x)`` for ``z = mu + sigma * eps``: ``(S, B)``."""
        if not self.vamp:  # the 2 pi terms cancel
            return -0.5 * z.square().sum(-1) + 0.5 * eps.square().sum(-1) + log_std.sum(-1)
        log_q = -0.5 * eps.square().sum(-1) - log_std.sum(-1) - 0.5 * z.shape[-1] * _LOG_2PI
        return self.log_prior(z, components) - log_q

    def _kl(
        self,
        mu: Tensor,
        log_std: Tensor,
        z: Tensor,
        eps: Tensor,
        components: tuple[Tensor, Tensor] | None,
    ) -> Tensor:
        """``KL(q(z | x) || p(z))`` per example ``(B,)``: in closed form for the standard prior,
        else the Monte Carlo estimate ``log q(z | x) - log p(z)`` averaged over the samples
        ``z = mu + sigma * eps`` ``(S, B, L)``."""
        if not self.vamp:
            return gaussian_kl(mu, log_std)
        return -self._log_ratio(z, eps, log_std, components).mean(0)

    def _log_weights(
        self,
        x: Tensor,
        y1h: Tensor | None,
        mu: Tensor,
        log_std: Tensor,
        eps: Tensor,
        components: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Importance log-weights ``log p(x, z) - log q(z | x)`` and ``log p(x | z)``, each
        ``(S, B)``, for the codes ``z = mu + sigma * eps`` with ``eps`` of shape ``(S, B, L)``
        (``components``: the VampPrior's, from :meth:`prior_components`)."""
        z = self.reparameterize(mu, log_std, eps)  # (S, B, L)
        log_px = self.likelihood.log_prob(x, self.decoder(z, y1h))  # (S, B)
        return log_px + self._log_ratio(z, eps, log_std, components), log_px

    # ------------------------------------------------------------------ bounds
    def elbo(self, x: Tensor, y: Tensor | None = None, k: int = 1) -> Tensor:
        """The ELBO ``E_q[log p(x | z)] - KL(q || p)`` per example ``(B,)``, its first term
        estimated with ``k`` reparameterized samples and the KL in closed form (the VampPrior's
        KL by the same samples)."""
        x = self.check_input(x)
        y1h = self._onehot(y, x.shape[0])
        mu, log_std = self._encode(x, y1h)
        eps = torch.randn(int(k), *mu.shape, dtype=mu.dtype, device=mu.device)  # (k, B, L)
        z = self.reparameterize(mu, log_std, eps)
        log_px = self.likelihood.log_prob(x, self.decoder(z, y1h))
        return log_px.mean(0) - self._kl(mu, log_std, z, eps, self.prior_components())

    def chunk_size(self, batch: int, k: int) -> int:
        """Importance samples per chunk so that decoding ``batch`` examples stays within
        :data:`CPU_CHUNK_BUDGET` bytes on a CPU, :data:`MEMORY_BUDGET` elsewhere (decoder
        activations plus a few likelihood temporaries)."""
        per_code = self.decoder.activation_size + 3 * self.likelihood.num_params * self.num_dims
        if self.vamp:  # log p(z): the (code, component) matrices
            per_code += 3 * self.config.pseudo_inputs
        itemsize = torch.finfo(self.dtype).bits // 8
        budget = CPU_CHUNK_BUDGET if self.device.type == "cpu" else MEMORY_BUDGET
        return max(1, min(int(k), budget // max(1, batch * per_code * itemsize)))

    def iwae_bound(
        self,
        x: Tensor,
        y: Tensor | None = None,
        k: int | None = None,
        *,
        chunk_size: int | None = None,
        eps: Tensor | None = None,
    ) -> Tensor:
        """The importance-weighted bound ``log 1/k sum_i p(x, z_i) / q(z_i | x)`` per example,
        ``(B,)`` (Burda et al., 2016); a stochastic lower bound on log p(x) in expectation.

        Args:
            k: importance samples (default ``config.eval_k``); ``k = 1`` is an ELBO estimate.
            chunk_size: samples decoded at once (default: by :meth:`chunk_size`); the chunks are
                combined with a running log-sum-exp, so the result does not depend on it.
            eps: optional standard-normal noise ``(k, B, latent_dim)`` to use instead of fresh
                draws (common random numbers, e.g. to compare chunkings or models).
        """
        k = self.config.eval_k if k is None else k
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ConfigError(f"k (importance samples) must be an integer >= 1, not {k!r}")
        k = int(k)
        x = self.check_input(x)
        y1h = self._onehot(y, x.shape[0])
        mu, log_std = self._encode(x, y1h)  # (B, L)
        if eps is not None and tuple(eps.shape) != (k, *mu.shape):
            raise DataError(f"eps must have shape {(k, *mu.shape)}, not {tuple(eps.shape)}")
        c = int(chunk_size) if chunk_size else self.chunk_size(x.shape[0], k)
        components = self.prior_components()
        total = torch.full_like(mu[:, 0], -math.inf)  # (B,) running log sum_i w_i
        for start in range(0, k, c):
            m = min(c, k - start)
            e = (
                eps[start : start + m]
                if eps is not None
                else torch.randn(m, *mu.shape, dtype=mu.dtype, device=mu.device)
            )  # (m, B, L)
            log_w, _ = self._log_weights(x, y1h, mu, log_std, e, components)  # (m, B)
            total = torch.logaddexp(total, torch.logsumexp(log_w, dim=0))
        return total - math.log(k)

    def likelihood_info(self, **bound_options: Any) -> Likelihood:
        """The IWAE bound with the given ``k``, else ``config.eval_k``; its method states the k
        used, e.g. ``"iwae_bound(k=100)"``: a lower bound on log p, an upper bound on the NLL."""
        bound_options.setdefault("k", self.config.eval_k)
        return super().likelihood_info(**bound_options)

    def log_likelihood(
        self, x: Tensor, y: Tensor | None = None, **bound_options: Any
    ) -> tuple[Tensor, Likelihood]:
        """The IWAE bound with the given ``k``, else ``config.eval_k``."""
        bound_options.setdefault("k", self.config.eval_k)
        return super().log_likelihood(x, y, **bound_options)

    # ------------------------------------------------------------------ training
    def kl_weight(self, step: int | None) -> float:
        """The KL term's weight at training ``step``: ``beta``, ramped up linearly from 0 over the
        first ``kl_warmup`` steps (Bowman et al. 2016; Sonderby et al. 2016); outside training
        (``None``), ``beta``."""
        c = self.config
        if not c.kl_warmup or step is None:
            return c.beta
        return c.beta * min(1.0, (step + 1) / c.kl_warmup)

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        """``loss = mean(recon + beta * kl)``, the negative (beta-weighted) ELBO with ``train_k``
        samples; also ``elbo`` (unweighted, per example), ``kl`` and ``recon`` = -E_q log p(x|z)."""
        x, y = unpack(batch)
        x = self.check_input(x)
        y1h = self._onehot(y if self.conditional else None, x.shape[0])
        mu, log_std = self._encode(x, y1h)
        eps = torch.randn(self.train_k, *mu.shape, dtype=mu.dtype, device=mu.device)
        z = self.reparameterize(mu, log_std, eps)
        log_px = self.likelihood.log_prob(x, self.decoder(z, y1h))
        recon = -log_px.mean(0)  # (B,)
        kl = self._kl(mu, log_std, z, eps, self.prior_components())  # (B,)
        loss = (recon + self.kl_weight(self.step_in_training) * kl).mean()
        return {
            "loss": loss,
            "elbo": -(recon + kl).mean().detach(),
            "kl": kl.mean().detach(),
            "recon": recon.mean().detach(),
        }

    def on_train_start(self, train_data: Tensor, labels: Tensor | None = None) -> None:
        """Set the decoder's output bias so that p(x | z) starts as the per-dimension marginal of
        the first training batch (a data-dependent initialisation that speeds early training);
        the VampPrior's pseudo-inputs start as ``K`` training examples (the engine hands over
        that many; fewer are repeated)."""
        x = self.check_input(train_data, "training data")
        self.decoder.bias.copy_(self.likelihood.init_bias(x).to(self.decoder.bias))
        if self.vamp:
            K = self.pseudo_inputs.shape[0]
            u = self.encoder_input(x[torch.arange(K, device=x.device) % x.shape[0]])
            self.pseudo_inputs.copy_(u.to(self.pseudo_inputs))

    # ------------------------------------------------------------------ generation
    def _labels_for(self, y: Tensor | None, n: int) -> Tensor | None:
        if self.conditional and y is None:  # labels drawn uniformly when none are given
            return torch.randint(0, self.num_classes, (n,), device=self.device)
        return y

    def sample(
        self, n: int, y: Tensor | None = None, output: str = "sample", temperature: float = 1.0
    ) -> Tensor:
        """``n`` draws of the model ``(n, *event_shape)``: ``z ~ p(z)``, then ``x ~ p(x | z)``
        (a sample of the decoder, not its mean: integer levels for discrete data). A conditional
        model draws uniform labels when ``y`` is not given. ``output="mean"`` and ``temperature``
        (:class:`VAESampleOptions`) give decoder means and codes of a narrower prior instead:
        not samples of ``p(x)``."""
        opts = VAESampleOptions(output, temperature)  # type: ignore[arg-type]  # checks them
        z = self.sample_prior(n, opts.temperature)
        return self.decode(z, self._labels_for(y, n), sample=opts.output == "sample")

    def sample_prior(self, n: int, temperature: float = 1.0) -> Tensor:
        """``n`` codes ``(n, L)`` of the prior: ``z ~ N(0, T^2 I)``; with the VampPrior a
        component ``k`` drawn uniformly, then ``z ~ N(m_k, T^2 s_k^2)``. ``T = 1``: ``p(z)``."""
        z = torch.randn(n, self.latent_dim, dtype=self.dtype, device=self.device)  # (n, L)
        if temperature != 1.0:
            z = z * temperature
        if self.vamp:
            m, log_s = self.prior_components()
            k = torch.randint(0, m.shape[0], (n,), device=self.device)
            z = m[k] + torch.exp(log_s[k]) * z
        return z

    def reconstruct(self, x: Tensor, y: Tensor | None = None, *, sample: bool = False) -> Tensor:
        """Decode the encoder mean: the decoder's mean (or a draw) given ``z = mu(x)``, shape
        ``(B, *event_shape)``."""
        mu, _ = self.encode(x, y)
        return self.decode(mu, y, sample=sample)

    def reconstructions(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Inputs above their reconstructions (decoder means), shape ``(2, B, *event_shape)``, for a
        figure of two rows."""
        return torch.stack([x.to(self.dtype), self.reconstruct(x, y)])

    def interpolate(
        self, x0: Tensor, x1: Tensor, steps: int = 8, y: Tensor | None = None
    ) -> Tensor:
        """Decoder means along the straight line between the encoder means of ``x0`` and ``x1``.

        ``x0``, ``x1``: one example ``(*event_shape)`` or a batch ``(B, *event_shape)``; returns
        ``(steps, *x0.shape)``, starting at ``reconstruct(x0)`` and ending at ``reconstruct(x1)``.
        """
        single = x0.dim() == len(self.event_shape)
        if single:
            x0, x1 = x0.unsqueeze(0), x1.unsqueeze(0)
            y = None if y is None else y.reshape(1)
        m0, _ = self.encode(x0, y)
        m1, _ = self.encode(x1, y)
        t = torch.linspace(0.0, 1.0, steps, dtype=m0.dtype, device=m0.device).view(-1, 1, 1)
        z = (1.0 - t) * m0 + t * m1  # (steps, B, L)
        ys = None if y is None else y.repeat(steps)
        out = self.decode(z.reshape(-1, self.latent_dim), ys)  # (steps * B, *event)
        out = out.reshape(steps, x0.shape[0], *self.event_shape)
        return out[:, 0] if single else out

    def latent_map(
        self, x: Tensor, y: Tensor | None = None, *, grid_size: int = 15, grid_label: int = 0
    ) -> dict[str, Tensor]:
        """Data for a 2-D picture of the latent space.

        Returns
            ``codes`` ``(B, 2)``: encoder means of ``x`` in the plane of ``directions``;
            ``directions`` ``(latent_dim, 2)``: orthonormal axes, the identity when
            ``latent_dim == 2``, else the top two principal directions of the codes (for
            ``latent_dim == 1`` the second axis is zero);
            ``grid_values`` ``(G, 2)``: the prior's quantiles 0.05 .. 0.95 along each of the
            two directions (standard normal quantiles for ``N(0, I)``; for the VampPrior those
            of 4096 of its draws projected on the direction);
            ``grid`` ``(G, G, *event_shape)``: decoder means at ``z = a u_1 + b u_2`` for ``a``
            (rows) in ``grid_values[:, 0]`` and ``b`` (columns) in ``grid_values[:, 1]``
            (decoded with label ``grid_label`` for a conditional model).
        """
        mu, _ = self.encode(x, y)  # (B, L)
        L = self.latent_dim
        if L == 2:
            directions = torch.eye(2, dtype=mu.dtype, device=mu.device)
        elif L == 1:
            directions = torch.tensor([[1.0, 0.0]], dtype=mu.dtype, device=mu.device)
        else:
            centred = mu - mu.mean(0)
            _, _, vh = torch.linalg.svd(centred, full_matrices=False)
            directions = vh[:2].T  # (L, 2)
        codes = mu @ directions  # (B, 2)
        p = torch.linspace(0.05, 0.95, grid_size, dtype=mu.dtype, device=mu.device)
        if self.vamp:  # the prior's marginal quantiles along each direction
            drawn = self.sample_prior(4096) @ directions  # (4096, 2)
            values = torch.quantile(drawn, p, dim=0)  # (G, 2)
        else:  # N(0, I) projected on a unit direction is N(0, 1)
            values = (math.sqrt(2.0) * torch.erfinv(2.0 * p - 1.0))[:, None].expand(-1, 2)
        a, b = torch.meshgrid(values[:, 0], values[:, 1], indexing="ij")
        z = a.reshape(-1, 1) * directions[:, 0] + b.reshape(-1, 1) * directions[:, 1]  # (G*G, L)
        labels = None
        if self.conditional:
            labels = torch.full((z.shape[0],), int(grid_label), device=z.device)
        grid = self.decode(z, labels).reshape(grid_size, grid_size, *self.event_shape)
        return {"codes": codes, "directions": directions, "grid_values": values, "grid": grid}


@register
class IWAE(VAE):
    """Importance weighted autoencoder (Burda et al., 2016): the networks of the ``vae`` trained
    on ``L_k`` with ``k`` importance samples, whose gradient weights each sample by its
    normalised importance weight."""

    name = "iwae"
    description = "importance weighted autoencoder (IWAE bound with k samples)"
    Config = IWAEConfig
    example = Example(
        spec=VAE.example.spec,
        config={"latent_dim": 3, "hidden": (16,), "k": 3, "eval_k": 8},
        variants=VAE.example.variants,
    )

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        """``loss = -mean L_k`` with ``k = config.k``; also the ELBO estimate from the same samples
        (``elbo``), its ``kl`` and ``recon`` terms."""
        x, y = unpack(batch)
        x = self.check_input(x)
        y1h = self._onehot(y if self.conditional else None, x.shape[0])
        mu, log_std = self._encode(x, y1h)
        k = self.config.k
        eps = torch.randn(k, *mu.shape, dtype=mu.dtype, device=mu.device)  # (k, B, L)
        components = self.prior_components()
        log_w, log_px = self._log_weights(x, y1h, mu, log_std, eps, components)  # (k, B)
        bound = torch.logsumexp(log_w, dim=0) - math.log(k)  # (B,)
        # the closed-form KL, or the VampPrior's estimate by the same samples
        kl = (gaussian_kl(mu, log_std) if not self.vamp else (log_px - log_w).mean(0)).detach()
        recon = -log_px.mean(0).detach()
        return {
            "loss": -bound.mean(),
            "elbo": -(recon + kl).mean(),
            "kl": kl.mean(),
            "recon": recon.mean(),
        }
