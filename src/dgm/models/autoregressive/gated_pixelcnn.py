r"""``gated-pixelcnn``: vertical and horizontal stacks with gated activations, no blind spot.

van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves & Kavukcuoglu, "Conditional Image
Generation with PixelCNN Decoders", NeurIPS 2016, arXiv:1606.05328 (Sec. 2.1-2.3, Fig. 2).

Each of the ``depth`` gated layers ``l`` keeps two feature maps:

* the **vertical stack** ``v_l = tanh(a) * sigmoid(b)``, ``[a, b] = V_l * v_{l-1} + c_l(y)``, with
  a kernel that covers the rows above and the current row (:func:`dgm.nn.pixel.stack_mask`);
* the **horizontal stack** ``h_l = h_{l-1} + W_l gate(H_l * h_{l-1} + U_l shift(V_l * v_{l-1})
  + c_l(y))`` with a kernel over the pixels to the left on the current row (type ``"A"`` without
  the centre in the first layer, type ``"B"`` with it after), where ``shift`` moves the vertical
  pre-activations down one row so that the horizontal stack only sees rows strictly above.

``v_0 = h_0 = 2x/(L-1) - 1``; the first layer has no residual connection. A head of two 1x1
convolutions gives ``L`` logits per pixel. The output at pixel ``(i, j)`` depends on exactly the
pixels ``(i, j')`` with ``j - R <= j' < j`` and ``(i', j')`` with ``i - 1 - R <= i' < i``,
``|j' - j| <= R``, where ``R = k0 // 2 + (depth - 1) (k // 2)`` -- a full window, no blind spot.

**Fast sampling.** The horizontal stack at pixel ``(i, j)`` reads pixels before it on its row and
vertical features of the row above, which are final once that row is complete. The fast sampler
computes the vertical stack one row at a time (after the row is sampled) and the horizontal stack
at the new pixel only (:mod:`dgm.nn.pixel`).

>>> from dgm.core.spec import DataSpec
>>> spec = DataSpec((1, 4, 4), "discrete", levels=2)
>>> m = GatedPixelCNN(spec, GatedPixelCNN.Config(width=4, depth=2))
>>> m.log_prob(m.sample(2)).shape
torch.Size([2])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgm.core.errors import ConfigError
from dgm.core.model import Example
from dgm.core.registry import register
from dgm.core.spec import DataSpec
from dgm.models.autoregressive.base import AutoregressiveModel, image_shape
from dgm.nn.pixel import PixelCache, StackConv2d, channels_last, conv_at, conv_row, pointwise

__all__ = ["GatedPixelCNN", "GatedPixelCNNConfig"]


#: the network on small images (8x8 digits: 79.85 nats in 5 minutes,
#: ``benchmarks/results/autoregressive_nll_digits5.json``)
SMALL_IMAGE_SIZE = {"width": 64, "depth": 6}
#: the network on images above 16 pixels a side: deep and narrow, the 30-minute binarized-MNIST
#: recipe (83.53 nats with 2 processes, ``autoregressive_nll_gated30_c24l20_b8_ddp_time.json``;
#: ``dgm train gated-pixelcnn --data binarized-mnist`` with the batch-8 recipe on one thread:
#: 83.95, ``defaults_binarized_mnist.json``); 64x6 at batch 128 took 4.7 s a step there
LARGE_IMAGE_SIZE = {"width": 24, "depth": 20}


@dataclass
class GatedPixelCNNConfig:
    """Hyperparameters of :class:`GatedPixelCNN`.

    Attributes:
        width: feature maps of each stack (the gates use twice as many pre-activations);
            ``None``: 64 on small images, 24 on images above 16 pixels a side (MNIST).
        depth: gated layers; ``None``: 6 on small images, 20 on images above 16 pixels a side.
        first_kernel: kernel size of the first layer (odd).
        kernel: kernel size of the other layers (odd).
        head: channels of the hidden 1x1 layer of the output head.
        conditional: condition on class labels (needs ``num_classes`` in the data spec).
        label_dropout: probability that a training label is replaced by a null class
            (conditional models), so the model is also unconditional: ``log_prob(x)`` and
            ``sample(n)`` without labels use that branch, and ``sample(n, y, guidance=w)`` mixes
            the two branches' logits; 0: no null class.
    """

    #: keys of earlier versions and their names now (saved runs are translated)
    renamed: ClassVar[dict[str, str]] = {"channels": "width", "layers": "depth"}

    width: int | None = None
    depth: int | None = None
    first_kernel: int = 7
    kernel: int = 3
    head: int = 64
    conditional: bool = False
    label_dropout: float = 0.0

    def __post_init__(self) -> None:
        for key in ("width", "depth", "head"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1, not {getattr(self, key)}")
        for key in ("first_kernel", "kernel"):
            k = getattr(self, key)
            if k < 1 or k % 2 != 1:
                raise ConfigError(f"{key} must be a positive odd number, not {k}")


def gate(a: Tensor) -> Tensor:
    """``tanh(t) * sigmoid(s)``, ``[t, s] = a.chunk(2, dim=1)``: ``(n, 2C, ...) -> (n, C, ...)``.

    Computed as ``(2 sigmoid(2t) - 1) sigmoid(s)``: one ``sigmoid`` over the whole map, its first
    half doubled, in place of a ``tanh`` and a ``sigmoid`` over two strided halves of a
    channels-last map. ``torch.tanh`` goes through MKL's vector math, slow on AMD processors
    (2.5 ns an element against 0.35 for ``sigmoid`` on one thread of the AMD EPYC of
    2026-12-07). There the gate's forward and backward took 2.6 instead of 4.8 ms on the MNIST
    recipe's maps and the recipe's training step 1.09x (one thread) and 1.19x (two) less time
    (``benchmarks/results/gate.json``). The values differ from the two-function form by rounding
    (at most ~2.4e-7 in float32).
    """
    c = a.shape[1] // 2
    scale = a.new_ones((1, 2 * c) + (1,) * (a.dim() - 2))  # (1, 2C, 1, ...)
    scale[:, :c] = 2
    # chunk, not two slices: the backward of one split writes both halves' gradients into one
    # tensor, where two slices' backwards each fill a zero tensor of the full size and add them
    t, s = torch.sigmoid(a * scale).chunk(2, dim=1)  # (n, C, ...) each
    return s * (2 * t - 1)


class GatedLayer(nn.Module):
    """One layer: vertical conv, the vertical-to-horizontal link, horizontal conv, output 1x1."""

    def __init__(self, c_in: int, channels: int, kernel: int, first: bool, last: bool) -> None:
        super().__init__()
        self.first, self.last = first, last
        # the last layer's vertical output is never read; only its pre-activation feeds the link
        self.vconv = StackConv2d(c_in, 2 * channels, kernel, "vertical")
        self.link = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.hconv = StackConv2d(c_in, 2 * channels, kernel, "horizontal", centre=not first)
        self.hout = nn.Conv2d(channels, channels, 1)


def _add(a: Tensor, b: Tensor | None) -> Tensor:
    """``a (n, 2C, ...)`` plus a per-channel bias ``b (n, 2C)``, broadcast over pixels."""
    if b is None:
        return a
    return a + b.view(*b.shape, *([1] * (a.dim() - 2)))


@register
class GatedPixelCNN(AutoregressiveModel):
    """Gated PixelCNN over single-channel discrete images (see the module docstring)."""

    name = "gated-pixelcnn"
    description = (
        "Gated PixelCNN: vertical+horizontal stacks, no blind spot, cached fast sampling "
        "(van den Oord 2016)"
    )
    Config = GatedPixelCNNConfig
    #: on MNIST-sized images the 30-minute binarized-MNIST recipe: batch 32, Adam 3e-3 with a
    #: cosine decay over the time budget, bfloat16 products where the CPU has AMX or
    #: ``avx512_bf16`` (``auto``; 81.17, 81.07 and 80.96 nats, seeds 0-2, on an AMD EPYC with
    #: the latter, ``gated_pixelcnn_recipe_avx512bf16.json``).
    #: On 2 threads of an AMX host it reached 81.26, 81.32 and 80.99 nats with seeds 0-2 (bf16,
    #: channels-last maps, about 5700 steps; ``gated_pixelcnn_recipe_2threads.json``), 81.67
    #: before the layout change (4603 steps) and 82.44 in float32 (3078 steps), against 83.61 at
    #: batch 8 (10053 steps): larger batches gain, and bf16 gives 1.5x the images per second
    #: there (``precision_mnist_2threads.json``)
    large_image_train_defaults: ClassVar[dict[str, Any]] = {
        "max_minutes": 30,
        "batch_size": 32,
        "precision": "auto",
        "lr": 3e-3,
        "schedule": "cosine",  # on the time clock (``dgm.api.with_train_defaults``)
        "warmup_steps": 100,
    }
    example = Example(
        spec=DataSpec((1, 4, 4), kind="discrete", levels=3, num_classes=3),
        config={"width": 4, "depth": 2, "first_kernel": 3, "head": 8},
        variants=({"conditional": True, "label_dropout": 0.2},),
    )

    def __init__(self, spec: DataSpec, config: GatedPixelCNNConfig | None = None) -> None:
        super().__init__(spec, config)
        c: GatedPixelCNNConfig = self.config
        self.height, self.width = image_shape(spec, "gated-pixelcnn")
        own = LARGE_IMAGE_SIZE if spec.is_large_image else SMALL_IMAGE_SIZE
        width = c.width if c.width is not None else own["width"]
        depth = c.depth if c.depth is not None else own["depth"]
        #: the network's size in use (the config's ``None`` resolved by the image size)
        self.net_size = {"width": width, "depth": depth}
        self.stack = nn.ModuleList(
            GatedLayer(
                1 if l == 0 else width,
                width,
                c.first_kernel if l == 0 else c.kernel,
                first=l == 0,
                last=l == depth - 1,
            )
            for l in range(depth)
        )
        self.head1 = nn.Conv2d(width, c.head, 1)
        self.head2 = nn.Conv2d(c.head, self.levels, 1)
        self.cond = nn.Embedding(self.label_rows, 2 * width * depth) if self.conditional else None

    @property
    def receptive_radius(self) -> int:
        """``R``: the output at a pixel sees ``R`` columns either side and ``R + 1`` rows above."""
        c: GatedPixelCNNConfig = self.config
        return c.first_kernel // 2 + (self.net_size["depth"] - 1) * (c.kernel // 2)

    # ------------------------------------------------------------------ pieces
    def _scale(self, x: Tensor) -> Tensor:
        return 2.0 * x.to(self.dtype) / (self.levels - 1) - 1.0

    def _biases(self, y: Tensor | None) -> list[Tensor | None]:
        if self.cond is None or y is None:
            return [None] * len(self.stack)
        return list(self.cond(y).chunk(len(self.stack), dim=-1))  # each (n, 2C)

    def _head(self, h: Tensor) -> Tensor:
        return pointwise(self.head2, torch.relu(pointwise(self.head1, h)))

    # ------------------------------------------------------------------ the chain rule
    def logits(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Logits ``(B, H*W, L)`` in raster order; pixel ``q`` depends on pixels before ``q``.

        ``x`` may be real-valued (the tests differentiate through it); ``y`` are long labels.
        """
        # Channels-last maps: oneDNN's convolutions then reorder nothing, and the shift below is
        # one copy in that layout. On 2 threads of an AMX host the MNIST recipe's step fell from
        # 471.7 to 379.2 ms in float32 and 318.9 to 255.3 in bf16 (precision_mnist_2threads.json
        # before and after); the values are the same (a test compares a channels-first forward).
        v = h = channels_last(self._scale(x))  # (B, 1, H, W)
        for layer, b in zip(self.stack, self._biases(y)):
            vpre = layer.vconv(v)  # (B, 2C, H, W) sees rows <= i
            down = F.pad(vpre, (0, 0, 1, -1))  # (B, 2C, H, W) sees rows < i: one row down
            hpre = layer.hconv(h) + pointwise(layer.link, down)  # (B, 2C, H, W)
            hnew = pointwise(layer.hout, gate(_add(hpre, b)))  # (B, C, H, W)
            h = hnew if layer.first else h + hnew
            if not layer.last:
                v = gate(_add(vpre, b))  # (B, C, H, W)
        out = self._head(h)  # (B, L, H, W)
        return out.flatten(2).transpose(1, 2)  # (B, H*W, L)

    def fast_decoder(self, n: int, y: Tensor | None) -> _FastDecoder:
        return _FastDecoder(self, n, y)


class _FastDecoder:
    """Vertical stack one completed row at a time, horizontal stack at the new pixel only."""

    def __init__(self, model: GatedPixelCNN, n: int, y: Tensor | None) -> None:
        c: GatedPixelCNNConfig = model.config
        like = next(model.parameters())
        H, W = model.height, model.width
        self.model, self.q = model, 0
        self.biases = model._biases(y)
        width, depth = model.net_size["width"], model.net_size["depth"]
        ks = [c.first_kernel] + [c.kernel] * (depth - 1)
        chans = [1] + [width] * (depth - 1)
        # inputs of each layer's vertical and horizontal convolutions (layer 0: the image)
        self.vin = [PixelCache(n, ch, H, W, k // 2, like) for ch, k in zip(chans, ks)]
        self.hin = [self.vin[0]] + [
            PixelCache(n, ch, H, W, k // 2, like) for ch, k in zip(chans[1:], ks[1:])
        ]
        # link_l[:, :, j] for the current row: U_l applied to the row above's pre-activations
        zero_row = like.new_zeros(n, 2 * width, W)
        self.links = [pointwise(layer.link, zero_row) for layer in model.stack]  # (n, 2C, W)

    def _vertical_row(self, i: int) -> None:
        """Row ``i`` is complete: run the vertical stack on it, set the links of row ``i + 1``."""
        for l, (layer, b) in enumerate(zip(self.model.stack, self.biases)):
            vpre = conv_row(layer.vconv, self.vin[l], i)  # (n, 2C, W)
            self.links[l] = pointwise(layer.link, vpre)  # (n, 2C, W)
            if not layer.last:
                self.vin[l + 1].write_row(i, gate(_add(vpre, b)))

    def logits(self) -> Tensor:
        m = self.model
        i, j = divmod(self.q, m.width)
        if j == 0 and i > 0:
            self._vertical_row(i - 1)
        h = None
        for l, (layer, b) in enumerate(zip(m.stack, self.biases)):
            if h is not None:
                self.hin[l].write(i, j, h)  # the type-B horizontal mask reads the centre
            hpre = conv_at(layer.hconv, self.hin[l], i, j) + self.links[l][:, :, j]  # (n, 2C)
            hnew = pointwise(layer.hout, gate(_add(hpre, b)))  # (n, C)
            h = hnew if layer.first else h + hnew
        return m._head(h)  # (n, L)

    def feed(self, values: Tensor) -> None:
        i, j = divmod(self.q, self.model.width)
        self.vin[0].write(i, j, self.model._scale(values)[:, None])
        self.q += 1
