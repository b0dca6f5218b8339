r"""``pixelcnn``: masked convolutions over single-channel images (van den Oord et al. 2016).

van den Oord, Kalchbrenner & Kavukcuoglu, "Pixel Recurrent Neural Networks", ICML 2016,
arXiv:1601.06759 (Sec. 3.4-3.5, Fig. 5).

The image ``x in {0..L-1}^{H x W}`` is modelled pixel by pixel in raster order,
``p(x) = prod_{i,j} p(x_{ij} | x_{<ij})``, each conditional a softmax over the ``L`` levels
(2 for binarized MNIST, 17 for the 8x8 digits, 256 for MNIST). The network is

* a ``k0 x k0`` masked convolution of type ``"A"`` (hides the centre pixel) on ``2x/(L-1) - 1``;
* ``depth`` residual blocks ``h <- h + W_1x1 relu(conv_B(relu(h)) + V_b y)``, each with a
  ``k x k`` masked convolution of type ``"B"`` (shows the centre);
* a head ``W_2 relu(W_1 relu(h))`` of 1x1 convolutions giving ``L`` logits per pixel.

With ``conditional=True`` a learned per-channel bias ``V_b y`` of the one-hot class enters every
layer (Conditional PixelCNN, van den Oord et al. 2016b, eq. 4 without the gates).

**Blind spot.** Stacking raster-masked ``k x k`` kernels grows the receptive field as a staircase
that never reaches some pixels above and to the right of the current one; the Gated PixelCNN
(:mod:`dgm.models.autoregressive.gated_pixelcnn`) removes it. ``tests`` document it.

**Fast sampling.** Every layer's activation at pixel ``q`` depends on input pixels before ``q``
only, so once ``q`` is reached it never changes: the fast sampler computes each layer at the new
pixel only, from cached inputs (:mod:`dgm.nn.pixel`), ``O(layers)`` small operations per pixel
instead of one full pass over the image.

>>> from dgm.core.spec import DataSpec
>>> m = PixelCNN(DataSpec((1, 4, 4), "discrete", levels=3), PixelCNN.Config(width=8, depth=1))
>>> m.log_prob(m.sample(2)).shape
torch.Size([2])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from dgm.core.errors import ConfigError
from dgm.core.model import Example
from dgm.core.registry import register
from dgm.core.spec import DataSpec
from dgm.models.autoregressive.base import AutoregressiveModel, image_shape
from dgm.nn.masked import MaskedConv2d
from dgm.nn.pixel import PixelCache, conv_at, pointwise

__all__ = ["PixelCNN", "PixelCNNConfig"]


@dataclass
class PixelCNNConfig:
    """Hyperparameters of :class:`PixelCNN`.

    Attributes:
        width: feature maps of every hidden layer.
        depth: residual blocks after the first layer.
        first_kernel: kernel size of the type-A masked convolution (odd).
        kernel: kernel size of the type-B masked convolutions (odd).
        head: channels of the hidden 1x1 layer of the output head.
        conditional: condition on class labels (needs ``num_classes`` in the data spec).
        label_dropout: probability that a training label is replaced by a null class
            (conditional models), so the model is also unconditional: ``log_prob(x)`` and
            ``sample(n)`` without labels use that branch, and ``sample(n, y, guidance=w)`` mixes
            the two branches' logits; 0: no null class.
    """

    #: keys of earlier versions and their names now (saved runs are translated)
    renamed: ClassVar[dict[str, str]] = {"channels": "width", "blocks": "depth"}

    width: int = 64
    depth: int = 6
    first_kernel: int = 7
    kernel: int = 3
    head: int = 64
    conditional: bool = False
    label_dropout: float = 0.0

    def __post_init__(self) -> None:
        for key in ("width", "head"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1, not {getattr(self, key)}")
        if self.depth < 0:
            raise ConfigError(f"depth must be >= 0, not {self.depth}")
        for key in ("first_kernel", "kernel"):
            k = getattr(self, key)
            if k < 1 or k % 2 != 1:
                raise ConfigError(f"{key} must be a positive odd number, not {k}")


class ResidualBlock(nn.Module):
    """``h + W_1x1 relu(conv_B(relu(h)) + bias_y)``."""

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.conv = MaskedConv2d(channels, channels, kernel, "B")
        self.out = nn.Conv2d(channels, channels, 1)


@register
class PixelCNN(AutoregressiveModel):
    """PixelCNN over single-channel discrete images (see the module docstring)."""

    name = "pixelcnn"
    description = (
        "PixelCNN: masked convolutions, exact likelihood, cached fast sampling (van den Oord 2016)"
    )
    Config = PixelCNNConfig
    #: on MNIST-sized images the options of its 30-minute binarized-MNIST benchmark (90.84 nats
    #: on the full test set, one thread, ``autoregressive_nll_pixelcnn_30min.json``), the cosine
    #: decay on the time clock. ``dgm train pixelcnn --data binarized-mnist`` with them: 90.17
    #: on the full test set (``defaults_binarized_mnist.json``)
    large_image_train_defaults: ClassVar[dict[str, Any]] = {
        "max_minutes": 30,
        "batch_size": 64,
        "lr": 2e-3,
        "schedule": "cosine",
        "warmup_steps": 50,
        "grad_clip": 1.0,
    }
    example = Example(
        spec=DataSpec((1, 4, 4), kind="discrete", levels=3, num_classes=3),
        config={"width": 8, "depth": 2, "first_kernel": 3, "head": 8},
        variants=({"conditional": True, "label_dropout": 0.2},),
    )

    def __init__(self, spec: DataSpec, config: PixelCNNConfig | None = None) -> None:
        super().__init__(spec, config)
        c: PixelCNNConfig = self.config
        self.height, self.width = image_shape(spec, "pixelcnn")
        self.first = MaskedConv2d(1, c.width, c.first_kernel, "A")
        self.blocks = nn.ModuleList(ResidualBlock(c.width, c.kernel) for _ in range(c.depth))
        self.head1 = nn.Conv2d(c.width, c.head, 1)
        self.head2 = nn.Conv2d(c.head, self.levels, 1)
        # one per-channel class bias per layer (first + blocks)
        self.cond = (
            nn.Embedding(self.label_rows, c.width * (c.depth + 1)) if self.conditional else None
        )

    # ------------------------------------------------------------------ pieces
    def _scale(self, x: Tensor) -> Tensor:
        return 2.0 * x.to(self.dtype) / (self.levels - 1) - 1.0

    def _biases(self, y: Tensor | None) -> list[Tensor | None]:
        """Per-layer class biases ``(n, C)`` (``None`` without conditioning)."""
        if self.cond is None or y is None:
            return [None] * (len(self.blocks) + 1)
        return list(self.cond(y).chunk(len(self.blocks) + 1, dim=-1))  # each (n, C)

    def _head(self, h: Tensor) -> Tensor:
        return pointwise(self.head2, torch.relu(pointwise(self.head1, torch.relu(h))))

    # ------------------------------------------------------------------ the chain rule
    def logits(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Logits ``(B, H*W, L)`` in raster order; pixel ``q`` depends on pixels before ``q``.

        ``x`` may be real-valued (the tests differentiate through it); ``y`` are long labels.
        """
        biases = self._biases(y)
        h = self.first(self._scale(x))  # (B, C, H, W)
        if biases[0] is not None:
            h = h + biases[0][:, :, None, None]
        for block, b in zip(self.blocks, biases[1:]):
            a = block.conv(torch.relu(h))  # (B, C, H, W)
            if b is not None:
                a = a + b[:, :, None, None]
            h = h + pointwise(block.out, torch.relu(a))
        out = self._head(h)  # (B, L, H, W)
        return out.flatten(2).transpose(1, 2)  # (B, H*W, L)

    def fast_decoder(self, n: int, y: Tensor | None) -> _FastDecoder:
        return _FastDecoder(self, n, y)


class _FastDecoder:
    """Each layer evaluated at the new pixel only, from cached layer inputs."""

    def __init__(self, model: PixelCNN, n: int, y: Tensor | None) -> None:
        c: PixelCNNConfig = model.config
        like = next(model.parameters())
        self.model, self.q = model, 0
        self.biases = model._biases(y)
        H, W = model.height, model.width
        self.x = PixelCache(n, 1, H, W, c.first_kernel // 2, like)
        self.hidden = [PixelCache(n, c.width, H, W, c.kernel // 2, like) for _ in model.blocks]

    def logits(self) -> Tensor:
        m = self.model
        i, j = divmod(self.q, m.width)
        h = conv_at(m.first, self.x, i, j)  # (n, C)
        if self.biases[0] is not None:
            h = h + self.biases[0]
        for block, cache, b in zip(m.blocks, self.hidden, self.biases[1:]):
            cache.write(i, j, torch.relu(h))  # the type-B mask reads the centre too
            a = conv_at(block.conv, cache, i, j)  # (n, C)
            if b is not None:
                a = a + b
            h = h + pointwise(block.out, torch.relu(a))
        return self.model._head(h)  # (n, L)

    def feed(self, values: Tensor) -> None:
        i, j = divmod(self.q, self.model.width)
        self.x.write(i, j, self.model._scale(values)[:, None])
        self.q += 1
