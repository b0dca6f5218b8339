r"""``ebm``: an energy-based model :math:`p_\theta(x) = e^{-E_\theta(x)} / Z_\theta`, trained by any of
the objectives that avoid :math:`Z_\theta` (``--set objective=``):

========  ==================================================================================
``cd``    contrastive divergence (CD-k): ``mcmc_steps`` of MALA from the data batch (``cd_init``)
``pcd``   persistent CD: 256 chains kept in a replay buffer, fresh ones started at the data,
          one independence move between modes then MALA with a step size adapted across
          updates, and the energy penalty ``alpha`` without which it diverged (Tieleman 2008;
          Du & Mordatch 2019)
``sm``    exact score matching with the Hessian trace (Hyvärinen 2005), low dimensions
``ssm``   sliced score matching (Song et al. 2019)
``dsm``   denoising score matching at ``dsm_sigma`` (Vincent 2011)
``nce``   noise-contrastive estimation against a fitted Gaussian or Gaussian mixture, with
          log Z learned as a parameter (Gutmann & Hyvärinen 2010)
``fce``   flow-contrastive estimation: the noise is a flow (``flow``, built through the
          registry) trained adversarially against the EBM (Gao et al. 2020)
========  ==================================================================================

sm, ssm and dsm anneal a blur of the data from ``anneal_sigma`` to none over ``anneal_steps``.
Each objective has its own defaults for an MLP energy (``OBJECTIVE_DEFAULTS``, with the reason
for each), chosen for issue 24's targets (KL gap at most 0.1 nats on 8gaussians and rings, 0.2 on
checkerboard, in 3000 steps of ``dgm train``, with the cosine learning-rate decay of
``train_defaults``); ``benchmarks/results/ebm_2d.json`` has what each reaches.

The maths of each objective is in :mod:`~dgm.models.ebm.contrastive` and
:mod:`~dgm.models.ebm.scorematching`; the samplers in :mod:`dgm.samplers.langevin`.

**Likelihood, honestly.** :math:`Z_\theta` is intractable in general. For 2-D data the model
computes :math:`\log Z` by the midpoint rule on a ``quadrature_points``\ :sup:`2` grid over a box
fitted to the first training batch (data range padded by ``quadrature_pad`` of the range on each
side; saved as the buffer ``quad_box``), so ``log_prob`` is exact up to quadrature error (the
density is normalised over that box). ``exact_likelihood`` is therefore a property of the
instance: True on 2-D data, False in higher dimensions. There ``log_prob`` raises and, as the model
is a :class:`~dgm.core.protocols.LikelihoodEstimator`, ``dgm eval`` reports an annealed-importance-sampling
estimate (:mod:`dgm.eval.ais`), named as an estimate: it is neither exact nor a bound on log p
(it over-estimates log p in expectation, since AIS under-estimates log Z in expectation).
``nce``/``fce`` also learn ``log_z``; it is logged, never used as the likelihood.

**Class labels** (``conditional=True``): the joint-energy view of Grathwohl et al., "Your
classifier is secretly an energy based model and you should treat it like one", ICLR 2020,
arXiv:1912.03263 (JEM). The network gives ``K`` logits ``f(x)``, and

.. math::

    E(x, y) = -f(x)_y, \qquad E(x) = -\log \sum_y e^{f(x)_y}, \qquad
    p(y \mid x) = \mathrm{softmax}(f(x))_y,

so the model is also a classifier (:meth:`EBM.classify`; its accuracy on held-out data is logged
as ``val_accuracy``). The training objective is the chosen objective on the marginal energy
``E(x)`` plus ``classify_weight`` times the cross-entropy of ``p(y | x)``: together the joint
``log p(x, y) = log p(x) + log p(y | x)``. ``sample(n, y)`` runs the MCMC on ``E(x, y)``
(without labels on ``E(x)``: samples of ``p(x)``); in 2-D ``log_prob(x, y)`` is
``log p(x | y) = -E(x, y) - log Z_y`` with ``Z_y`` by the same grid quadrature, and
``log_prob(x)`` the marginal.

**A base per class** (``noise="classes"``, the conditional default). The tether's base is then
one full-covariance Gaussian per class, ``q_y``, fitted to that class's training examples and
weighted by its frequency ``pi_y`` (quadratic discriminant analysis's generative model), and the
network tilts each:

.. math::

    E(x, y) = -f(x)_y - \tau \log(\pi_y q_y(x)), \qquad
    p(y \mid x) = \mathrm{softmax}_y(f(x)_y + \tau \log(\pi_y q_y(x))),

with the network at zero the model is the per-class Gaussians themselves. nce's noise is their
mixture, a label's chains start at its own Gaussian, and Langevin is preconditioned by the
factor of the component each chain starts in. One Gaussian fitted to all classes is a poor start
for a class-conditional chain in 784 dimensions: on MNIST the conditional EBM on it (fitted to
one batch) reached a conditional accuracy of 0.206 in 30 minutes
(``conditional_mnist_ebm30.json``). On the per-class base, at its default 3000 training steps,
its 50-step chains read 0.934 ± 0.011 with per-class FID* 13.02 and 200-step chains 0.898 ±
0.014 with 11.47, against 0.926 and 12.97 for the per-class Gaussians alone
(``conditional_mnist_ebm.json``). Longer chains drift (1000 steps: 0.678; after 30 minutes of
training 0.44, ``conditional_mnist_ebm30classes.json``): nce's noise never
visits the low-energy regions that the tilt makes away from the data, so nothing raises them;
short chains from the base are the sampler this model is for, and its default
(``CLASS_BASE_STEPS``, 50 steps).
The noise is fitted to the first ``init_examples`` (10000) training examples, not one batch.

**Sampling** runs MCMC (:class:`EBMSampleOptions`) from the fitted Gaussian noise, the replay
buffer (``pcd``) or the flow (``fce``); it is approximate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgm.core.errors import ConfigError, DgmError
from dgm.core.likelihood import Likelihood
from dgm.core.model import Batch, Example, Model, Stepper, check_labels, unpack
from dgm.core.registry import build, register
from dgm.core.spec import DataSpec
from dgm.models.ebm.contrastive import cd_loss, nce_loss
from dgm.models.ebm.energy import ConvEnergy, MLPEnergy, QuadraticEnergy
from dgm.models.ebm.noise import GaussianNoise, MixtureNoise
from dgm.models.ebm.quadrature import grid_log_z
from dgm.models.ebm.scorematching import dsm_loss, sm_loss, ssm_loss
from dgm.samplers.langevin import (
    ReplayBuffer,
    grad_and_log_prob,
    hmc,
    independence_mh,
    mala,
    ula,
)

__all__ = ["EBM", "EBMConfig", "EBMSampleOptions"]

OBJECTIVES = ("cd", "pcd", "sm", "ssm", "dsm", "nce", "fce")
#: what the settings below are when neither the user nor the objective sets them
PLAIN = {"cd_init": "noise", "mcmc": "langevin", "mcmc_adapt": False, "mcmc_jumps": 0,
         "buffer_size": 10000,
         "alpha": 0.0, "reinit_prob": 0.05, "tether": 0.0, "fourier_features": 0,
         "fourier_scale": 1.0, "dsm_sigma": 0.1, "anneal_sigma": 0.0,
         "anneal_steps": 1500, "flow_mle": 0.0, "tail_weight": 0.0}  # fmt: skip
#: sampling chains' default length on a per-class base (``noise="classes"``): short chains from
#: the label's Gaussian. The nce-trained tilt has low-energy regions away from the data that
#: longer chains reach, more so the longer it trained; class accuracy (per-class FID*) of 50 /
#: 200 steps: MNIST at 3000 steps 0.934 (13.0) / 0.898 (11.5), after 30 min 0.946 (10.6) / 0.844
#: (10.8); digits at 3000 steps 0.981 (5.75) / 0.977 (5.72), after 8 min 0.938 (6.29) / 0.870
#: (8.89) (``conditional_{mnist,digits}_ebm*.json``)
CLASS_BASE_STEPS = 50
#: the negatives' MALA/HMC acceptance rate that ``mcmc_adapt`` steers toward, and its gain
ADAPT_TARGET, ADAPT_GAIN = 0.574, 0.1
_SHAPE = {"tether": 1.0, "fourier_features": 64, "fourier_scale": 2.0}
_ANNEAL = {"anneal_sigma": 0.5, "anneal_steps": 3000}
#: sm's and ssm's weight of the tail hinge (``tail_weight``): why below
TAIL_WEIGHT = 30.0
#: pcd's weight of the energy penalty alpha (E(x+)^2 + E(x-)^2) (Du & Mordatch 2019): why below
PCD_ALPHA = 0.03
#: each objective's own defaults for an MLP energy, aimed at issue 24's targets for
#: ``dgm train ebm --steps 3000`` (KL <= 0.1 nats on 8gaussians and rings, <= 0.2 on
#: checkerboard; figures in ``benchmarks/results/ebm_2d.json``). Every objective gets a tethered
#: energy (``tether`` 1: normalisable on all of R^D, the network learns a tilt of the fitted
#: Gaussian) that reads 64 random Fourier features of scale 2 (the thin rings and sharp cell
#: edges are learnt in 3000 steps, not 20000).
#:
#: * cd: chains start at the data (CD-k, Hinton 2002) and MALA leaves the model invariant, so
#:   p_model = p_data is a fixed point of the update; from the fitted Gaussian (short-run MCMC,
#:   Nijkamp et al. 2019) the energy learns to steer noise to the data instead and its density
#:   diverges (KL 6.37 nats on checkerboard), and ULA's O(h) bias feeds the same divergence.
#: * pcd: the same, with persistent chains that follow the model: 256 chains (two batches of
#:   128), so each moves every second update; fresh chains (``reinit_prob`` 0.25) start at the
#:   data, MALA's step size follows its acceptance rate (``mcmc_adapt``), and the energies carry
#:   Du & Mordatch's penalty ``alpha (E(x+)^2 + E(x-)^2)`` with ``alpha`` = ``PCD_ALPHA``.
#:   **Why pcd diverged** (measured on rings, 3000 steps at the engine's options, alpha = 0):
#:   not the sign (the loss lowers E at the data and raises it at the negatives) and not a
#:   gradient through the negatives (the samplers return detached states), and the sampler
#:   kept its target (acceptance 0.57 throughout). The CD loss ``mean E(x+) - mean E(x-)`` is
#:   blind to the common level of the energy at the points it visits, and, once the chains sit
#:   where the data are, its gradient is a difference of two nearly equal noisy means; Adam's
#:   normalised steps turn that noise into a random walk of the energy's level and roughness:
#:   E at the data went -0.5 -> 21 -> 213 and |grad_x E| 17 -> 158 -> 614 between updates 750,
#:   1000 and 2000, MALA's adapted step shrank 0.24 -> 0.005 to keep its acceptance, so the
#:   chains stopped exploring, and log Z (by quadrature) stayed near 10 from wells that neither
#:   data nor chains visit: KL 0.55 at update 750, 28 at 1000, 206 at 2000, 186 at 3000. CD from
#:   the data does not drift (each update's negatives are fresh, 20 MALA steps from the batch).
#:   The E^2 penalty gives the common level a restoring force, ``2 alpha (E(x+) + E(x-))``: with
#:   alpha = 0.03 the energy at the data stays within 0.2 of 0 and |grad_x E| near 9 for the
#:   whole run, and rings ends at KL 0.142 (alpha 0.1: 0.147; alpha 1 over-flattens it, 2.43);
#:   a quarter of fresh chains from the data each update anchors the modes' weights (0.107;
#:   half: 0.134). That left rings at 0.123: its ring masses were 0.11 / 0.21 / 0.29 / 0.39
#:   (true 0.25 each), close to proportional to the radius, because chains fresh from the data
#:   never cross the empty bands between rings, so the rings' relative weights got no gradient.
#:   Hence ``mcmc_jumps`` 1: before its MALA steps each chain makes one independence
#:   Metropolis-Hastings move proposed by the fitted Gaussian (for the tethered energy the
#:   acceptance ratio is the ratio of the tilts ``exp(E_net(x) - E_net(y))``), which can land
#:   in any ring: ring masses 0.21-0.28, KL 0.123 -> 0.029 (seeds 0, 1: 0.029, 0.026; 4 jumps
#:   0.027), 8gaussians 0.010, checkerboard 0.054, at about the cost of one more MALA step.
#: * sm, ssm, dsm: noise annealing (``anneal_sigma``): the data are blurred by N(0, s^2 I), s
#:   falling from 0.5 to 0 over ``anneal_steps``, so the relative weights of separated modes
#:   (which the Fisher divergence cannot see: the 4 rings) are learnt while the modes overlap
#:   (ssm on rings, constant lr: KL 0.281 -> 0.167). dsm anneals over 1500 steps down to
#:   ``dsm_sigma`` 0.05 (at 0.1 the blur of the rings of width 0.08 alone costs 0.17 nats) and
#:   meets the targets. sm and ssm, annealed over 3000 steps, missed on rings (seed 0: 0.166
#:   and 0.163; sm at seeds 0 / 1 / 2: 0.166 / 0.582 / 0.095) for two reasons:
#:   - **the tails.** 8.8% / 37% / 3.9% of sm's mass lay beyond [-4, 4]^2, where no data are:
#:     score matching never looks there, and the tilt's Fourier features do not decay, so the
#:     tilt lowered the tethered energy there freely. Hence ``tail_weight`` (``TAIL_WEIGHT``):
#:     a hinge that holds the tilt at points beyond the fitted Gaussian's 99% radius at least at
#:     its mean over the batch (the true tilt there is far above it, so it is inactive at the
#:     target; it does not touch the fit where the data are, unlike a penalty on the tilt at all
#:     points of the Gaussian at twice its scale, which kept the tails (rings 0.096 / 0.082 /
#:     0.115) but took 8gaussians from 0.013 to 0.133). sm on rings, seeds 0 / 1 / 2: weight 1
#:     0.070 / 0.125 / 0.081, 10 0.053 / 0.061 / 0.076, **30 0.063 / 0.065 / 0.073** (seed 3:
#:     0.053), no mass left beyond; with weight 10 8gaussians 0.012 / 0.012 / 0.008,
#:     checkerboard 0.100 / 0.118 / 0.118. Not the fix (sm on rings): a tether
#:     of weight 2 keeps the tails (< 3% beyond) but gives the outer ring 0.40-0.57 of the mass
#:     (KL 0.23 / 0.31 / 0.53), 1.25 0.19 / 0.52 / 0.14, 1.25 with ``anneal_sigma`` 1 0.13 /
#:     0.11 / 0.59; a bounded tilt (tanh) leaks 39-62% (0.55 / 1.01); AdamW's weight decay 0.01
#:     or 0.1 changes nothing (0.17-0.20 / 0.59-0.63); a linear blur schedule (s falls as
#:     (1 - t), not (1 - t)^2) gets the ring masses within 0.05 but keeps the rings too wide
#:     (0.21 / 0.20 / 0.17).
#:   - **ssm's noise.** With the hinge (weight 10), ssm on rings still ended at 0.123 / 0.097 /
#:     0.158 (seed 2: the inner ring 0.43 of the mass), 8 Gaussian projections 0.073 / 0.055 /
#:     0.112: the relative weights, which nothing pins once the blur is gone, drift with the
#:     noise of the sliced trace. Its directions are now orthogonal slices
#:     (``slice_directions``): unbiased in any dimension, and a full frame of D is the exact
#:     trace, so in 2-D its 4 projections make it exact score matching (the loss and its
#:     gradient equal sm's to float rounding). What is left is the spread of the ring weights
#:     over random streams: ssm seeds 0-4 at weight 10 0.102 / 0.090 / 0.106 / 0.048 / 0.105,
#:     at weight 30 0.083 / 0.051 / 0.100 (seeds 0-2), hence ``TAIL_WEIGHT`` 30.
#:   The Fisher divergence stays blind to the relative weights of modes that no data connect,
#:   and score matching's efficiency degrades with the target's isoperimetric constant (Koehler,
#:   Heckett & Risteski, ICLR 2023, arXiv:2210.00726): rings, four deep modes split by empty
#:   bands, is that case; annealing learns the weights while the blur joins the modes, and the
#:   cosine decay of the learning rate (``train_defaults``) keeps them from drifting far after.
#:   dsm keeps a blur (``dsm_sigma``) to the end.
#: * nce: the fitted Gaussian as noise. fce: a flow as noise (Gao et al. 2020). Untethered and
#:   trained by the adversarial game alone it ended at KL 1.49 on 8gaussians and 0.69 on rings:
#:   as the flow nears the data the classifier's signal vanishes, and the energy, a network
#:   learnt from scratch, is left wherever the game stopped. Here the energy is tethered to the
#:   flow (``E = E_net - log q_flow``: the network learns the log ratio of the data to the flow,
#:   the flow terms cancel in the classifier's logit) and the flow also learns by maximum
#:   likelihood (``flow_mle`` 1), so the model is at least as good as the flow whenever the
#:   network learns the ratio: KL 0.013 on 8gaussians after 1000 steps.
OBJECTIVE_DEFAULTS = {
    "cd": {"cd_init": "data", "mcmc": "mala", **_SHAPE},
    "pcd": {
        "cd_init": "data",
        "mcmc": "mala",
        "mcmc_adapt": True,
        "mcmc_jumps": 1,
        "buffer_size": 256,
        "alpha": PCD_ALPHA,
        "reinit_prob": 0.25,
        **_SHAPE,
    },
    "sm": {**_SHAPE, **_ANNEAL, "tail_weight": TAIL_WEIGHT},
    "ssm": {**_SHAPE, **_ANNEAL, "tail_weight": TAIL_WEIGHT},
    "dsm": {**_SHAPE, **_ANNEAL, "anneal_steps": 1500, "dsm_sigma": 0.05},
    "nce": {**_SHAPE},
    "fce": {"fourier_features": 64, "fourier_scale": 2.0, "tether": 1.0, "flow_mle": 1.0},
}


@dataclass
class EBMConfig:
    """Hyperparameters of :class:`EBM`.

    Of ``mcmc``, ``mcmc_adapt``, ``cd_init``, ``buffer_size``, ``reinit_prob``, ``alpha``,
    ``tether``, ``fourier_features``, ``fourier_scale``, ``dsm_sigma``, ``anneal_sigma``,
    ``anneal_steps``, ``flow_mle`` and ``tail_weight``, ``None`` (the default) takes the objective's own setting (``OBJECTIVE_DEFAULTS``, for an MLP energy), else the plain
    one (``PLAIN``).

    Attributes:
        objective: one of cd, pcd, sm, ssm, dsm, nce, fce (see the module docstring); nce by
            default: it meets issue 24's targets, needs no MCMC and no second derivatives (the
            cheapest step), and learns log Z. pcd, the old default, diverged on rings and
            checkerboard (KL 307 and 140 at 3000 steps) until it carried ``alpha``
            (``OBJECTIVE_DEFAULTS`` says why; benchmarks/results/ebm_2d.json).
        energy: ``"mlp"``, ``"conv"`` (images) or ``"quadratic"`` (a Gaussian energy).
        hidden: hidden widths of the MLP energy.
        channels: channels of the conv energy's layers.
        fourier_features, fourier_scale: the MLP energy reads ``F`` random Fourier features
            ``sin/cos(x W)``, ``W ~ N(0, scale^2)``, beside ``x`` (0: plain ``x``); in
            the units of the data (see :class:`~dgm.models.ebm.energy.MLPEnergy`).
        activation: smooth activation of the energy network (silu, softplus, elu, tanh).
        mcmc: sampler of the training negatives (cd/pcd): langevin (ULA), mala or hmc.
        mcmc_steps, mcmc_step_size, mcmc_leapfrog: its number of steps, step size and leapfrog
            steps (hmc); also the defaults of ``sample``.
        mcmc_jumps: independence Metropolis-Hastings moves proposed by the fitted Gaussian
            that each negative chain (cd/pcd) makes before its MALA/HMC/Langevin steps
            (:func:`~dgm.samplers.langevin.independence_mh`): moves between modes that local
            steps cannot cross; pcd's default 1.
        mcmc_adapt: the negatives' MALA/HMC step size follows their acceptance rate from one
            update to the next, ``log h += 0.1 (rate - 0.574)``, starting at ``mcmc_step_size``.
        cd_init: cd chains, and pcd's fresh chains, start from ``"noise"`` (the fitted
            Gaussian) or the ``"data"`` batch.
        buffer_size, reinit_prob: replay buffer of pcd (number of persistent chains,
            probability of a fresh chain).
        alpha: weight of the energy-magnitude penalty ``alpha (E(x+)^2 + E(x-)^2)`` of cd/pcd
            (on the total energy, the tether term included); pcd's default 0.03 keeps its
            energy from drifting (``OBJECTIVE_DEFAULTS``).
        ssm_projections: directions per example of ssm (orthogonal slices, ``slice_directions``).
        dsm_sigma: noise level of dsm.
        anneal_sigma, anneal_steps: sm, ssm and dsm fit the data blurred by
            ``N(0, s^2 I)``, ``s = anneal_sigma (1 - t / anneal_steps)^2`` at training step
            ``t`` and 0 from ``anneal_steps`` on (dsm: at least ``dsm_sigma``), so that the
            weights of separated modes are learnt while the blur joins them (0: off).
        tail_weight: weight of the tail hinge ``mean relu(mean E_net(x) - E_net(z))^2`` over
            points ``z`` of the fitted Gaussian widened 2 times beyond its 99% Mahalanobis
            radius, where data are rare (``GaussianNoise.tail_sample``): the network's tilt may
            not make the energy there lower than its mean at the data batch; sm's and ssm's
            default ``TAIL_WEIGHT``, which keeps the mass that they leak where they never look
            (``OBJECTIVE_DEFAULTS``); needs the Gaussian noise.
        noise, noise_components, noise_ratio: the noise (nce's noise, the tether's base, the
            chains' start), fitted to the first ``init_examples`` training examples:
            ``"gaussian"``, a ``"mixture"`` of ``noise_components`` Gaussians fitted by EM (nce
            only), or ``"classes"``, one Gaussian per class weighted by the class frequencies
            (conditional models; their default); and the number of noise samples per data
            point. With ``"classes"`` the tether is per class (module docstring).
        flow, flow_depth, flow_hidden, flow_mle: fce's flow (a registry name), its size, and the
            weight of the flow's maximum-likelihood loss added to its adversarial loss (fce's
            default 1, ``OBJECTIVE_DEFAULTS``; 0: the adversarial game alone).
        quadrature_points, quadrature_pad: 2-D log Z grid size and box padding.
        tether: weight ``tau`` of the base density in the energy,
            ``E(x) = E_net(x) - tau log q(x)`` with ``q`` the noise fitted to the data, or fce's
            flow (an exponential tilting of ``q``). ``tau = 1`` makes ``p`` normalisable on all of
            R^D for any network of sub-quadratic growth and starts AIS at ``p``'s own base; 0: the
            plain network (the default of non-MLP energies).
        conditional: condition on class labels (needs ``num_classes`` in the data spec): the
            joint-energy model of Grathwohl et al. 2020 (module docstring), also a classifier.
        classify_weight: weight of the cross-entropy of ``p(y | x)`` added to the objective
            (conditional models only).
    """

    #: keys of earlier versions and their names now (saved runs are translated)
    renamed: ClassVar[dict[str, str]] = {"flow_layers": "flow_depth"}

    objective: Literal["cd", "pcd", "sm", "ssm", "dsm", "nce", "fce"] = "nce"
    energy: Literal["mlp", "conv", "quadratic"] = "mlp"
    hidden: tuple[int, ...] = (128, 128)
    fourier_features: int | None = None
    fourier_scale: float | None = None
    channels: tuple[int, ...] = (32, 64)
    activation: str = "silu"
    mcmc: Literal["langevin", "mala", "hmc"] | None = None
    mcmc_steps: int = 20
    mcmc_step_size: float = 0.01
    mcmc_leapfrog: int = 5
    mcmc_adapt: bool | None = None
    mcmc_jumps: int | None = None
    cd_init: Literal["noise", "data"] | None = None
    buffer_size: int | None = None
    reinit_prob: float | None = None
    alpha: float | None = None
    ssm_projections: int = 4
    dsm_sigma: float | None = None
    anneal_sigma: float | None = None
    anneal_steps: int | None = None
    noise: Literal["gaussian", "mixture", "classes"] | None = None
    noise_components: int = 8
    noise_ratio: float = 1.0
    flow: str = "nsf"
    flow_depth: int = 4
    flow_hidden: tuple[int, ...] = (64, 64)
    flow_mle: float | None = None
    tail_weight: float | None = None
    quadrature_points: int = 256
    quadrature_pad: float = 1.0
    tether: float | None = None
    conditional: bool = False
    classify_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.noise is None:  # a conditional model tilts a Gaussian per class
            self.noise = "classes" if self.conditional else "gaussian"
        if self.noise == "classes" and not self.conditional:
            raise ConfigError(
                "noise='classes' fits one Gaussian per class and needs conditional=True; "
                "use noise='gaussian' or 'mixture' for an unconditional EBM"
            )
        # None: the objective's own setting (OBJECTIVE_DEFAULTS), else the plain one (PLAIN)
        own = OBJECTIVE_DEFAULTS.get(self.objective, {}) if self.energy == "mlp" else {}
        if self.noise != "gaussian":  # the tail hinge's points come from the Gaussian noise
            own = {k: v for k, v in own.items() if k != "tail_weight"}
        for key, plain in PLAIN.items():
            if getattr(self, key) is None:
                setattr(self, key, own.get(key, plain))
        positive = ("mcmc_step_size", "dsm_sigma", "noise_ratio")  # buffer_size: below
        for key in positive:
            if not getattr(self, key) > 0:
                raise ConfigError(f"{key} must be positive, not {getattr(self, key)}")
        at_least_one = ("mcmc_leapfrog", "buffer_size", "ssm_projections", "noise_components")
        for key in (*at_least_one, "flow_depth", "quadrature_points", "anneal_steps"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1, not {getattr(self, key)}")
        if self.fourier_features < 0 or not self.fourier_scale > 0:
            raise ConfigError(
                f"fourier_features must be >= 0 and fourier_scale positive, not "
                f"{self.fourier_features} and {self.fourier_scale}"
            )
        if (
            min(
                self.mcmc_steps,
                self.mcmc_jumps,
                self.alpha,
                self.flow_mle,
                self.tether,
                self.anneal_sigma,
                self.tail_weight,
            )
            < 0
        ):
            raise ConfigError(
                "mcmc_steps, mcmc_jumps, alpha, flow_mle, tether, anneal_sigma and tail_weight "
                "must be non-negative"
            )
        if self.tail_weight > 0 and self.noise != "gaussian":
            raise ConfigError(
                f"tail_weight needs noise=gaussian (its points lie beyond the fitted Gaussian's "
                f"99% radius), not noise={self.noise}; set tail_weight=0 for a mixture"
            )
        if not 0 <= self.reinit_prob <= 1:
            raise ConfigError(f"reinit_prob must lie in [0, 1], not {self.reinit_prob}")
        if self.quadrature_pad < 0:
            raise ConfigError(f"quadrature_pad must be non-negative, not {self.quadrature_pad}")
        if self.classify_weight < 0:
            raise ConfigError(f"classify_weight must be >= 0, not {self.classify_weight}")
        if self.conditional and self.energy == "quadratic":
            raise ConfigError("a conditional EBM needs energy='mlp' or 'conv', not 'quadratic'")


@dataclass
class EBMSampleOptions:
    """Options of :meth:`EBM.sample`.

    Attributes:
        sampler: ``"langevin"`` (ULA), ``"mala"`` or ``"hmc"``.
        steps: MCMC steps (default: 10 x the training ``mcmc_steps``; with a per-class base,
            ``CLASS_BASE_STEPS``: short chains from the label's Gaussian, module docstring).
        step_size: step size (default: the training ``mcmc_step_size``).
        n_leapfrog: leapfrog steps of hmc.
        adapt: mala/hmc tune a global step size by dual averaging over the first half.
        init: chains start from ``"noise"`` (fitted Gaussian), the pcd ``"buffer"``, the fce
            ``"flow"``, or ``"auto"`` (buffer for pcd, flow for fce, else noise).
    """

    #: the options each sampler reads
    by_sampler: ClassVar[dict[str, tuple[str, ...]]] = {
        "langevin": ("steps", "step_size", "init"),
        "mala": ("steps", "step_size", "adapt", "init"),
        "hmc": ("steps", "step_size", "n_leapfrog", "adapt", "init"),
    }

    sampler: Literal["langevin", "mala", "hmc"] = "langevin"
    steps: int | None = None
    step_size: float | None = None
    n_leapfrog: int = 5
    adapt: bool = True
    init: Literal["auto", "noise", "buffer", "flow"] = "auto"


@register
class EBM(Model):
    name = "ebm"
    family = "ebm"
    description = (
        "energy-based model (cd/pcd, sm/ssm/dsm, nce, fce; MCMC sampling); log_prob by grid "
        "quadrature of log Z in 2-D, an AIS estimate otherwise"
    )
    Config = EBMConfig
    SampleOptions = EBMSampleOptions
    #: the learning rate decays to 0 (cosine) over the run: at a constant rate the stochastic
    #: objectives end noisy (dsm on rings at 3000 steps: KL 0.177 constant, 0.087 cosine); 3000
    #: steps, the run length of the objectives' defaults (issue 24), when the user gives none
    train_defaults: ClassVar[dict[str, Any]] = {"schedule": "cosine", "steps": 3000}
    needs_grad_for_inference = True
    #: the noise's full covariance (per class with ``noise="classes"``) is fitted to this many
    #: training examples, not to one batch (784 dimensions on MNIST)
    init_examples: ClassVar[int] = 10_000
    example = Example(
        spec=DataSpec((2,), num_classes=2),
        config={
            "hidden": (16, 16),
            "mcmc_steps": 5,
            "mcmc_step_size": 0.05,
            "buffer_size": 64,
            "quadrature_points": 64,
            "noise_components": 2,
            "flow_depth": 1,
            "flow_hidden": (8,),
            # the suite checks that a step lowers loss(); annealing's blurred steps need not
            "anneal_sigma": 0.0,
        },
        variants=tuple(
            [{"objective": o} for o in ("cd", "pcd", "sm", "ssm", "fce")]
            + [
                # at sigma = 0.1 the DSM gradient of a tiny batch is mostly noise (signal O(sigma^2))
                {"objective": "dsm", "dsm_sigma": 0.5},
                {"objective": "nce", "noise": "mixture"},
                {"objective": "nce", "fourier_features": 4, "tether": 1.0},
                {"objective": "sm", "fourier_features": 4},  # the Hessian through sin/cos features
                {"conditional": True},
                {"conditional": True, "objective": "cd"},
            ]
        ),
    )

    def __init__(self, spec: DataSpec, config: EBMConfig | None = None) -> None:
        super().__init__(spec, config)
        c = self.config
        ev = self.event_shape
        self.num_classes = 0
        if self.conditional:
            if not spec.num_classes:
                raise ConfigError(
                    "ebm with conditional=True needs labelled data (num_classes in the data spec)"
                )
            self.num_classes = int(spec.num_classes)
        out = max(self.num_classes, 1)  # K class logits, or one energy
        if c.energy == "mlp":
            self.energy_net: nn.Module = MLPEnergy(
                ev, c.hidden, c.activation, c.fourier_features, c.fourier_scale, out
            )
        elif c.energy == "conv":
            self.energy_net = ConvEnergy(ev, c.channels, c.activation, out)
        else:
            self.energy_net = QuadraticEnergy(ev)
        if c.noise == "classes":
            self.noise: nn.Module = MixtureNoise(ev, self.num_classes)
        elif c.noise == "mixture" and c.objective == "nce":
            self.noise = MixtureNoise(ev, c.noise_components)
        else:
            self.noise = GaussianNoise(ev)
        self.buffer = (
            ReplayBuffer(c.buffer_size, ev, c.reinit_prob) if c.objective == "pcd" else None
        )
        self.log_z = nn.Parameter(torch.zeros(())) if c.objective in ("nce", "fce") else None
        self.flow: Model | None = None
        if c.objective == "fce":
            self.flow = build(c.flow, spec, depth=c.flow_depth, hidden=c.flow_hidden)
            if not self.flow.exact_likelihood:
                raise ConfigError(f"fce needs a flow with an exact log_prob; {c.flow!r} has none")
        self.two_d = self.num_dims == 2 and len(ev) == 1
        self.register_buffer("quad_box", torch.tensor([-5.0, 5.0, -5.0, 5.0]))
        self._quad_cache: dict[int | None, tuple[Any, Tensor, Tensor]] = {}
        self._pending: tuple[Tensor, Tensor] | None = None
        self._adapted_h: float | None = None

    @property
    def exact_likelihood(self) -> bool:  # type: ignore[override]
        """True on 2-D data, where log Z is computed by grid quadrature."""
        return self.two_d

    @property
    def group_objectives(self) -> dict[str, str] | None:  # type: ignore[override]
        """``fce`` has two players: each group's step lowers its own term."""
        return {"model": "loss", "flow": "flow_loss"} if self.flow is not None else None

    # ------------------------------------------------------------------ the density
    @property
    def class_base(self) -> bool:
        """True when the tether's base is per class (``noise="classes"``, tethered, no flow):
        ``E(x, y) = -f(x)_y - tether * log(pi_y q_y(x))``."""
        return self.config.noise == "classes" and self.config.tether > 0 and self.flow is None

    def class_logits(self, x: Tensor, log_base: Tensor | None = None) -> Tensor:
        """The logits ``(B, K)`` of ``p(y | x)`` of a conditional EBM, ``-E(x, y)`` up to a
        term common to all classes: the network's ``f(x)``, plus ``tether * log(pi_y q_y(x))``
        with a per-class base (``log_base``: those ``(B, K)`` when the caller has them)."""
        if not self.conditional:
            raise DgmError("model 'ebm' was built without conditional=True: it has no classes")
        f = -self.energy_net(x)  # (B, K)
        if self.class_base:
            if log_base is None:
                log_base = self.noise.component_log_prob(x)  # (B, K)
            f = f + self.config.tether * log_base
        return f

    def energy(self, x: Tensor, y: Tensor | None = None, log_base: Tensor | None = None) -> Tensor:
        """``E(x) = E_net(x) - tether * log q(x)``, shape ``(B,)``; for a conditional EBM
        ``E_net(x) = -logsumexp_y f(x)_y``, or ``-f(x)_y`` given labels ``y (B,)`` (checked
        long labels); with a per-class base (:attr:`class_base`) ``E(x, y) = -f(x)_y - tether
        log(pi_y q_y(x))`` and ``E(x) = -logsumexp_y -E(x, y)``. ``log_base``: ``log q(x) (B,)``,
        or with a per-class base ``log(pi_y q_y(x)) (B, K)``, when the caller has it already."""
        if self.conditional and y is not None and self.class_base and log_base is None:
            # the label's own component only: 1 solve per point, not K (Langevin on E(x, y))
            f = -self.energy_net(x)  # (B, K)
            y = y.long().reshape(-1, 1)
            base = self.noise.component_log_prob_at(x, y[:, 0])  # (B,)
            return -(f.gather(1, y).squeeze(1) + self.config.tether * base)
        if self.conditional:
            f = self.class_logits(x, log_base if self.class_base else None)  # (B, K)
            if y is None:
                e = -torch.logsumexp(f, dim=-1)  # (B,)
            else:
                e = -f.gather(1, y.long().reshape(-1, 1)).squeeze(1)  # (B,)
        else:
            e = self.energy_net(x)  # (B,)
        if self.config.tether > 0 and not self.class_base:
            # fce's base density is its flow, the others' the fitted noise
            if log_base is None:
                log_base = (self.flow if self.flow is not None else self.noise).log_prob(x)
            e = e - self.config.tether * log_base
        return e

    def unnormalized_log_prob(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """``-E(x)``: log p(x) + log Z, shape ``(B,)`` (what samplers and AIS use); given labels
        ``-E(x, y)``: log p(x | y) + log Z_y."""
        return -self.energy(x, y)

    def classify(self, x: Tensor) -> Tensor:
        """The most probable class ``argmax_y p(y | x)`` of each input, long ``(B,)``."""
        x = self.check_input(x)
        return self.class_logits(x).argmax(-1)

    def log_z_quadrature(self, label: int | None = None) -> tuple[Tensor, Tensor]:
        """``(log Z, quadrature error indicator)`` on the grid (2-D only), cached until the
        parameters change; with a ``label``, ``log Z_y`` of the class energy ``E(x, y)``."""
        if not self.two_d:
            raise DgmError(f"grid quadrature of log Z needs 2-D data, not {self.event_shape}")
        params = [*self.energy_net.parameters(), *self.noise.buffers(), self.quad_box]
        key = tuple((p.data_ptr(), p._version, p.dtype) for p in params)
        cached = self._quad_cache.get(label)
        if cached is None or cached[0] != key:
            box = self.quad_box.to(self.dtype)

            def energy(v: Tensor) -> Tensor:
                if label is None:
                    return self.energy(v)
                return self.energy(v, torch.full((v.shape[0],), label, device=v.device))

            fine, err = grid_log_z(energy, box, self.config.quadrature_points)
            cached = self._quad_cache[label] = (key, fine, err)
        return cached[1], cached[2]

    def log_prob(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """``-E(x) - log Z`` with the grid log Z (2-D); exact up to quadrature error. Given
        labels, ``log p(x | y) = -E(x, y) - log Z_y``."""
        if not self.two_d:
            raise DgmError(
                f"model 'ebm' has no exact log_prob for data of shape {self.event_shape} (log Z "
                "is by quadrature in 2-D only); `dgm eval` reports an AIS estimate instead"
            )
        x = self.check_input(x)
        y = check_labels(self, y, x.shape[0]) if y is not None else None
        if y is None:
            return -self.energy(x) - self.log_z_quadrature()[0]
        log_zy = torch.stack([self.log_z_quadrature(k)[0] for k in range(self.num_classes)])
        return -self.energy(x, y) - log_zy.to(x.device)[y]

    def likelihood_info(self, **bound_options: Any) -> Likelihood:
        if bound_options:
            raise DgmError(f"model 'ebm' takes no likelihood options, got {sorted(bound_options)}")
        if not self.two_d:  # an AIS estimate, made by dgm.eval (a LikelihoodEstimator)
            return Likelihood("none", "")
        return Likelihood("exact", "log_prob", "log Z by grid quadrature")

    # ------------------------------------------------------------------ chains
    def _init(self, n: int, where: str, y: Tensor | None = None) -> Tensor:
        if where == "flow" and self.flow is not None:
            return self.flow.sample(n).detach()
        if where == "buffer" and self.buffer is not None and int(self.buffer.count) > 0:
            return self.buffer.sample(n, self.noise.sample)[0]
        if y is not None and self.config.noise == "classes":  # the label's own Gaussian
            return self.noise.sample(n, components=y)
        return self.noise.sample(n)

    def _mcmc(
        self,
        x0: Tensor,
        sampler: str,
        steps: int,
        h: float,
        leap: int,
        adapt: bool,
        y: Tensor | None = None,
    ) -> tuple[Tensor, float | None]:
        """``(final states, acceptance rate)`` of a chain on ``E(x)`` (or ``E(x, y)`` given
        labels); the rate is None for ULA."""

        def lp(v: Tensor) -> Tensor:
            return self.unnormalized_log_prob(v, y)

        if sampler == "langevin":
            C = self._preconditioner()
            if C is None or C.dim() == 2:
                score = lambda x: grad_and_log_prob(lp, x)[1]  # noqa: E731
                return ula(x0, score, h, steps, precondition=C), None
            # a factor per class: each chain is preconditioned by the component its start is
            # most likely under (fixed for the chain's run, so the target is unchanged)
            comp = self.noise.component_log_prob(x0).argmax(-1)  # (B,)
            out = torch.empty_like(x0)
            for k in comp.unique().tolist():
                mine = comp == k
                yk = None if y is None else y[mine]

                def score_k(x: Tensor, yk: Tensor | None = yk) -> Tensor:
                    return grad_and_log_prob(lambda v: self.unnormalized_log_prob(v, yk), x)[1]

                out[mine] = ula(x0[mine], score_k, h, steps, precondition=C[k])
            return out, None
        if sampler == "mala":
            res = mala(x0, lp, h, steps, adapt=adapt)
        else:
            res = hmc(x0, lp, h, leap, steps, adapt=adapt)
        return res.x, res.acceptance_rate

    def _preconditioner(self) -> Tensor | None:
        """For a tethered energy, Langevin's preconditioner: the fitted Gaussian's Cholesky factor
        scaled to a largest covariance eigenvalue of 1, so the tether's stiffest direction (on
        8x8 digits its Hessian's eigenvalues reach 300, and unadjusted Langevin at step 0.01
        diverged to NaN) moves at the pace of its widest; ``None`` (plain Langevin) otherwise."""
        if not self.config.tether > 0:
            return None
        if self.class_base:  # one factor per class (K, D, D), each scaled alike
            chols = self.noise.chols
            return chols / torch.linalg.matrix_norm(chols, ord=2)[:, None, None]
        if not isinstance(self.noise, GaussianNoise):
            return None
        chol = self.noise.chol
        return chol / torch.linalg.matrix_norm(chol, ord=2)

    def _negatives(self, x: Tensor) -> Tensor:
        c = self.config
        if c.objective == "pcd":
            assert self.buffer is not None
            init = self.noise.sample
            if c.cd_init == "data":  # fresh chains start at data points of this batch

                def init(k: int) -> Tensor:
                    return x.detach()[torch.randint(0, x.shape[0], (k,), device=x.device)]

            x0, idx = self.buffer.sample(x.shape[0], init)
        else:
            x0 = x.detach() if c.cd_init == "data" else self.noise.sample(x.shape[0])
            idx = None
        if c.mcmc_jumps > 0:  # moves between modes, proposed by the fitted Gaussian
            x0 = independence_mh(x0, self.unnormalized_log_prob, self.noise.sample,
                                 self.noise.log_prob, c.mcmc_jumps).x  # fmt: skip
        h = self.negative_step_size
        x_neg, rate = self._mcmc(x0, c.mcmc, c.mcmc_steps, h, c.mcmc_leapfrog, False)
        if c.mcmc_adapt and rate is not None and self.training:
            # Robbins-Monro on log h: the step follows the energy as it sharpens or flattens
            self._adapted_h = h * math.exp(ADAPT_GAIN * (rate - ADAPT_TARGET))
        if idx is not None:
            self._pending = (x_neg, idx)
        return x_neg

    @property
    def negative_step_size(self) -> float:
        """Step size of the training negatives' MCMC: ``mcmc_step_size``, or with
        ``mcmc_adapt`` its current adapted value (kept in memory, not in the checkpoint: a
        resumed run adapts again from ``mcmc_step_size``)."""
        return self._adapted_h if self._adapted_h is not None else self.config.mcmc_step_size

    # ------------------------------------------------------------------ training
    def on_train_start(self, train_data: Tensor, labels: Tensor | None = None) -> None:
        """Fit the noise (NCE noise, the tether's base, chain initialisation; per class from
        ``labels`` with ``noise="classes"``) and, in 2-D, the quadrature box."""
        x = train_data.to(self.device, self.dtype)
        if self.config.noise == "classes":
            if labels is None:
                raise ConfigError("ebm with noise='classes' needs the training labels to fit")
            self.noise.fit_classes(x, labels)
        else:
            self.noise.fit(x)
        if self.two_d:
            lo, hi = x.min(0).values, x.max(0).values  # (2,), (2,)
            pad = self.config.quadrature_pad * (hi - lo) + 1e-3
            lo, hi = lo - pad, hi + pad
            self.quad_box.copy_(torch.stack([lo[0], hi[0], lo[1], hi[1]]))
        if self.flow is not None:
            self.flow.on_train_start(train_data)

    def _contrastive(
        self, x: Tensor, detach_flow: bool, base: Tensor | None = None
    ) -> dict[str, Tensor]:
        c = self.config
        assert self.log_z is not None
        if self.flow is None:
            m = max(1, round(c.noise_ratio * x.shape[0]))
            nu = m / x.shape[0]
            y = self.noise.sample(m)  # (M, *event)
            if self.class_base:  # the per-class base (B, K), and the noise its logsumexp
                base_data = self.noise.component_log_prob(x) if base is None else base
                base_noise = self.noise.component_log_prob(y)
                log_q_data = torch.logsumexp(base_data, -1)
                log_q_noise = torch.logsumexp(base_noise, -1)
            else:
                log_q_data, log_q_noise = self.noise.log_prob(x), self.noise.log_prob(y)
        else:
            nu = 1.0
            y = self.flow.flow.sample(x.shape[0])  # (B, *event), reparameterised
            if detach_flow:
                y = y.detach()
            log_q_data, log_q_noise = self.flow.log_prob(x), self.flow.log_prob(y)
            if detach_flow:
                log_q_data, log_q_noise = log_q_data.detach(), log_q_noise.detach()
        # the noise is the tether's base (the flow or the fitted Gaussian): its log density,
        # computed above, is not computed again inside the energy
        if self.flow is not None or not self.class_base:
            base_data, base_noise = log_q_data, log_q_noise
        e_data = self.energy(x, log_base=base_data)
        e_noise = self.energy(y, log_base=base_noise)
        out = nce_loss(-e_data - self.log_z, log_q_data, -e_noise - self.log_z, log_q_noise, nu)
        out["log_z_learned"] = self.log_z.detach()
        return out

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        """The objective on the marginal energy ``E(x)``; for a conditional EBM plus
        ``classify_weight`` times the cross-entropy of ``p(y | x)`` (term ``ce``)."""
        x, y = unpack(batch)
        x = self.check_input(x)
        # a per-class base's log-densities (B, K) are computed once, for the objective and the
        # cross-entropy (the ten 784-D solves were most of an MNIST step)
        base = self.noise.component_log_prob(x) if self.class_base else None
        out = self._marginal_loss(x, base)
        if self.conditional:
            y = check_labels(self, y, x.shape[0])
            ce = F.cross_entropy(self.class_logits(x, base), y)
            out["loss"] = out["loss"] + self.config.classify_weight * ce
            out["ce"] = ce.detach()
        return out

    def _marginal_loss(self, x: Tensor, base: Tensor | None = None) -> dict[str, Tensor]:
        out = self._objective(x, base)
        if self.config.tail_weight > 0:
            tail = self._tail_hinge(x)
            out["loss"] = out["loss"] + self.config.tail_weight * tail
            out["tail"] = tail.detach()
        return out

    def _tail_hinge(self, x: Tensor) -> Tensor:
        """``mean relu(mean E_net(x) - E_net(z))^2`` over points ``z`` where data are rare
        (``tail_weight``): the score-matching objectives never see there, and the tilt's Fourier
        features do not decay, so without it sm on rings put 9-37% of its mass there."""
        assert isinstance(self.noise, GaussianNoise)
        z = self.noise.tail_sample(4 * x.shape[0])  # (m, *event), about 1.3 B in 2-D
        none = x.new_zeros(())  # the tilt alone: the tether's log q is not added
        level = self.energy(x, log_base=none).mean().detach()
        return torch.relu(level - self.energy(z, log_base=none)).pow(2).mean()

    def _objective(self, x: Tensor, base: Tensor | None = None) -> dict[str, Tensor]:
        """The objective's terms; ``base``: the per-class base's log-densities of ``x``
        ``(B, K)`` when the caller has them (the contrastive objectives use them)."""
        c = self.config
        if c.objective in ("cd", "pcd"):
            sigma = self.noise_level()
            if sigma > 0:  # annealing: the positives are the data blurred by N(0, sigma^2 I)
                x = x + sigma * torch.randn_like(x)
            x_neg = self._negatives(x)
            e_pos = self.energy(x, log_base=base if sigma == 0 else None)
            return cd_loss(e_pos, self.energy(x_neg), c.alpha)
        if c.objective in ("sm", "ssm"):
            sigma = self.noise_level()
            if sigma > 0:  # annealing: the score of p * N(0, sigma^2 I), sigma decaying to 0
                x = x + sigma * torch.randn_like(x)
            if c.objective == "sm":
                value = sm_loss(self.energy, x).mean()
            else:
                value = ssm_loss(self.energy, x, c.ssm_projections).mean()
        elif c.objective == "dsm":
            value = dsm_loss(self.energy, x, max(self.noise_level(), c.dsm_sigma)).mean()
        else:
            out = self._contrastive(x, detach_flow=False, base=base)
            if self.flow is not None:  # the flow's own objective: -V (+ optional MLE term)
                out["flow_loss"] = -out["loss"] - c.flow_mle * self.flow.log_prob(x).mean()
            return out
        return {"loss": value, c.objective: value.detach()}

    def noise_level(self, step: int | None = None) -> float:
        """The data noise of sm/ssm/dsm at training ``step`` (default: the step being trained in
        ``training_step``; 0 in a plain ``loss`` call): ``anneal_sigma * (1 - t)^2`` with ``t``
        the fraction of ``anneal_steps`` done, 0 from then on; dsm uses the larger of it and
        ``dsm_sigma``."""
        c = self.config
        step = self.step_in_training if step is None else step
        if c.anneal_sigma == 0 or step is None or step >= c.anneal_steps:
            return 0.0
        return c.anneal_sigma * (1 - step / c.anneal_steps) ** 2

    def param_groups(self) -> list[dict[str, Any]]:
        """The energy (and log Z); with a flow as noise (FCE), the flow as a second player."""
        model = [*self.energy_net.parameters()] + ([self.log_z] if self.log_z is not None else [])
        groups = [{"name": "model", "params": model}]
        if self.flow is not None:
            groups.append({"name": "flow", "params": list(self.flow.parameters())})
        return groups

    def training_step(self, batch: Batch, step: int, stepper: Stepper) -> dict[str, Tensor]:
        if self.flow is None:
            with self.training_at(step):  # the noise level of sm/ssm/dsm follows the step
                out = self.loss(batch)
            stepper(out["loss"], "model")
            if self._pending is not None and self.buffer is not None:
                self.buffer.push(*self._pending)
                self._pending = None
            return out
        x, y = unpack(batch)
        x = self.check_input(x)
        out = self._contrastive(x, detach_flow=True)
        if self.conditional:
            ce = F.cross_entropy(self.class_logits(x), check_labels(self, y, x.shape[0]))
            out["loss"] = out["loss"] + self.config.classify_weight * ce
            out["ce"] = ce.detach()
        stepper(out["loss"], "model")  # the EBM (and log Z) maximise V
        flow_loss = self._marginal_loss(x)["flow_loss"]  # the flow minimises V
        stepper(flow_loss, "flow")
        out["flow_loss"] = flow_loss.detach()
        return out

    # ------------------------------------------------------------------ sampling
    def sample(self, n: int, y: Tensor | None = None, **options: Any) -> Tensor:
        """``n`` approximate samples by MCMC on the energy, shape ``(n, *event_shape)``; given
        labels ``y`` on the class energy ``E(x, y)`` (samples of ``p(x | y)``)."""
        o = self.sample_config(options)
        y = check_labels(self, y, n) if y is not None else None
        c = self.config
        if o.steps is not None:
            steps = o.steps
        else:
            steps = CLASS_BASE_STEPS if self.class_base else 10 * c.mcmc_steps
        h = o.step_size if o.step_size is not None else self.negative_step_size
        where = o.init
        if where == "auto":
            where = {"pcd": "buffer", "fce": "flow"}.get(c.objective, "noise")
        x0 = self._init(n, where, y)
        return self._mcmc(x0, o.sampler, steps, h, o.n_leapfrog, o.adapt, y)[0].to(self.dtype)

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validation_metrics(self, x: Tensor, y: Tensor | None = None) -> dict[str, float]:
        """A conditional EBM's classification ``accuracy`` on held-out labelled data
        (:class:`~dgm.core.protocols.HasValidationMetrics`); nothing for an unconditional one."""
        if not self.conditional or y is None:
            return {}
        y = check_labels(self, y, x.shape[0])
        return {"accuracy": float((self.classify(x) == y).double().mean())}
