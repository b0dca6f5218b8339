"""One table: dgm against the best-known peer of every family, interleaved in one process.

For every pair, dgm and the peer get the same architecture (parameter counts are in the table),
batch, optimizer (``torch.optim.Adam(lr, fused=True)``, the engine's optimizer, given to both),
minibatches and number of steps. The two train in alternating chunks of ``--chunk`` steps (the
order flips every chunk), so the machine's load hits both alike; ms per training step is the
median over the chunks (at least ``--chunks`` = 3 of them) with the spread (min-max over chunks);
``speedup`` = peer ms / dgm ms (> 1: dgm is faster). Sampling, where it matters, is timed
``--chunks`` times, alternately, and reported the same way. Quality is measured on both after the
same steps (one seed; ``--seed``), with the figure named in ``quality``:

* ``kl_gap``: E_p[log p - log q] in nats on exact samples of the 2-D density (an estimate; for the
  EBMs log q normalised by dgm's quadrature on a grid, for flow matching by dgm's probability-flow
  ODE: the peer's network is scored by the same code);
* ``test_nll``: exact negative log-likelihood in nats per image on ``--test-n`` test images;
* ``test_neg_elbo``: negative ELBO (closed-form KL + Bernoulli reconstruction, 10 draws, the same
  noise for both) in nats on ``--test-n`` test images: an upper bound on the NLL;
* ``-``: timing only (U-Net step and DDIM sampling of untrained networks; GAN).

Where the ratio is short of 1.5x, the row says whether any rewrite could reach it: after the
timed chunks each side runs one more step under ``_kernels.record``, which keeps its matrix
products and convolutions and its fused Adam update with their arguments; ``ms_floor_dgm`` is
those kernels, each timed alone and warm (median of ``--floor-repeats`` runs of each, summed),
about the least any implementation of dgm's step with the same float32 products takes, and
``max_speedup`` = peer ms / that floor. ``gflop_dgm`` and ``peak_frac_*``: FLOPs of one step by
``FlopCounterMode``'s formulas (products only) and the achieved fraction of the float32 ``mm``
peak measured at the start (``roofline.gemm_peak``).

Pairs (``--pairs``; peers in the ``bench`` extra, installed with ``pip install --no-deps``):

* ``flows``: dgm NSF (coupling, and autoregressive) against nflows and zuko, the
  ``flows_2d.py`` entries (8 layers, MLP/MADE (64, 64), 8 bins) on 8gaussians;
* ``vae``: dgm ``vae`` against pythae ``VAE`` with the ``vae_vs_pythae.py`` networks
  (784-300-300-40, ELU) on binarized MNIST, batch 100;
* ``unet``: dgm's ``ddpm`` (U-Net width 32, mults (1, 2), one block, time dim 128) against
  diffusers ``UNet2DModel`` (blocks (32, 64), one layer per block, group norm 8) with
  ``DDPMScheduler.add_noise``: the epsilon-prediction step on 28x28 images, batch ``--unet-batch``;
  DDIM sampling (50 steps, 16 images): dgm ``sample(sampler="ddim")`` against diffusers'
  ``DDIMScheduler`` loop;
* ``ebm``: dgm ``ebm`` (energy MLP 128-128) against torchebm's ``ContrastiveDivergence``
  (persistent, its ``LangevinDynamics``), ``SlicedScoreMatching`` and ``DenoisingScoreMatching``
  on the same energy network, on 8gaussians and rings; Langevin sampling (100 steps, 1000 chains
  from noise) by dgm's sampler and torchebm's ``LangevinDynamics``;
* ``ebm-matched``: the same with dgm's ``ebm`` set to torchebm's algorithm (``MATCHED``: no
  tether, tail hinge or annealing; pcd with unadjusted Langevin at a fixed step from noise), so
  the ratio is of implementations doing the same work, where ``ebm`` compares dgm's defaults
  (which do more per step, for a lower KL) against torchebm's;
* ``fm``: dgm OT-CFM against torchcfm's ``ExactOptimalTransportConditionalFlowMatcher`` driving
  the same network (``flow_matching_2d.py``);
* ``made``: MADE 784-3000-784 with the direct connection, batch 100: no maintained package
  implements MADE (pip's ``made``-like names are unrelated or unmaintained; the authors'
  reference code is Theano), so the peer is the plain-PyTorch MADE written below from Germain et
  al. 2015 (masks from the degrees, eqs. 12-13; ``F.linear(x, W * M)``), the form every
  re-implementation takes;
* ``gan``: torchgan needs torchvision (which pins a torch build), so the peer is a plain-PyTorch
  loop of the same GAN: dgm's generator and discriminator networks (copies), the non-saturating
  loss (Goodfellow et al. 2014), one D and one G update per step, no packing, no R1 penalty
  (dgm's ``gan`` set to ``d_steps=1 pack=1 r1_weight=0`` alike), MLP (128, 128, 128), batch 256
  of 8gaussians. The plain loop draws fresh noise for the generator update, as most scripts do;
  dgm's step (since 6abc006) updates the generator on the discriminator update's fakes, as
  PyTorch's DCGAN example does, and judges real and fake in one discriminator pass.

PixelCNN has no pair yet (no maintained package; a plain Gated PixelCNN baseline is not written):
its step is in ``roofline.py``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/peers.py [--pairs flows vae ...] [--chunk 20]
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import time
from argparse import Namespace
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import dgm.data
import flows_2d
from _common import loadavg, median, report
from _kernels import record
from dgm.core.spec import DataSpec
from dgm.eval.density import kl_divergence
from dgm.models import build
from roofline import gemm_peak

BINARY_FLAT = DataSpec((784,), "discrete", levels=2)


def adam(params) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-3, fused=True)


def adam_step(params, loss_at: Callable[[int], Tensor]) -> Callable[[int], None]:
    """One training step on minibatch ``i``, the same for dgm and every peer: Adam (lr 1e-3) on
    ``params``, the gradient of ``loss_at(i)``."""
    opt = adam(params)

    def step(i: int) -> None:
        loss = loss_at(i)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


@dataclass
class Side:
    """One entry: ``step(i)`` is one full training step on minibatch ``i``."""

    label: str
    module: nn.Module
    step: Callable[[int], Any]
    quality: Callable[[], float] | None = None
    sample: Callable[[], Any] | None = None
    ms: list[float] = field(default_factory=list)
    sample_ms: list[float] = field(default_factory=list)

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.module.parameters())


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return 1000 * (time.perf_counter() - t0)


def spread(v: list[float]) -> str:
    return f"{min(v):.4g}-{max(v):.4g}" if v else ""


def run_pair(family: str, task: str, quality: str, make_dgm, make_peer, args) -> dict[str, Any]:
    sides = []
    for make in (make_dgm, make_peer):
        torch.manual_seed(args.seed)
        sides.append(make())
    dgm_side, peer = sides
    load0 = loadavg()
    for s in sides:  # warm-up step 0
        s.step(0)
    done = 1
    for c in range(args.chunks):
        for s in sides if c % 2 == 0 else sides[::-1]:
            t0 = time.perf_counter()
            for i in range(done, done + args.chunk):
                s.step(i)
            s.ms.append(1000 * (time.perf_counter() - t0) / args.chunk)
        done += args.chunk
    for s in sides:
        if s.sample is not None:
            for s2 in sides:
                s2.sample and s2.sample()  # warm-up
            break
    for c in range(args.chunks):
        for s in sides if c % 2 == 0 else sides[::-1]:
            if s.sample is not None:
                s.sample_ms.append(timed(s.sample))
    q = [s.quality() if s.quality is not None else None for s in sides]
    # the floor: one more step of each side (after the quality: it trains), recorded, and its
    # products and Adam update, each timed alone
    kern = [record(lambda s=s: s.step(done - 1)) for s in sides]
    floor = [k.floor_ms(args.floor_repeats) for k in kern]
    row = {
        "family": family,
        "task": task,
        "dgm": dgm_side.label,
        "peer": peer.label,
        "params_dgm": dgm_side.params,
        "params_peer": peer.params,
        "steps": done,
        "ms_step_dgm": median(dgm_side.ms),
        "ms_step_dgm_range": spread(dgm_side.ms),
        "ms_step_peer": median(peer.ms),
        "ms_step_peer_range": spread(peer.ms),
        "speedup": median(peer.ms) / median(dgm_side.ms),
        "quality": quality,
        "q_dgm": q[0] if q[0] is not None else "",
        "q_peer": q[1] if q[1] is not None else "",
        "gflop_dgm": kern[0].flops / 1e9,
        "gflop_peer": kern[1].flops / 1e9,
        "peak_frac_dgm": kern[0].flops / (median(dgm_side.ms) / 1e3) / args.peak,
        "peak_frac_peer": kern[1].flops / (median(peer.ms) / 1e3) / args.peak,
        "ms_floor_dgm": floor[0],
        "ms_floor_peer": floor[1],
        "max_speedup": median(peer.ms) / floor[0],
        "loadavg": f"{load0} / {loadavg()}",
    }
    if dgm_side.sample_ms and peer.sample_ms:
        row |= {
            "ms_sample_dgm": median(dgm_side.sample_ms),
            "ms_sample_dgm_range": spread(dgm_side.sample_ms),
            "ms_sample_peer": median(peer.sample_ms),
            "ms_sample_peer_range": spread(peer.sample_ms),
            "sample_speedup": median(peer.sample_ms) / median(dgm_side.sample_ms),
        }
    print(row, flush=True)
    return row


def total_steps(args) -> int:
    return 1 + args.chunks * args.chunk


# ------------------------------------------------------------------------------------ flows
def flow_pairs(args) -> list[dict]:
    ds = dgm.data.load("8gaussians")
    train = ds.train.float()
    g = torch.Generator().manual_seed(args.seed)
    batches = torch.randint(0, len(train), (total_steps(args), 512), generator=g)
    test = ds.density.sample(args.eval_samples, generator=torch.Generator().manual_seed(1))
    makers = flows_2d.entries()

    def side(name: str, sampler: Callable[[nn.Module, int], Tensor]) -> Callable[[], Side]:
        def make() -> Side:
            module, loss_fn, logp_fn = makers[name]()
            step = adam_step(module.parameters(), lambda i: loss_fn(train[batches[i]]))

            def quality() -> float:
                with torch.no_grad():
                    return kl_divergence(ds.density.log_prob, lambda x: logp_fn(x.float()).double(),
                                         test)["kl"]  # fmt: skip

            def sample() -> None:
                with torch.no_grad():
                    sampler(module, 1000)

            return Side(name, module, step, quality, sample)

        return make

    def dgm_sample(m, n):
        return m.sample(n)

    def zuko_sample(f, n):
        return f().sample((n,))

    def nflows_sample(f, n):
        return f.sample(n)

    pairs = [
        ("dgm nsf-coupling", "nflows nsf-coupling", nflows_sample),
        ("dgm nsf-ar", "zuko nsf-ar", zuko_sample),
        ("dgm nsf-ar", "nflows nsf-ar", nflows_sample),
    ]
    return [
        run_pair("flows", "8gaussians", "kl_gap", side(a, dgm_sample), side(b, s), args)
        for a, b, s in pairs
    ]


# -------------------------------------------------------------------------------------- vae
def vae_pairs(args) -> list[dict]:
    from pythae.models import VAE, VAEConfig  # optional peer: the ``bench`` extra

    import vae_vs_pythae as vp

    data = dgm.data.load("binarized-mnist")
    x_train = data.train.float()
    B, H, L = 100, 300, 40
    g = torch.Generator().manual_seed(args.seed)
    idx = torch.randint(0, len(x_train), (total_steps(args), B), generator=g)
    x_eval = data.test.float()[: args.test_n]
    eps = torch.randn(10, len(x_eval), L, generator=torch.Generator().manual_seed(1))

    def make_dgm() -> Side:
        # pythae's prior, N(0, I) (dgm's default on MNIST is the VampPrior)
        opts = dict(latent_dim=L, hidden=[H, H], activation="elu", eval_k=1, prior="standard")
        m = build("vae", data.spec, **opts)
        with torch.no_grad():  # as the engine calls it
            m.on_train_start(x_train[idx[0]])
        step = adam_step(m.parameters(), lambda i: m.loss(x_train[idx[i]])["loss"])

        def quality() -> float:
            m.eval()
            with torch.no_grad():
                v = vp.neg_elbo(m.encode, lambda z: m.decoder_params(z)[:, 0], x_eval, eps)
            return float(v.mean())

        return Side("dgm vae", m, step, quality)

    def make_peer() -> Side:
        first = x_train[idx[0]]
        p = (first.sum(0) + 1.0) / (B + 2.0)
        enc, dec = vp.pythae_networks(H, L, torch.logit(p))
        cfg = VAEConfig(input_dim=(1, 28, 28), latent_dim=L, reconstruction_loss="bce")
        pm = VAE(cfg, encoder=enc, decoder=dec)
        step = adam_step(pm.parameters(), lambda i: pm({"data": x_train[idx[i]]}).loss)

        def quality() -> float:
            pm.eval()

            def encode(x):
                o = pm.encoder(x)
                return o.embedding, 0.5 * o.log_covariance

            with torch.no_grad():
                return float(vp.neg_elbo(encode, pm.decoder.logits, x_eval, eps).mean())

        return Side(f"pythae {version('pythae')} VAE", pm, step, quality)

    return [run_pair("vae", "binarized-mnist", "test_neg_elbo", make_dgm, make_peer, args)]


# ---------------------------------------------------------------------------------- diffusion
def unet_pairs(args) -> list[dict]:
    from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel  # optional peer

    B, T = args.unet_batch, 1000
    x = torch.rand(total_steps(args), B, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    x = x * 2 - 1
    spec = DataSpec((1, 28, 28))

    def make_dgm() -> Side:
        m = build("ddpm", spec, unet_width=32, unet_mults=(1, 2), unet_depth=1, time_dim=64)
        m.on_train_start(x[0])
        step = adam_step(m.parameters(), lambda i: m.loss(x[i])["loss"])

        def sample() -> None:
            with m.inference():
                m.sample(16, sampler="ddim", steps=50)

        return Side("dgm ddpm (UNet 32x(1,2))", m, step, None, sample)

    def make_peer() -> Side:
        net = UNet2DModel(sample_size=28, in_channels=1, out_channels=1, layers_per_block=1,
                          block_out_channels=(32, 64), down_block_types=("DownBlock2D",) * 2,
                          up_block_types=("UpBlock2D",) * 2, norm_num_groups=8)  # fmt: skip
        sched = DDPMScheduler(num_train_timesteps=T, beta_schedule="linear")
        ddim = DDIMScheduler(num_train_timesteps=T, beta_schedule="linear")

        def loss_at(i: int) -> Tensor:
            t = torch.randint(0, T, (B,))
            noise = torch.randn_like(x[i])
            return (net(sched.add_noise(x[i], noise, t), t).sample - noise).square().mean()

        step = adam_step(net.parameters(), loss_at)

        def sample() -> None:
            ddim.set_timesteps(50)
            z = torch.randn(16, 1, 28, 28)
            with torch.inference_mode():
                for t in ddim.timesteps:
                    z = ddim.step(net(z, t).sample, t, z, eta=0.0).prev_sample

        return Side(f"diffusers {version('diffusers')} UNet2DModel", net, step, None, sample)

    return [run_pair("diffusion", "28x28 eps step; DDIM 50x16", "-", make_dgm, make_peer, args)]


# ---------------------------------------------------------------------------------------- ebm
EBM_CONFIG = {
    "pcd": {"objective": "pcd", "mcmc_steps": 20, "mcmc_step_size": 0.01, "alpha": 0.01},
    "ssm": {"objective": "ssm", "ssm_projections": 1},
    "dsm": {"objective": "dsm", "dsm_sigma": 0.05},
}


#: dgm's ebm set to do the work torchebm's objectives do, for ``ebm-matched``: no tether (the
#: energy is the network alone), no tail hinge, no noise annealing, and for pcd unadjusted
#: Langevin with a fixed step from noise (torchebm's ``LangevinDynamics``), where the ``ebm``
#: pair keeps dgm's defaults (MALA with an adapted step, chains started at the data)
MATCHED = {"tether": 0.0, "tail_weight": 0.0, "anneal_sigma": 0.0}
MATCHED_PCD = {"mcmc": "langevin", "mcmc_adapt": False, "mcmc_jumps": 0, "cd_init": "noise"}


def ebm_pair(data_name: str, objective: str, cfg: dict, args, matched: bool = False) -> dict:
    from torchebm.core import BaseModel  # optional peer: the ``bench`` extra
    from torchebm.losses import (
        ContrastiveDivergence,
        DenoisingScoreMatching,
        SlicedScoreMatching,
    )
    from torchebm.samplers import LangevinDynamics

    if matched:
        cfg = {**cfg, **MATCHED, **(MATCHED_PCD if objective == "pcd" else {})}
    ds = dgm.data.load(data_name)
    x_train = ds.train.float()
    g = torch.Generator().manual_seed(args.seed)
    idx = torch.randint(0, len(x_train), (total_steps(args), 512), generator=g)
    test = ds.density.sample(args.eval_samples, generator=torch.Generator().manual_seed(1))
    x0 = torch.randn(1000, 2, generator=torch.Generator().manual_seed(2))

    def kl(m) -> float:
        with m.inference():
            log_q = m.log_prob(test.to(m.dtype)).double()
        return float((ds.density.log_prob(test.double()) - log_q).mean())

    def make_dgm(cfg=cfg, objective=objective) -> Side:
        m = build("ebm", DataSpec((2,)), hidden=(128, 128), **cfg)
        m.on_train_start(x_train[idx[0]])
        opts = {gr["name"]: adam(gr["params"]) for gr in m.param_groups()}

        def stepper(loss, group="model"):
            opts[group].zero_grad(set_to_none=True)
            loss.backward()
            opts[group].step()

        def sample() -> None:
            m.sample(1000, sampler="langevin", steps=100, step_size=0.01, init="noise")

        return Side(f"dgm ebm {objective}", m,
                    lambda i: m.training_step(x_train[idx[i]], i, stepper),
                    lambda: kl(m), sample if objective == "pcd" else None)  # fmt: skip

    def make_peer(cfg=cfg, objective=objective) -> Side:
        m = build("ebm", DataSpec((2,)), hidden=(128, 128), **cfg)  # its energy net

        class Energy(BaseModel):
            def __init__(self):
                super().__init__()
                self.net = m.energy_net

            def forward(self, x):
                return self.net(x)

        energy = Energy()
        c = m.config
        sampler = LangevinDynamics(energy, step_size=c.mcmc_step_size, noise_scale=1.0)
        if objective == "pcd":
            loss = ContrastiveDivergence(
                energy, sampler, k_steps=c.mcmc_steps, persistent=True,
                buffer_size=c.buffer_size, new_sample_ratio=c.reinit_prob,
                energy_reg_weight=c.alpha, init_steps=0,
            )  # fmt: skip

            def loss_fn(xb):
                return loss(xb)[0]
        elif objective == "ssm":
            loss_fn = SlicedScoreMatching(energy, n_projections=1, projection_type="gaussian")
        else:
            loss_fn = DenoisingScoreMatching(energy, noise_scale=c.dsm_sigma)
        step = adam_step(energy.parameters(), lambda i: loss_fn(x_train[idx[i]]))

        def quality() -> float:
            m.on_train_start(x_train[idx[0]])  # the same quadrature box as dgm's run
            return kl(m)

        def sample() -> None:
            sampler.sample(x=x0.clone(), n_steps=100)

        return Side(f"torchebm {version('torchebm')} {objective}", energy, step, quality,
                    sample if objective == "pcd" else None)  # fmt: skip

    task = f"{data_name} {objective}" + (" matched" if matched else "")
    return run_pair("ebm", task, "kl_gap", make_dgm, make_peer, args)


def ebm_pairs(args, matched: bool = False) -> list[dict]:
    return [
        ebm_pair(data_name, objective, cfg, args, matched)
        for data_name in ("8gaussians", "rings")
        for objective, cfg in EBM_CONFIG.items()
    ]


def ebm_matched_pairs(args) -> list[dict]:
    return ebm_pairs(args, matched=True)


# --------------------------------------------------------------------------- flow matching
def fm_pairs(args) -> list[dict]:
    from torchcfm.conditional_flow_matching import ExactOptimalTransportConditionalFlowMatcher

    import flow_matching_2d as fm2d
    from dgm.data.analytic import get_density
    from dgm.models.flow_matching import FlowMatching, FlowMatchingConfig

    density = get_density("8gaussians")
    spec = DataSpec((2,))
    net = {"width": 64, "depth": 2, "rtol": 1e-5, "atol": 1e-5}
    g = torch.Generator().manual_seed(1000 + args.seed)
    first = density.sample(4096, generator=g)
    xs = density.sample(total_steps(args) * 256, generator=g).reshape(-1, 256, 2)
    ns = Namespace(test=300, rtol=1e-5)

    def quality(m) -> float:
        return fm2d.figures(m.eval(), density, ns, torch.Generator().manual_seed(7))["kl_gap"]

    def make_dgm() -> Side:
        m = FlowMatching(spec, FlowMatchingConfig(coupling="ot", **net))
        m.on_train_start(first)
        step = adam_step(m.parameters(), lambda i: m.loss(xs[i])["loss"])

        return Side("dgm flow-matching OT-CFM", m, step, lambda: quality(m))

    def make_peer() -> Side:
        m = FlowMatching(spec, FlowMatchingConfig(**net))
        m.on_train_start(first)
        fm = ExactOptimalTransportConditionalFlowMatcher(sigma=0.0)

        def loss_at(i: int) -> Tensor:
            x1, _ = m.to_model_space(xs[i])
            t, xt, ut = fm.sample_location_and_conditional_flow(torch.randn_like(x1), x1)
            return (m.velocity(xt, t) - ut).square().mean()

        step = adam_step(m.parameters(), loss_at)

        return Side(f"torchcfm {version('torchcfm')} OT-CFM", m, step, lambda: quality(m))

    return [run_pair("flow matching", "8gaussians", "kl_gap", make_dgm, make_peer, args)]


# --------------------------------------------------------------------------------------- made
class PlainMADE(nn.Module):
    """MADE (Germain et al. 2015) for binary vectors, one hidden layer, natural order: input
    degrees 1..D, hidden degrees uniform in 1..D-1, masks ``M_W[k, d] = m(k) >= d`` (eq. 12) and
    ``M_V[d, k] = d > m(k)`` (eq. 13), a direct connection masked ``d > d'``, ReLU, Bernoulli
    logits."""

    def __init__(self, d: int, h: int, generator: torch.Generator) -> None:
        super().__init__()
        deg_in = torch.arange(1, d + 1)
        deg_h = torch.randint(1, d, (h,), generator=generator)
        self.register_buffer("m1", (deg_h[:, None] >= deg_in[None, :]).float())
        self.register_buffer("m2", (deg_in[:, None] > deg_h[None, :]).float())
        self.register_buffer("md", (deg_in[:, None] > deg_in[None, :]).float())
        self.l1, self.l2 = nn.Linear(d, h), nn.Linear(h, d)
        self.direct = nn.Linear(d, d, bias=False)

    def logits(self, x: Tensor) -> Tensor:
        hid = F.relu(F.linear(x, self.l1.weight * self.m1, self.l1.bias))
        return F.linear(hid, self.l2.weight * self.m2, self.l2.bias) + F.linear(
            x, self.direct.weight * self.md
        )

    def nll(self, x: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(self.logits(x), x, reduction="none").sum(-1)


def made_pairs(args) -> list[dict]:
    data = dgm.data.load("binarized-mnist")
    x_train = data.train.float().reshape(-1, 784)
    x_test = data.test.float().reshape(-1, 784)[: args.test_n]
    g = torch.Generator().manual_seed(args.seed)
    idx = torch.randint(0, len(x_train), (total_steps(args), 100), generator=g)

    def make_dgm() -> Side:
        m = build("made", BINARY_FLAT, hidden=[3000], direct=True)
        step = adam_step(m.parameters(), lambda i: m.loss(x_train[idx[i]])["loss"])

        def quality() -> float:
            with m.inference():
                return float(-m.log_prob(x_test).mean())

        return Side("dgm made 3000 direct", m, step, quality)

    def make_peer() -> Side:
        m = PlainMADE(784, 3000, torch.Generator().manual_seed(args.seed))
        step = adam_step(m.parameters(), lambda i: m.nll(x_train[idx[i]]).mean())

        def quality() -> float:
            with torch.no_grad():
                return float(m.nll(x_test).mean())

        return Side("plain PyTorch MADE (Germain 2015)", m, step, quality)

    return [run_pair("made", "binarized-mnist b100", "test_nll", make_dgm, make_peer, args)]


# ---------------------------------------------------------------------------------------- gan
def gan_pairs(args) -> list[dict]:
    ds = dgm.data.load("8gaussians")
    x_train = ds.train.float()
    g = torch.Generator().manual_seed(args.seed)
    idx = torch.randint(0, len(x_train), (total_steps(args), 256), generator=g)
    # the plain GAN: one D and one G update per step, no packing, no R1 (dgm's defaults are
    # d_steps=4, pack=2, r1_weight=0.1: set to the plain loop's here)
    cfg = {"r1_weight": 0.0, "loss": "non-saturating", "d_steps": 1, "pack": 1}

    def make_dgm() -> Side:
        m = build("gan", DataSpec((2,)), **cfg)
        m.on_train_start(x_train[idx[0]])
        opts = {gr["name"]: torch.optim.Adam(gr["params"], lr=1e-3, betas=gr["betas"], fused=True)
                for gr in m.param_groups()}  # fmt: skip

        def stepper(loss, group):
            opts[group].zero_grad(set_to_none=True)
            loss.backward()
            opts[group].step()

        return Side("dgm gan (mlp, ns)", m, lambda i: m.training_step(x_train[idx[i]], i, stepper))

    def make_peer() -> Side:
        m = build("gan", DataSpec((2,)), **cfg)
        m.on_train_start(x_train[idx[0]])
        G, D = copy.deepcopy(m.generator), copy.deepcopy(m.discriminator)
        mean, std = m.data_mean.clone(), m.data_std.clone()
        betas = (m.config.beta1, m.config.beta2)
        zdim = m._noise(1).shape[-1]
        og = torch.optim.Adam(G.parameters(), lr=1e-3, betas=betas, fused=True)
        od = torch.optim.Adam(D.parameters(), lr=1e-3, betas=betas, fused=True)

        def step(i: int) -> None:
            real = (x_train[idx[i]] - mean) / std
            b = real.shape[0]
            with torch.no_grad():
                fake = G(torch.randn(b, zdim))
            d_loss = F.softplus(-D(real)).mean() + F.softplus(D(fake)).mean()
            od.zero_grad(set_to_none=True)
            d_loss.backward()
            od.step()
            g_loss = F.softplus(-D(G(torch.randn(b, zdim)))).mean()
            og.zero_grad(set_to_none=True)
            g_loss.backward()
            og.step()

        return Side("plain PyTorch GAN loop", nn.ModuleList([G, D]), step)

    return [run_pair("gan", "8gaussians b256", "-", make_dgm, make_peer, args)]


PAIRS = {
    "flows": flow_pairs,
    "vae": vae_pairs,
    "unet": unet_pairs,
    "ebm": ebm_pairs,
    "ebm-matched": ebm_matched_pairs,
    "fm": fm_pairs,
    "made": made_pairs,
    "gan": gan_pairs,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    ap.add_argument("--chunk", type=int, default=20, help="steps per timed chunk")
    ap.add_argument("--chunks", type=int, default=3, help="timed chunks per side (>= 3)")
    ap.add_argument("--unet-batch", type=int, default=32)
    ap.add_argument("--eval-samples", type=int, default=5000)
    ap.add_argument("--test-n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--floor-repeats", type=int, default=5, help="timed runs of each kernel")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", nargs="*", default=[], help="PAIR.chunk=N: a pair's own chunk")
    ap.add_argument("--out", default="peers")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.peak, _ = gemm_peak(repeats=7)  # FLOP/s: the fractions of peak divide by it
    per_pair = {k.split(".")[0]: int(v) for k, v in (s.split("=") for s in args.set)}
    load0 = loadavg()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()  # fmt: skip
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    commit += " (with uncommitted changes)" if dirty else ""
    rows = []
    for name in args.pairs:
        a = Namespace(**vars(args))
        a.chunk = per_pair.get(name, args.chunk)
        rows += PAIRS[name](a)
    cols = ["family", "task", "dgm", "peer", "params_dgm", "params_peer", "steps", "ms_step_dgm",
            "ms_step_dgm_range", "ms_step_peer", "ms_step_peer_range", "speedup", "quality",
            "q_dgm", "q_peer", "ms_sample_dgm", "ms_sample_peer", "sample_speedup",
            "gflop_dgm", "peak_frac_dgm", "peak_frac_peer", "ms_floor_dgm", "max_speedup",
            "loadavg"]  # fmt: skip
    extra = {
        "commit": commit,
        "loadavg_start": load0,
        "loadavg_end": loadavg(),
        "settings": {k: v for k, v in vars(args).items() if k != "peak"},
        "speedup": "peer ms / dgm ms, medians over chunks (> 1: dgm faster)",
        "peak_gflops": args.peak / 1e9,
        "floor": "ms_floor_*: one step's matrix products and fused Adam update (recorded by "
        "benchmarks/_kernels.py with their arguments), each timed alone and warm, median of "
        f"{args.floor_repeats} runs each, summed; max_speedup = peer ms / dgm's floor ms: about "
        "the most any rewrite of dgm's step that keeps its float32 products could gain over the "
        "peer; peak_frac_* = FLOPs of one step (FlopCounterMode's formulas) / ms per step / the "
        "float32 mm peak (roofline.py)",
    }
    report(args.out, rows, cols, extra)


if __name__ == "__main__":
    main()
