"""Generator and discriminator networks of the GAN family.

* **MLP** (vectors, e.g. 2-D points): ``z -> [Linear, ReLU] x L -> Linear`` and
  ``x -> [Linear, LeakyReLU(0.2)] x L -> Linear -> logit``.
* **DCGAN-style convolutions** (images ``(C, H, W)``; Radford, Metz & Chintala, ICLR 2016): the
  generator maps ``z`` linearly to a ``(2c, ceil(H/4), ceil(W/4))`` map and upsamples it twice with
  stride-2 transposed convolutions (ReLU), then a 3x3 convolution gives ``C`` channels (cropped to
  ``H x W``); the discriminator downsamples with two stride-2 4x4 convolutions (LeakyReLU 0.2) and
  reads one logit linearly. No batch normalisation: samples do not depend on the batch, train and
  eval modes agree, and WGAN-GP's per-sample gradient penalty stays valid.

**Packing** (PacGAN, Lin et al., NeurIPS 2018): the discriminator judges ``pack`` samples at once,
concatenated along features (MLP) or channels (conv), so it sees the joint distribution of
``pack`` independent samples; a generator that drops modes makes packs visibly less diverse, which
penalises mode collapse. ``(B, *event) -> (B / pack,)``; ``B`` must be a multiple of ``pack``.

**Projection discriminator** (``num_classes = K > 0``; Miyato & Koyama, "cGANs with Projection
Discriminator", ICLR 2018, arXiv:1802.05637): with ``phi(x)`` the features before the last linear
layer ``psi``, the logit of a labelled input is ``psi(phi(x)) + <V_y, phi(x)>`` with a learned
class embedding ``V``. A packed input of ``m`` samples with labels ``y_1..y_m`` uses
``sum_i V^{(i)}_{y_i}``, one embedding table per position in the pack (for ``m = 1`` exactly
Miyato & Koyama's). The conv discriminator projects the flattened feature map.

**Auxiliary classifier** (``aux_classes = K > 0``; AC-GAN, Odena, Olah & Shlens, ICML 2017,
arXiv:1610.09585): a linear head on the same features ``phi`` gives ``K`` class logits for every
sample of a pack (``pack * K`` outputs, one ``K``-way block per position), returned beside the
logit by ``forward_with_classes``.

**Spectral normalisation** (Miyato et al., ICLR 2018) divides each discriminator weight by an
estimate of its largest singular value (one power iteration per training forward), bounding the
discriminator's Lipschitz constant.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dgm.core.errors import DataError
from dgm.nn.mlp import mlp

__all__ = [
    "MLPGenerator",
    "MLPDiscriminator",
    "ConvGenerator",
    "ConvDiscriminator",
    "Projection",
    "ClassHead",
    "pack_samples",
]


def _sn(layer: nn.Module, on: bool) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(layer) if on else layer


def pack_samples(x: Tensor, pack: int) -> Tensor:
    """Group ``pack`` consecutive samples of ``x (B, d1, ...)`` into one, concatenated along their
    first axis (features or channels): ``(B, d1, ...) -> (B / pack, pack * d1, ...)``."""
    b = x.shape[0]
    if b % pack:
        raise DataError(f"a batch of {b} samples cannot be packed by {pack}; use a multiple of it")
    if pack == 1:
        return x
    return x.reshape(b // pack, pack * x.shape[1], *x.shape[2:])  # (B/m, m * d1, ...)


class MLPGenerator(nn.Module):
    """``z (B, latent_dim) -> x (B, out_dim)``, linear output."""

    def __init__(self, latent_dim: int, out_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.net = mlp(latent_dim, hidden, out_dim, "relu")

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)  # (B, out_dim)


class Projection(nn.Module):
    """The class term ``<sum_i V^{(i)}_{y_i}, phi>`` of a projection discriminator (module
    docstring): labels ``y (B,)`` and features ``phi (B / pack, F)`` to ``(B / pack,)``."""

    def __init__(self, num_classes: int, features: int, pack: int) -> None:
        super().__init__()
        self.num_classes, self.pack = num_classes, pack
        self.embed = nn.Embedding(pack * num_classes, features)

    def forward(self, y: Tensor, phi: Tensor) -> Tensor:
        k, m = self.num_classes, self.pack
        offset = torch.arange(m, device=y.device) * k  # (m,): one table per pack position
        v = self.embed(y.long().reshape(-1, m) + offset).sum(1)  # (B/m, F)
        return (v * phi).sum(-1)  # (B/m,)


class ClassHead(nn.Module):
    """AC-GAN's auxiliary classifier on packed features: ``phi (B / pack, F)`` to class logits
    ``(B, K)`` of every sample, in the order the samples were packed."""

    def __init__(self, num_classes: int, features: int, pack: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.linear = nn.Linear(features, pack * num_classes)

    def forward(self, phi: Tensor) -> Tensor:
        return self.linear(phi).reshape(-1, self.num_classes)  # (B, K)


def _project(proj: Projection | None, y: Tensor | None, phi: Tensor) -> Tensor | int:
    if proj is None:
        return 0
    if y is None:
        raise DataError("a conditional discriminator needs the labels y of its inputs")
    return proj(y, phi)


class MLPDiscriminator(nn.Module):
    """``x (B, in_dim) -> logits (B / pack,)`` on packs of ``pack`` samples; with
    ``num_classes > 0`` a projection discriminator taking labels ``y (B,)``."""

    def __init__(
        self,
        in_dim: int,
        hidden: tuple[int, ...],
        *,
        pack: int = 1,
        spectral_norm: bool = False,
        num_classes: int = 0,
        aux_classes: int = 0,
    ) -> None:
        super().__init__()
        self.pack = pack
        self.net = mlp(in_dim * pack, hidden, 1, "leaky_relu", spectral_norm=spectral_norm)
        width = hidden[-1] if hidden else in_dim * pack
        self.project = Projection(num_classes, width, pack) if num_classes > 0 else None
        self.class_head = ClassHead(aux_classes, width, pack) if aux_classes > 0 else None

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.forward_with_classes(x, y)[0]

    def forward_with_classes(
        self, x: Tensor, y: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Logits ``(B / pack,)`` and the auxiliary class logits ``(B, K)`` (``None`` without an
        auxiliary classifier), from one pass through the features."""
        xp = pack_samples(x.flatten(1), self.pack)  # (B/m, m * in_dim)
        phi = self.net[:-1](xp)  # (B/m, F): the features before the last layer
        logit = self.net[-1](phi).squeeze(-1) + _project(self.project, y, phi)  # (B/m,)
        return logit, None if self.class_head is None else self.class_head(phi)


class ConvGenerator(nn.Module):
    """``z (B, latent_dim) -> logits of images (B, C, H, W)``, DCGAN-style (see module docs).

    With ``num_classes = K > 0`` every hidden feature map ``a`` (the linear layer's and both
    upsampling layers', before their ReLU) is modulated by its label, ``a (1 + g_y) + b_y`` with
    per-class, per-channel gains and biases initialised to zero: conditional batch normalisation
    (de Vries et al. 2017; the generator of Miyato & Koyama's projection cGAN) without the
    normalisation, so the label reaches every layer and not only the input."""

    def __init__(
        self,
        latent_dim: int,
        event_shape: tuple[int, int, int],
        channels: int,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        c_out, h, w = event_shape
        self.event_shape = event_shape
        self.h0, self.w0 = math.ceil(h / 4), math.ceil(w / 4)
        self.c0 = 2 * channels
        self.fc = nn.Sequential(nn.Linear(latent_dim, self.c0 * self.h0 * self.w0), nn.ReLU())
        self.up = nn.Sequential(
            nn.ConvTranspose2d(self.c0, channels, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, c_out, 3, padding=1),
        )
        self.modulation: nn.ModuleList | None = None
        if num_classes > 0:
            self.modulation = nn.ModuleList(
                nn.Embedding(num_classes, 2 * c) for c in (self.c0, channels, channels)
            )
            for emb in self.modulation:
                nn.init.zeros_(emb.weight)

    def _modulate(self, a: Tensor, i: int, y: Tensor | None) -> Tensor:
        """``a (B, c, h, w) * (1 + g_y) + b_y`` for the ``i``-th hidden map."""
        assert self.modulation is not None
        if y is None:
            raise ValueError("a label-conditioned generator needs labels y")
        g, b = self.modulation[i](y).chunk(2, dim=1)  # (B, c) each
        return a * (1 + g[:, :, None, None]) + b[:, :, None, None]

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        _, h, w = self.event_shape
        if self.modulation is None:
            a = self.fc(z).reshape(-1, self.c0, self.h0, self.w0)  # (B, 2c, H/4, W/4)
            return self.up(a)[:, :, :h, :w]  # (B, C, H, W)
        a = self.fc[0](z).reshape(-1, self.c0, self.h0, self.w0)  # (B, 2c, H/4, W/4)
        a = torch.relu(self._modulate(a, 0, y))
        a = torch.relu(self._modulate(self.up[0](a), 1, y))  # (B, c, H/2, W/2)
        a = torch.relu(self._modulate(self.up[2](a), 2, y))  # (B, c, H, W)
        return self.up[4](a)[:, :, :h, :w]  # (B, C, H, W)


class ConvDiscriminator(nn.Module):
    """``x (B, C, H, W) -> logits (B / pack,)``, DCGAN-style, packs stacked along channels."""

    def __init__(
        self,
        event_shape: tuple[int, int, int],
        channels: int,
        *,
        pack: int = 1,
        spectral_norm: bool = False,
        num_classes: int = 0,
        aux_classes: int = 0,
    ) -> None:
        super().__init__()
        self.pack = pack
        c_in, h, w = event_shape
        self.features = nn.Sequential(
            _sn(nn.Conv2d(c_in * pack, channels, 4, stride=2, padding=1), spectral_norm),
            nn.LeakyReLU(0.2),
            _sn(nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1), spectral_norm),
            nn.LeakyReLU(0.2),
        )
        with torch.no_grad():
            n_feat = self.features(torch.zeros(1, c_in * pack, h, w)).numel()
        self.head = _sn(nn.Linear(n_feat, 1), spectral_norm)
        self.project = Projection(num_classes, n_feat, pack) if num_classes > 0 else None
        self.class_head = ClassHead(aux_classes, n_feat, pack) if aux_classes > 0 else None

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.forward_with_classes(x, y)[0]

    def forward_with_classes(
        self, x: Tensor, y: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Logits ``(B / pack,)`` and the auxiliary class logits ``(B, K)`` (``None`` without an
        auxiliary classifier), from one pass through the features."""
        xp = pack_samples(x, self.pack)  # (B/m, m*C, H, W)
        phi = self.features(xp).flatten(1)  # (B/m, F)
        logit = self.head(phi).squeeze(-1) + _project(self.project, y, phi)  # (B/m,)
        return logit, None if self.class_head is None else self.class_head(phi)
