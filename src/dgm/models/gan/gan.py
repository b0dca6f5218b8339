"""``gan``: a generative adversarial network trained by dgm's one engine.

A generator ``G`` maps noise ``z ~ N(0, I)`` to samples; a discriminator ``D`` learns to tell them
from data, and ``G`` learns to fool it (Goodfellow et al., NeurIPS 2014). The two players' losses
are in :mod:`dgm.models.gan.losses` (``loss=minimax|non-saturating|wgan-gp|hinge``); the networks
(MLP for vectors, DCGAN-style convolutions for images, PacGAN packing, spectral norm) in
:mod:`dgm.models.gan.networks`; WGAN-GP's gradient penalty and the R1 penalty (``r1_weight``,
any loss) in the losses module.

Training goes through the engine's ``training_step`` hook with two parameter groups,
``"discriminator"`` and ``"generator"``, hence two optimizers (Adam with ``betas = (beta1, beta2)``,
by default ``(0.5, 0.999)`` as in DCGAN; the class's ``train_defaults`` ask for 12000 steps, lr
1e-3, batch 256 and the weight average ``ema=0.999`` unless the caller sets them; a run length the
caller gives, steps, epochs or ``--max-minutes``, replaces the 12000 steps): one engine step makes
``d_steps`` discriminator updates on the step's real batch (fresh noise each) and then one
generator update on the last update's fakes (one generator pass fewer; the discriminator judges
real and fake in one pass except where R1 needs the real pass alone). The R1 penalty is on by
default (``r1_weight=0.1``, applied lazily on every 4th discriminator update): it is what made
``grid25`` converge to all 25 modes (see :class:`GANConfig`). The engine's learning-rate schedule
advances once per engine step for both players; the default is a constant rate. A cosine decay
over 8000 steps kept all 8 ``ring8`` modes on 5 of 5 seeds (94-95% high-quality samples, where
the constant rate lost a mode on one seed) but gave 86% and 88% on ``grid25`` (seeds 0 and 1)
against 90% and 90% for the constant rate; 12000 steps at the constant rate did better on both
(``benchmarks/gan_modes.py``).

**EMA.** A GAN trains with the engine's exponential moving average of the weights by default
(``train_defaults``: ``ema=0.999``, with the engine's warm-up ``min(ema, (1 + t) / (10 + t))``
after step ``t``; the mode-coverage figures depend on it): the saved weights, hence ``sample``
and ``dgm eval``, are the averaged ones, and so are the weights validation sees. ``--ema 0``
turns it off.

**Class labels** (``conditional=True``, data with ``num_classes``): the generator reads its
noise concatenated with a learned label embedding, ``G(z, e_y)``, and the discriminator is a
projection discriminator (Miyato & Koyama 2018, arXiv:1802.05637;
:mod:`~dgm.models.gan.networks`), ``D(x, y) = psi(phi(x)) + <V_y, phi(x)>``. Fakes are drawn with
the labels of the real batch, so both players see the same label frequencies; the gradient
penalties are taken at fixed labels. ``sample(n, y)`` draws class ``y``; without labels a
conditional GAN draws them uniformly. ``val_d_accuracy``/``val_d_auc`` are still logged: the
projection discriminator as a two-sample test of held-out labelled data against samples drawn
with the same labels. A conditional GAN also trains AC-GAN's auxiliary classifier beside the
projection by default (``aux_classifier``, :class:`GANConfig`): on MNIST it took the conditional
accuracy of the generator's own samples from 0.886 to 0.974.

**Vectors** are standardised inside the model (mean and std per feature from the first training
batch, kept in buffers): ``D`` sees ``(x - mean) / std`` and ``G``'s linear output is mapped back
by ``mean + std * G(z)``. **Images** (after dequantization, in ``[0, 1]``) come out of a sigmoid.

**No likelihood.** ``exact_likelihood = False`` and ``likelihood_bound = None``: ``dgm score``
refuses with one sentence and ``dgm eval`` reports sample-based metrics (C2ST, MMD, mode
coverage, FID-style). During training the engine logs, every ``eval_every`` steps,
``val_d_accuracy`` and ``val_d_auc``: the discriminator used as a two-sample test between held-out
data and as many generated samples (a packed discriminator judges packs). There is no early
stopping: the discriminator's accuracy does not rank generators (it is near 0.5 both for a good
generator and for a discriminator that has fallen behind).

>>> from dgm.core.spec import DataSpec
>>> m = GAN(DataSpec((2,)), GANConfig(hidden=(32,), pack=2))
>>> m.sample(4).shape
torch.Size([4, 2])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgm.core.errors import ConfigError, DataError
from dgm.core.model import Batch, Example, Model, Stepper, check_labels, unpack
from dgm.core.registry import register
from dgm.core.spec import DataSpec
from dgm.models.gan.losses import (
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    r1_from_output,
)
from dgm.models.gan.networks import (
    ConvDiscriminator,
    ConvGenerator,
    MLPDiscriminator,
    MLPGenerator,
)

__all__ = ["GAN", "GANConfig", "GANSampleOptions"]


@dataclass
class GANSampleOptions:
    """Options of :meth:`GAN.sample`.

    Attributes:
        truncation: ``0`` (the default): ``z ~ N(0, I)``, samples of the trained generator;
            ``t > 0``: the truncation trick (Brock, Donahue & Simonyan 2019, BigGAN): every
            component of ``z`` drawn from ``N(0, 1)`` truncated to ``[-t, t]``, which trades
            variety for fidelity; not samples of the generator's distribution.
    """

    truncation: float = 0.0

    def __post_init__(self) -> None:
        t = self.truncation
        if isinstance(t, bool) or not (isinstance(t, (int, float)) and 0 <= t < float("inf")):
            raise ConfigError(
                f"truncation must be a finite number >= 0 (0: off, the generator's own "
                f"samples), not {t!r}"
            )


@dataclass
class GANConfig:
    """Hyperparameters of the ``gan``.

    ``architecture="auto"`` picks the DCGAN-style convolutional networks for images ``(C, H, W)``
    with ``H, W >= 4`` and MLPs otherwise; ``hidden`` sets the MLP widths (both players),
    ``width`` the conv width. ``pack`` samples go into each discriminator input (PacGAN);
    ``latent_dim`` defaults to ``min(data dimension, 32)``: 2 for 2-D points, where a
    16-dimensional noise gave 6-8% high-quality samples on ``ring8`` after 2000 steps and a
    2-dimensional one 68% (the generator must fold the noise onto separated modes; with as many
    noise as data dimensions it does so far faster). ``gp_weight`` is WGAN-GP's lambda;
    ``r1_weight`` the gamma of the R1 penalty ``gamma / 2 E_data |grad D|^2`` (any loss; 0: off),
    on the standardised data the discriminator sees. ``d_steps`` defaults to 4: on ``grid25`` one
    discriminator step per generator step left the inside of the grid a uniform smear (0 to 4 of
    25 modes after 4000 steps), four
    captured 14 modes after 2400 steps. ``r1_weight`` defaults to 0.1: on ``grid25`` (seed 0, 8000
    steps, lr 1e-3) it took the modes from 15 to 25 of 25 and the high-quality samples from 79% to
    87-90%, where gamma 1 kept 24 modes but blurred them (68%) and 0.03 gave 25 modes and 85%;
    without it, more steps, a 256-wide MLP, ``pack=4`` or an 8-dimensional noise all stayed at
    12-18 modes. It costs about 1.7x the time per step (a double backward per discriminator step);
    ``r1_every = k`` applies it on every ``k``-th discriminator update only, weighted ``k`` times
    (lazy regularisation, Karras et al., StyleGAN2, CVPR 2020), which keeps the expected penalty
    and saves most of that cost: the default 4 took 20 ms per step against 26 for every update
    (``grid25``, one thread), which is what let 12000 steps fit in the time of 8000.

    Attributes:
        loss: the adversarial objective (:mod:`dgm.models.gan.losses`).
        architecture: ``"conv"`` (DCGAN-style, images), ``"mlp"`` or ``"auto"`` (conv for images
            of at least 4x4 pixels).
        latent_dim: dimension of the generator's Gaussian noise; ``None``: ``min(D, 32)``.
        hidden: hidden widths of the MLP generator and discriminator.
        width: channels of the convolutional networks.
        d_steps: discriminator updates per generator update.
        spectral_norm: spectral normalisation of the discriminator's layers.
        pack: samples per discriminator input (PacGAN; 1: off).
        gp_weight: ``lambda`` of WGAN-GP's gradient penalty (``loss="wgan-gp"`` only).
        r1_weight: ``gamma`` of the R1 penalty on the data (any loss; 0: off).
        r1_every: apply R1 on every ``k``-th discriminator update, weighted ``k`` (lazy).
        beta1, beta2: Adam's ``betas`` of both players.
        conditional: condition on class labels (needs ``num_classes`` in the data spec): a
            label embedding joins the generator's noise, and the discriminator is a projection
            discriminator.
        label_modulation: (conditional conv GANs) the label also sets a per-class gain and bias
            of every hidden feature map of the generator (conditional batch normalisation
            without the normalisation; see :class:`ConvGenerator`), not only its input. Off
            by default: on MNIST (20 min, one thread) it read 0.880 conditional accuracy
            against 0.886 without (``benchmarks/results/conditional_mnist_gan20mod.json``).
        aux_classifier: (conditional GANs) weight ``lambda_c`` of an auxiliary classifier
            (AC-GAN, Odena, Olah & Shlens 2017, arXiv:1610.09585) beside the projection: a
            class head on the discriminator's features learns the real batch's labels by
            cross-entropy (``lambda_c`` times, in the discriminator's loss), and the generator
            adds ``lambda_c`` times the cross-entropy of that head on its fakes against the
            labels they were drawn for. The head learns from real data only (AC-GAN's original
            also fits it to the fakes' labels), so the generator is pushed towards images a
            classifier of real data recognises. ``None`` (the default): 1 for a conditional
            GAN, 0 (off) otherwise. On MNIST (20 min, one thread) the projection alone drew
            samples of the class asked for 0.886 of the time and with ``aux_classifier=1``
            0.974 (0.3: 0.930), per-class FID* 6.6 against 6.85, pooled 2.90 against 2.63 (a
            second seed, in fewer steps: 0.958, FID* 9.64 / 4.46); on the digits 0.975 against
            1.000 (``benchmarks/results/conditional_mnist_gan20a1.json``,
            ``conditional_mnist_gan20a1s1.json``, ``conditional_digits_gan8aux.json``).
    """

    #: keys of earlier versions and their names now (saved runs are translated)
    renamed: ClassVar[dict[str, str]] = {"channels": "width"}
    #: keys added since and the values that behave as before (saved runs are read with them)
    added: ClassVar[dict[str, Any]] = {"aux_classifier": 0.0}

    loss: Literal["minimax", "non-saturating", "wgan-gp", "hinge"] = "non-saturating"
    architecture: Literal["auto", "mlp", "conv"] = "auto"
    latent_dim: int | None = None
    hidden: tuple[int, ...] = (128, 128, 128)
    width: int = 32
    d_steps: int = 4
    spectral_norm: bool = False
    pack: int = 2
    gp_weight: float = 10.0
    r1_weight: float = 0.1
    r1_every: int = 4
    beta1: float = 0.5
    beta2: float = 0.999
    conditional: bool = False
    label_modulation: bool = False
    aux_classifier: float | None = None

    def __post_init__(self) -> None:
        for key in ("latent_dim", "width", "d_steps", "pack", "r1_every"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1, not {getattr(self, key)}")
        if any(h < 1 for h in self.hidden):
            raise ConfigError(f"hidden sizes must be positive integers, not {list(self.hidden)}")
        for key in ("gp_weight", "r1_weight", "aux_classifier"):
            if getattr(self, key) is not None and getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0 (0 turns it off), not {getattr(self, key)}")
        for key in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"{key} must be in [0, 1), not {getattr(self, key)}")


@register
class GAN(Model):
    """Generative adversarial network; see the module docstring."""

    name = "gan"
    family = "gan"
    description = "GAN (minimax / non-saturating / WGAN-GP / hinge), MLP or DCGAN nets, PacGAN"
    Config = GANConfig
    SampleOptions = GANSampleOptions
    exact_likelihood = False
    likelihood_bound = None
    data_kinds = frozenset({"continuous"})
    group_objectives: ClassVar[dict[str, str] | None] = {
        "discriminator": "d_loss",
        "generator": "g_loss",
    }
    #: 12000 steps when the caller gives no run length: what took ring8 to 8/8 modes and grid25
    #: to 25/25 on every seed (benchmarks/results/gan_modes_*.json)
    train_defaults: ClassVar[dict[str, Any]] = {
        "steps": 12000, "lr": 1e-3, "batch_size": 256, "ema": 0.999,
    }  # fmt: skip
    example = Example(
        spec=DataSpec((2,), num_classes=2),
        config={
            "latent_dim": 4,
            "hidden": (16, 16),
            "width": 4,
            "pack": 2,
            "spectral_norm": True,
        },
        variants=({"conditional": True}, {"conditional": True, "aux_classifier": 0.0}),
    )

    def __init__(self, spec: DataSpec, config: GANConfig | None = None) -> None:
        super().__init__(spec, config)
        cfg = self.config
        shape = spec.event_shape
        image = len(shape) == 3 and shape[1] >= 4 and shape[2] >= 4
        arch = ("conv" if image else "mlp") if cfg.architecture == "auto" else cfg.architecture
        if arch == "conv" and not image:
            raise ConfigError(
                f"architecture 'conv' needs images (C, H, W) with H, W >= 4, not {shape}; use mlp"
            )
        self.arch = arch
        #: weight of AC-GAN's class loss (config ``aux_classifier``; None: 1 if conditional)
        self.aux_weight = float(
            (1.0 if self.conditional else 0.0) if cfg.aux_classifier is None else cfg.aux_classifier
        )
        if self.aux_weight > 0 and not self.conditional:
            raise ConfigError(
                f"aux_classifier={cfg.aux_classifier} needs a conditional GAN "
                "(conditional=true and labelled data); set aux_classifier=0 or conditional=true"
            )
        if cfg.label_modulation and (arch != "conv" or not self.conditional):
            raise ConfigError(
                "label_modulation needs a conditional GAN with the conv architecture "
                f"(conditional=true, images), not architecture {arch!r} with "
                f"conditional={self.conditional}"
            )
        #: dimension of the noise z
        self.latent_dim = cfg.latent_dim or min(spec.num_dims, 32)
        self.num_classes = 0
        if self.conditional:
            if not spec.num_classes:
                raise ConfigError(
                    "gan with conditional=True needs labelled data (num_classes in the data spec)"
                )
            self.num_classes = int(spec.num_classes)
        k = self.num_classes
        k_aux = k if self.aux_weight > 0 else 0
        #: the label embedding the generator reads beside the noise (conditional only)
        self.label_embed = nn.Embedding(k, self.latent_dim) if k else None
        g_in = self.latent_dim * (2 if k else 1)
        if arch == "conv":
            k_mod = k if cfg.label_modulation else 0
            self.generator: nn.Module = ConvGenerator(g_in, shape, cfg.width, num_classes=k_mod)
            self.discriminator: nn.Module = ConvDiscriminator(
                shape,
                cfg.width,
                pack=cfg.pack,
                spectral_norm=cfg.spectral_norm,
                num_classes=k,
                aux_classes=k_aux,
            )
        else:
            d = spec.num_dims
            self.generator = MLPGenerator(g_in, d, tuple(cfg.hidden))
            self.discriminator = MLPDiscriminator(
                d,
                tuple(cfg.hidden),
                pack=cfg.pack,
                spectral_norm=cfg.spectral_norm,
                num_classes=k,
                aux_classes=k_aux,
            )
        # standardisation of vector data (identity for images), set by on_train_start
        self.register_buffer("data_mean", torch.zeros(spec.num_dims))
        self.register_buffer("data_std", torch.ones(spec.num_dims))

    # ------------------------------------------------------------------ spaces
    def _to_net(self, x: Tensor) -> Tensor:
        """Data ``(B, *event)`` -> the discriminator's input space."""
        if self.arch == "conv":
            return x
        flat = (x.flatten(1) - self.data_mean) / self.data_std  # (B, D)
        return flat.reshape(x.shape)

    def _from_net(self, g: Tensor) -> Tensor:
        """Generator net space -> data ``(B, *event)``."""
        if self.arch == "conv":
            return g
        return (self.data_mean + self.data_std * g.flatten(1)).reshape(-1, *self.event_shape)

    def _noise(self, n: int, truncation: float = 0.0) -> Tensor:
        """``z (n, latent_dim)``: standard normal, or with ``truncation = t > 0`` each component
        truncated to ``[-t, t]`` (by the inverse CDF, no rejection loop)."""
        if truncation <= 0:
            return torch.randn(n, self.latent_dim, device=self.device, dtype=self.dtype)
        u = torch.rand(n, self.latent_dim, device=self.device, dtype=torch.float64)
        lo = torch.special.ndtr(torch.tensor(-float(truncation), dtype=torch.float64))
        z = torch.special.ndtri(lo + u * (1 - 2 * lo))  # (n, latent_dim) in [-t, t]
        return z.clamp(-truncation, truncation).to(self.dtype)

    def _generate(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Samples in net space ``(B, *event)`` from noise ``z (B, latent_dim)`` (and labels
        ``y (B,)`` of a conditional GAN)."""
        if self.label_embed is not None:
            assert y is not None
            z = torch.cat([z, self.label_embed(y)], dim=1)  # (B, 2 * latent_dim)
        if self.arch == "conv":
            return torch.sigmoid(self.generator(z, y))  # (B, C, H, W) in (0, 1)
        return self.generator(z).reshape(-1, *self.event_shape)

    def _real(self, batch: Batch) -> tuple[Tensor, Tensor | None]:
        """Real examples in net space ``(n, *event)`` (a multiple of ``pack``) and their checked
        labels ``(n,)`` (``None`` for an unconditional GAN, whose labels go unused)."""
        x, y = unpack(batch)
        x = self.check_input(x)
        m = self.config.pack
        n = (x.shape[0] // m) * m
        if n == 0:
            raise DataError(
                f"a batch of {x.shape[0]} examples is smaller than pack={m}; use a larger batch"
            )
        y = check_labels(self, y, x.shape[0]) if self.conditional else None
        return self._to_net(x[:n]), None if y is None else y[:n]

    # ------------------------------------------------------------------ objectives
    def _d_loss(
        self, real: Tensor, fake: Tensor, r1_scale: float = 1.0, y: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The discriminator's loss (real and fake both with labels ``y`` when conditional);
        the R1 term is weighted ``r1_scale`` times (0: skipped)."""
        cfg = self.config
        use_r1 = cfg.r1_weight > 0 and r1_scale > 0
        if use_r1:  # one forward pass on real data serves the loss and R1
            real = real.detach().requires_grad_(True)
            r, r_classes = self.discriminator.forward_with_classes(real, y)  # (B/m,), (B,K)|None
            f = self.discriminator(fake, y)  # (B/m,)
        else:  # one pass over real and fake together (no layer of D mixes examples)
            yy = None if y is None else torch.cat([y, y])
            out, classes = self.discriminator.forward_with_classes(torch.cat([real, fake]), yy)
            r, f = out.split([real.shape[0] // cfg.pack, fake.shape[0] // cfg.pack])
            r_classes = None if classes is None else classes[: real.shape[0]]
        loss = discriminator_loss(r, f, cfg.loss)
        terms = {"d_real": r.mean().detach(), "d_fake": f.mean().detach()}
        if r_classes is not None:  # AC-GAN's class head learns the real labels
            ce = F.cross_entropy(r_classes, y)
            loss = loss + self.aux_weight * ce
            terms["d_class_ce"] = ce.detach()
        if cfg.loss == "wgan-gp" and cfg.gp_weight > 0:
            gp = gradient_penalty(lambda v: self.discriminator(v, y), real, fake, pack=cfg.pack)
            loss = loss + cfg.gp_weight * gp
            terms["gp"] = gp.detach()
        if use_r1:
            r1 = r1_from_output(r, real, pack=cfg.pack)
            loss = loss + 0.5 * cfg.r1_weight * r1_scale * r1
            terms["r1"] = r1.detach()
        return loss, terms

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        """Both players' losses on ``batch`` with fresh noise: ``d_loss`` (fakes detached) and
        ``g_loss``, kept differentiable so each can be stepped; ``loss`` is their sum (only a
        summary: training steps each player on its own term, see :meth:`training_step`)."""
        real, y = self._real(batch)
        fake = self._generate(self._noise(real.shape[0]), y)
        d_loss, _ = self._d_loss(real, fake.detach(), y=y)
        g_loss, _ = self._g_loss(fake, y)
        return {"loss": d_loss + g_loss, "d_loss": d_loss, "g_loss": g_loss}

    def _g_loss(self, fake: Tensor, y: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        """The generator's loss on its samples ``fake`` drawn for labels ``y``: the adversarial
        term, plus ``aux_classifier`` times the class head's cross-entropy (AC-GAN)."""
        f, f_classes = self.discriminator.forward_with_classes(fake, y)
        loss = generator_loss(f, self.config.loss)
        if f_classes is None:
            return loss, {}
        ce = F.cross_entropy(f_classes, y)
        return loss + self.aux_weight * ce, {"g_class_ce": ce.detach()}

    def param_groups(self) -> list[dict[str, Any]]:
        """The two players, each with its own Adam ``betas``."""
        betas = (self.config.beta1, self.config.beta2)
        return [
            {
                "name": name,
                "params": [p for p in net.parameters() if p.requires_grad],
                "betas": betas,
            }
            for name, net in (("discriminator", self.discriminator), ("generator", self._g_nets))
        ]

    @property
    def _g_nets(self) -> nn.Module:
        """The generator's parameters: its network and the label embedding it reads."""
        if self.label_embed is None:
            return self.generator
        return nn.ModuleList([self.generator, self.label_embed])

    def training_step(self, batch: Batch, step: int, stepper: Stepper) -> dict[str, Tensor]:
        """``d_steps`` discriminator updates, each on fresh fakes, then one generator update on
        the last update's fakes: the same draw serves both players (as in DCGAN's loop), one
        generator pass per step fewer; the discriminator judges real and fake in one pass."""
        cfg = self.config
        real, y = self._real(batch)  # (B, *event), (B,) or None
        b = real.shape[0]
        logged: dict[str, Tensor] = {}  # the last update's terms; r1 from the last that had it
        for i in range(cfg.d_steps):
            last = i == cfg.d_steps - 1
            with torch.set_grad_enabled(last):  # the last fakes also serve the generator step
                fake = self._generate(self._noise(b), y)
            lazy = (step * cfg.d_steps + i) % cfg.r1_every == 0  # R1 on every r1_every-th update
            d_loss, terms = self._d_loss(
                real, fake.detach(), float(cfg.r1_every) if lazy else 0.0, y
            )
            logged.update(terms)
            stepper(d_loss, "discriminator")
        self.discriminator.requires_grad_(False)  # the generator step needs no D weight grads
        try:  # G is unchanged since it drew ``fake``: its graph is the generator step's
            g_loss, g_terms = self._g_loss(fake, y)
        finally:
            self.discriminator.requires_grad_(True)
        logged.update(g_terms)
        stepper(g_loss, "generator")
        d, g = d_loss.detach(), g_loss.detach()
        return {"loss": d + g, "d_loss": d, "g_loss": g, **logged}

    def on_train_start(self, train_data: Tensor, labels: Tensor | None = None) -> None:
        """Standardisation statistics of vector data from the first batch."""
        if self.arch == "mlp":
            flat = train_data.flatten(1)  # (B, D)
            self.data_mean.copy_(flat.mean(0))
            std = flat.std(0) if flat.shape[0] > 1 else torch.ones_like(self.data_std)
            self.data_std.copy_(std.clamp_min(1e-3))

    # ------------------------------------------------------------------ sampling, validation
    def sample(self, n: int, y: Tensor | None = None, truncation: float = 0.0) -> Tensor:
        """``n`` samples ``(n, *event)`` of the generator; of class ``y`` for a conditional GAN
        (without labels, drawn uniformly). ``truncation`` (:class:`GANSampleOptions`): the
        truncation trick, not samples of the generator's distribution."""
        opts = GANSampleOptions(truncation)
        if self.conditional and y is None:
            y = torch.randint(0, self.num_classes, (n,), device=self.device)
        y = check_labels(self, y, n)
        return self._from_net(self._generate(self._noise(n, opts.truncation), y))

    @torch.no_grad()
    def validation_metrics(self, x: Tensor, y: Tensor | None = None) -> dict[str, float]:
        """The discriminator as a two-sample test: held-out data ``x`` against as many samples
        (:class:`~dgm.core.protocols.HasValidationMetrics`; the engine calls it with the evaluation
        weights, the averaged ones when the run keeps an EMA).

        ``d_accuracy``: fraction of correctly labelled inputs (real: output above the threshold;
        the threshold is 0 for the logistic and hinge losses and the midpoint of the two mean
        critic values for WGAN, whose critic has no fixed offset); ``d_auc``: the probability that
        a real input scores above a generated one (Mann-Whitney), threshold-free. Both are 0.5
        when the discriminator cannot tell the two sets apart. With an auxiliary classifier
        (conditional, ``aux_classifier`` not 0) also ``d_class_accuracy``, its head's accuracy on the held-out
        labels, and ``fake_class_accuracy``, the same head on samples drawn for those labels.
        """
        real, y = self._real(x if y is None or not self.conditional else (x, y))
        r, r_classes = self.discriminator.forward_with_classes(real, y)  # (n/m,), (n, K)|None
        fake = self._generate(self._noise(real.shape[0]), y)
        f, f_classes = self.discriminator.forward_with_classes(fake, y)  # (n/m,), (n, K)|None
        t = 0.5 * (r.mean() + f.mean()) if self.config.loss == "wgan-gp" else 0.0
        acc = 0.5 * ((r > t).double().mean() + (f <= t).double().mean())
        diff = r[:, None] - f[None, :]  # (n/m, n/m)
        auc = (diff > 0).double().mean() + 0.5 * (diff == 0).double().mean()
        out = {"d_accuracy": float(acc), "d_auc": float(auc)}
        if r_classes is not None and f_classes is not None:  # AC-GAN's head on both sets
            out["d_class_accuracy"] = float((r_classes.argmax(1) == y).double().mean())
            out["fake_class_accuracy"] = float((f_classes.argmax(1) == y).double().mean())
        return out
