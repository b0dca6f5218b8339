"""The adversarial objectives of the GAN family, as functions of the discriminator's outputs.

The discriminator outputs a logit (or, for WGAN, a critic value) ``d = D(x)``;
``D*(x) = sigmoid(d)`` is the probability that ``x`` is real. With ``r = D(x_real)`` and
``f = D(G(z))``, each player minimises (means over the batch):

==============  ==========================================  ==================
loss            discriminator                               generator
==============  ==========================================  ==================
minimax         ``-log s(r) - log(1 - s(f))``               ``log(1 - s(f))``
non-saturating  ``-log s(r) - log(1 - s(f))``               ``-log s(f)``
wgan-gp         ``f - r + lambda (|grad D(x_hat)| - 1)^2``  ``-f``
hinge           ``max(0, 1 - r) + max(0, 1 + f)``           ``-f``
==============  ==========================================  ==================

with ``s`` the logistic sigmoid, written through ``softplus`` for stability:
``-log s(r) = softplus(-r)``, ``-log(1 - s(f)) = softplus(f)``. For a fixed generator the
logistic discriminator's optimum is ``D*(x) = p_data(x) / (p_data(x) + p_model(x))``, at which the
minimax value is ``2 JS(p_data || p_model) - log 4`` (Goodfellow et al., 2014). The minimax
generator loss saturates when the discriminator wins (its gradient ``-s(f)`` vanishes as
``f -> -inf``); the non-saturating one has gradient ``-(1 - s(f))``, largest exactly then.

References: I. Goodfellow et al., "Generative adversarial nets", NeurIPS 2014; M. Arjovsky,
S. Chintala and L. Bottou, "Wasserstein GAN", ICML 2017; I. Gulrajani et al., "Improved training of
Wasserstein GANs", NeurIPS 2017 (gradient penalty); L. Mescheder, A. Geiger and S. Nowozin,
"Which training methods for GANs do actually converge?", ICML 2018 (R1 penalty); J. H. Lim and
J. C. Ye, "Geometric GAN", 2017, and T. Miyato et al., "Spectral normalization for GANs",
ICLR 2018 (hinge loss).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from dgm.core.errors import ConfigError

__all__ = [
    "LOSSES",
    "discriminator_loss",
    "generator_loss",
    "gradient_penalty",
    "r1_from_output",
    "r1_penalty",
]

LOSSES = ("minimax", "non-saturating", "wgan-gp", "hinge")


def _check(kind: str) -> None:
    if kind not in LOSSES:
        raise ConfigError(f"unknown GAN loss {kind!r}; choose one of {', '.join(LOSSES)}")


def discriminator_loss(real: Tensor, fake: Tensor, kind: str) -> Tensor:
    """The discriminator's loss (without WGAN's gradient penalty) on outputs ``real (B,)`` and
    ``fake (B',)``; a scalar."""
    _check(kind)
    if kind in ("minimax", "non-saturating"):
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if kind == "wgan-gp":
        return fake.mean() - real.mean()
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()  # hinge


def generator_loss(fake: Tensor, kind: str) -> Tensor:
    """The generator's loss on the discriminator's outputs ``fake (B,)`` for its samples."""
    _check(kind)
    if kind == "minimax":
        return -F.softplus(fake).mean()  # log(1 - s(f)) = -softplus(f)
    if kind == "non-saturating":
        return F.softplus(-fake).mean()  # -log s(f)
    return -fake.mean()  # wgan-gp and hinge


def gradient_penalty(
    critic: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    *,
    pack: int = 1,
    eps: Tensor | None = None,
) -> Tensor:
    """WGAN-GP's penalty ``E[(|grad_x D(x_hat)|_2 - 1)^2]`` at ``x_hat = eps x + (1 - eps) x~``
    (``x`` real, ``x~`` generated).

    Args:
        critic: maps ``(B, *event)`` to ``(B / pack,)`` (``pack`` samples per critic input).
        real, fake: ``(B, *event)``.
        pack: samples the critic packs into one input; the norm is that of the gradient with
            respect to the whole packed input.
        eps: interpolation weights ``(B,)`` in [0, 1]; drawn uniformly when ``None``.

    The graph is kept (``create_graph``) so the penalty can be minimised.
    """
    b = real.shape[0]
    if eps is None:
        eps = torch.rand(b, device=real.device, dtype=real.dtype)  # (B,)
    w = eps.reshape(b, *([1] * (real.dim() - 1)))  # (B, 1, ...)
    x_hat = (w * real + (1.0 - w) * fake).requires_grad_(True)  # (B, *event)
    with torch.enable_grad():
        out = critic(x_hat)  # (B / pack,)
        (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)  # (B, *event)
    norms = grad.reshape(b // pack, -1).norm(dim=1)  # (B / pack,)
    return (norms - 1.0).square().mean()


def r1_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, *, pack: int = 1) -> Tensor:
    """The R1 penalty ``E_data[|grad_x D(x)|_2^2]`` (Mescheder et al., 2018), a zero-centred
    gradient penalty on real data; the discriminator's loss adds ``gamma / 2`` times it. With it,
    GAN training converges locally where unregularised training oscillates. ``critic`` maps
    ``(B, *event)`` to ``(B / pack,)``; the norm is taken per packed input."""
    x = real.detach().requires_grad_(True)  # (B, *event)
    with torch.enable_grad():
        out = critic(x)  # (B / pack,)
    return r1_from_output(out, x, pack=pack)


def r1_from_output(out: Tensor, x: Tensor, *, pack: int = 1) -> Tensor:
    """The R1 penalty from critic outputs ``out`` ``(B / pack,)`` already computed on ``x``
    ``(B, *event)`` (a leaf that requires grad): the discriminator's loss can then reuse ``out``
    for its real-data term instead of a second forward pass."""
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)  # (B, *event)
    return grad.reshape(x.shape[0] // pack, -1).square().sum(dim=1).mean()
