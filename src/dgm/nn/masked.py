"""Masked layers: the building blocks of autoregressive networks.

A MADE network (Germain et al. 2015, "MADE: Masked Autoencoder for Distribution Estimation",
arXiv:1502.03509) is an MLP whose weight matrices are multiplied by binary masks so that output
``i`` depends only on inputs that come before ``i`` in a chosen ordering. Every unit carries a
*degree*:

* input unit of dimension ``d`` has degree ``m_0(d) = rank(d) + 1 in {1..D}``, where ``rank`` is the
  position of ``d`` in the ordering;
* hidden unit ``k`` of layer ``l`` has degree ``m_l(k) in [min m_{l-1}, D - 1]``;
* output unit of dimension ``d`` has the degree of input ``d``.

A hidden weight from ``j`` to ``k`` is kept when ``m_l(k) >= m_{l-1}(j)``; an output weight when
``m_out(d) > m_L(k)`` (strict). Then ``d output_d / d input_j = 0`` whenever
``rank(j) >= rank(d)``. When a dimension has several input features (a one-hot block) or several
outputs (logits, spline parameters), every feature of the block shares the dimension's degree.

:class:`MaskedConv2d` is the convolutional counterpart used by PixelCNN (van den Oord et al. 2016,
"Pixel Recurrent Neural Networks", arXiv:1601.06759): mask type ``"A"`` hides the centre pixel,
type ``"B"`` shows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgm.core.errors import ConfigError
from dgm.nn.mlp import activation as make_activation

__all__ = [
    "MADENet",
    "MaskedConv2d",
    "MaskedLinear",
    "hidden_degrees",
    "made_order",
    "mask_from_degrees",
]


def _generator(seed: int) -> torch.Generator:
    g = torch.Generator()  # CPU generator: the same masks on every machine and device
    g.manual_seed(int(seed))
    return g


def made_order(num_dims: int, ordering: Literal["natural", "random"], seed: int = 0) -> Tensor:
    """Ranks of the dimensions in the autoregressive order, a permutation of ``0..D-1``.

    ``order[d]`` is the position of dimension ``d``: dimension ``d`` is generated after every
    dimension with a smaller rank. ``"natural"`` is ``0, 1, ..., D-1``; ``"random"`` is a random
    permutation drawn from ``seed``.
    """
    if ordering == "natural":
        return torch.arange(num_dims)
    if ordering == "random":
        return torch.randperm(num_dims, generator=_generator(seed))
    raise ConfigError(f"ordering must be 'natural' or 'random', not {ordering!r}")


def hidden_degrees(
    num_dims: int,
    sizes: Sequence[int],
    connectivity: Literal["cyclic", "random"] = "cyclic",
    seed: int = 0,
) -> list[Tensor]:
    """Degrees of the hidden units of each layer, values in ``1..D-1`` (all 0 when ``D == 1``).

    ``"cyclic"`` assigns ``1, 2, ..., D-1, 1, 2, ...`` when the layer has at least ``D - 1``
    units and evenly spaced degrees over ``1..D-1`` when it has fewer (deterministic); ``"random"`` draws ``m_l(k)`` uniformly from
    ``[min m_{l-1}, D-1]`` as in the paper, with ``seed``.
    """
    if connectivity not in ("cyclic", "random"):
        raise ConfigError(f"connectivity must be 'cyclic' or 'random', not {connectivity!r}")
    g = _generator(seed + 1)  # offset: independent of the ordering drawn from the same seed
    degrees: list[Tensor] = []
    low = 1
    top = max(num_dims - 1, 1)
    for size in sizes:
        if num_dims == 1:
            deg = torch.zeros(size, dtype=torch.long)  # only the bias reaches the single output
        elif connectivity == "cyclic" and size >= num_dims - 1:
            deg = torch.arange(size) % (num_dims - 1) + 1
        elif connectivity == "cyclic":
            # Narrower than D - 1: spread the degrees evenly over 1..D-1. (Cycling from 1 would
            # leave the last dimensions conditioned on a prefix only: with 500 units and D = 784,
            # pixels past 501 would never see pixels 501..783.)
            deg = torch.arange(size) * (num_dims - 1) // size + 1
        else:
            deg = torch.randint(low, top + 1, (size,), generator=g)
            low = int(deg.min()) if size > 0 else low
        degrees.append(deg)
    return degrees


def mask_from_degrees(deg_in: Tensor, deg_out: Tensor, strict: bool) -> Tensor:
    """Connectivity ``(out, in)``: 1 where ``deg_out > deg_in`` (strict) or ``>=`` (not strict)."""
    if strict:
        return (deg_out[:, None] > deg_in[None, :]).float()  # (out, in)
    return (deg_out[:, None] >= deg_in[None, :]).float()  # (out, in)


class _PremaskedLinear(torch.autograd.Function):
    """``y = x W^T + b`` for a weight ``W`` that already holds zeros where the mask ``M`` does;
    the weight's gradient ``(g^T x) * M`` is masked in place, so masked entries stay zero under
    any optimizer whose update is zero for a zero gradient and a zero weight (SGD, Adam, AdamW,
    weight decay). One mask pass per step instead of two (``W * M`` in the forward pass and
    ``grad * M`` in the backward): the two dominated MADE's step (the roofline benchmark)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, mask: Tensor) -> Tensor:
        ctx.save_for_backward(x, weight, mask)
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, g: Tensor):
        x, weight, mask = ctx.saved_tensors
        gx = gw = gb = None
        # under autocast the forward product ran in a lower precision and ``g`` has its dtype:
        # the products here run in it too (as autocast's own backward does); autograd casts
        # each gradient back to its input's dtype
        w = weight.to(g.dtype)
        if ctx.needs_input_grad[0]:
            # under create_graph (grad mode on here) the product keeps second derivatives with
            # respect to the weight masked too, as ``W * M`` does
            gx = g @ (w * mask.to(g.dtype) if torch.is_grad_enabled() else w)  # (..., in)
        g2, x2 = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1]).to(g.dtype)
        if ctx.needs_input_grad[1]:
            gw = (g2.transpose(0, 1) @ x2).to(weight.dtype).mul_(mask)  # (out, in)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g2.sum(0)
        return gx, gw, gb, None


class MaskedLinear(nn.Linear):
    """``y = x (W * M)^T + b`` with a fixed binary mask ``M`` of shape ``(out, in)``.

    The mask is a buffer: it moves with ``.to()``/``.double()`` and is saved in the state dict.
    Multiplying in ``forward`` keeps masked weights exactly zero in the function whatever the
    optimizer does to them.

    With ``premasked=True`` (for a mask that never changes) the stored weight itself is kept
    masked: zeroed at construction, when a state dict is loaded and in place at every forward
    pass (values written under the mask by hand are dropped), its gradient masked in place in the
    backward pass; no weight-sized tensor is allocated for ``W * M``. The function and its
    gradients are those of the plain form (a test compares them). A premasked layer's mask is
    not to be loosened: the weights it hid are zero (``MADENet`` premasks only with a single mask
    set).
    """

    mask: Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        mask: Tensor,
        bias: bool = True,
        premasked: bool = False,
    ):
        super().__init__(in_features, out_features, bias=bias)
        if tuple(mask.shape) != (out_features, in_features):
            raise ValueError(
                f"mask has shape {tuple(mask.shape)}, expected ({out_features}, {in_features})"
            )
        self.register_buffer("mask", mask.to(self.weight.dtype).clone())
        self.premasked = premasked
        if premasked:
            with torch.no_grad():
                self.weight.mul_(self.mask)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.premasked:  # weights saved by the plain form may hold values under the mask
            with torch.no_grad():
                self.weight.mul_(self.mask)

    def forward(self, x: Tensor) -> Tensor:
        if self.premasked:
            # in place, so cheap (the out-of-place W * M allocates a new weight-sized tensor
            # every call, which dominated MADE's step): values written under the mask since the
            # last call (by hand, by noise) are zeroed, so the function is always that of W * M
            self.weight.data.mul_(self.mask)
            return _PremaskedLinear.apply(x, self.weight, self.bias, self.mask)  # (B, out)
        return F.linear(x, self.weight * self.mask, self.bias)  # (B, out)


class MADENet(nn.Module):
    """A masked MLP whose output ``(B, D, P)`` is autoregressive in its input ``(B, D * F)``.

    Args:
        order: ranks ``(D,)`` of the dimensions (see :func:`made_order`); kept as a buffer.
        hidden: widths of the hidden layers (one or more).
        in_features: features per input dimension, e.g. ``L`` for a one-hot block; the input is
            laid out dimension-major, feature ``d * F + f``.
        out_features: outputs per dimension ``P`` (logits, spline parameters, ...).
        context_features: size of an optional context (e.g. a one-hot class label) that enters
            every hidden layer and the output layer *unmasked*, so every output may depend on it.
        activation: a name of :data:`dgm.nn.mlp.ACTIVATIONS`.
        direct: add a masked direct input-to-output connection (Germain et al., Sec. 4).
        connectivity: hidden degrees, ``"cyclic"`` or ``"random"`` (see :func:`hidden_degrees`).
        seed: seed of random connectivity.
        zero_last: initialise the output layer to zero (flows start at the identity this way).
        num_masks: ``K`` mask sets over the same weights (order- and connectivity-agnostic
            training, Germain et al. Sec. 4.2): set 0 uses ``order``, set ``k > 0`` a random
            ordering (``order_agnostic``; else ``order`` again) and hidden degrees drawn from
            ``seed + k``. :meth:`use_mask` selects one; all are buffers, saved with the weights.
        order_agnostic: whether the mask sets ``k > 0`` draw their own orderings.
        dropout: dropout probability on every hidden layer in training mode. Dropping hidden
            units removes paths, never adds one, so the autoregressive property holds in
            training too; ``eval()`` turns it off, which is the network the density is of.
    """

    order: Tensor
    mask_index: Tensor

    def __init__(
        self,
        order: Tensor,
        hidden: Sequence[int],
        *,
        in_features: int = 1,
        out_features: int = 1,
        context_features: int = 0,
        activation: str = "relu",
        direct: bool = False,
        connectivity: Literal["cyclic", "random"] = "cyclic",
        seed: int = 0,
        zero_last: bool = False,
        num_masks: int = 1,
        order_agnostic: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(hidden) == 0 or min(hidden) < 1:
            raise ConfigError(f"hidden must list one or more positive widths, not {tuple(hidden)}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be a probability in [0, 1), not {dropout}")
        if num_masks < 1:
            raise ConfigError(f"num_masks must be at least 1, not {num_masks}")
        num_dims = int(order.numel())
        self.num_dims, self.in_features, self.out_features = num_dims, in_features, out_features
        self.num_masks = num_masks
        orders = [order.clone().long()] + [
            torch.randperm(num_dims, generator=_generator(seed + 7919 * k))
            if order_agnostic
            else order.clone().long()
            for k in range(1, num_masks)
        ]
        # hidden-unit degrees of every mask set: masks are recomputed from them in use_mask
        hidden_banks = [hidden_degrees(num_dims, hidden, connectivity, seed + 7919 * k)
                        for k in range(num_masks)]  # fmt: skip
        self.register_buffer("order", orders[0].clone())
        if num_masks > 1:  # one mask set keeps the state dict of networks saved before sets
            self.register_buffer("mask_index", torch.zeros((), dtype=torch.long))
            self.register_buffer("order_bank", torch.stack(orders))  # (K, D)
            for i in range(len(hidden)):
                bank = torch.stack([b[i] for b in hidden_banks])  # (K, H_i)
                self.register_buffer(f"degree_bank_{i}", bank)
        first = self._masks(orders[0], hidden_banks[0], direct)
        fixed = num_masks == 1  # one mask set: the weights can be kept masked (faster step)
        self.layers = nn.ModuleList(
            MaskedLinear(m.shape[1], m.shape[0], m, premasked=fixed) for m in first[: len(hidden)]
        )
        n = len(hidden)
        self.out = MaskedLinear(first[n].shape[1], first[n].shape[0], first[n], premasked=fixed)
        self.direct = (
            MaskedLinear(
                first[n + 1].shape[1],
                first[n + 1].shape[0],
                first[n + 1],
                bias=False,
                premasked=fixed,
            )  # fmt: skip
            if direct
            else None
        )
        self.context = (
            nn.ModuleList(
                nn.Linear(context_features, n, bias=False)
                for n in [*hidden, num_dims * out_features]
            )
            if context_features > 0
            else None
        )
        self.act = make_activation(activation)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if zero_last:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)
            if self.context is not None:
                nn.init.zeros_(self.context[-1].weight)

    def _masks(self, order: Tensor, hidden: list[Tensor], direct: bool) -> list[Tensor]:
        """Masks ``[hidden layers..., output, direct]`` of one ordering and hidden degrees."""
        deg_in = (order + 1).repeat_interleave(self.in_features)  # (D * F,)
        deg_out = (order + 1).repeat_interleave(self.out_features)  # (D * P,)
        degrees = [deg_in, *hidden]
        masks = [mask_from_degrees(a, b, strict=False) for a, b in zip(degrees[:-1], degrees[1:])]
        masks.append(mask_from_degrees(degrees[-1], deg_out, True))
        return masks + ([mask_from_degrees(deg_in, deg_out, True)] if direct else [])

    @torch.no_grad()
    def use_mask(self, k: int) -> None:
        """Make mask set ``k`` (ordering and hidden degrees) the current one."""
        if not 0 <= k < self.num_masks:
            raise ValueError(f"mask set {k} does not exist; this network has {self.num_masks}")
        if self.num_masks == 1 or k == int(self.mask_index):
            return
        hidden = [getattr(self, f"degree_bank_{i}")[k] for i in range(len(self.layers))]
        order = self.order_bank[k]
        layers = [*self.layers, self.out] + ([self.direct] if self.direct is not None else [])
        for layer, mask in zip(layers, self._masks(order, hidden, self.direct is not None)):
            layer.mask.copy_(mask)
        self.order.copy_(order)
        self.mask_index.fill_(k)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Outputs ``(B, D, P)``; output ``[:, d]`` depends on input dims of lower rank only."""
        x = x.flatten(1)  # (B, D * F)
        if x.shape[1] != self.num_dims * self.in_features:
            raise ValueError(
                f"MADENet expects {self.num_dims * self.in_features} input features, got {x.shape[1]}"
            )
        if (context is None) != (self.context is None):
            raise ValueError(
                "pass a context exactly when the network was built with context_features"
            )
        h = x
        for i, layer in enumerate(self.layers):
            a = layer(h)  # (B, H_i)
            if self.context is not None:
                a = a + self.context[i](context)
            h = self.dropout(self.act(a))
        out = self.out(h)  # (B, D * P)
        if self.direct is not None:
            out = out + self.direct(x)
        if self.context is not None:
            out = out + self.context[-1](context)
        return out.view(x.shape[0], self.num_dims, self.out_features)  # (B, D, P)


class MaskedConv2d(nn.Conv2d):
    """A 2-D convolution that sees only pixels above and to the left of the centre (raster order).

    Mask type ``"A"`` (first layer) hides the centre pixel, type ``"B"`` (later layers) shows it.
    With ``channel_groups = G > 1`` the channels are split into ``G`` contiguous groups (R, G, B)
    and, at the centre pixel, output group ``g`` sees input groups ``< g`` (type A) or ``<= g``
    (type B), as in van den Oord et al. (2016). Padding defaults to "same" (``kernel_size // 2``).
    """

    mask: Tensor

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        mask_type: Literal["A", "B"],
        *,
        channel_groups: int = 1,
        bias: bool = True,
    ) -> None:
        if kernel_size % 2 != 1:
            raise ConfigError(f"MaskedConv2d needs an odd kernel_size, not {kernel_size}")
        if mask_type not in ("A", "B"):
            raise ConfigError(f"mask_type must be 'A' or 'B', not {mask_type!r}")
        if in_channels % channel_groups or out_channels % channel_groups:
            raise ConfigError(
                f"in_channels ({in_channels}) and out_channels ({out_channels}) must be multiples "
                f"of channel_groups ({channel_groups})"
            )
        super().__init__(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias
        )
        k, c = kernel_size, kernel_size // 2
        mask = torch.zeros(out_channels, in_channels, k, k)
        mask[:, :, :c, :] = 1  # rows above the centre
        mask[:, :, c, :c] = 1  # left of the centre on its row
        g_out = torch.arange(out_channels) // (out_channels // channel_groups)  # (C_out,)
        g_in = torch.arange(in_channels) // (in_channels // channel_groups)  # (C_in,)
        centre = (
            g_out[:, None] > g_in[None, :] if mask_type == "A" else g_out[:, None] >= g_in[None, :]
        )
        mask[:, :, c, c] = centre.float()
        self.mask_type = mask_type
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        # the rows below the centre are masked out: convolve only the top c + 1 rows of the
        # kernel (same function and gradients, about half the cost)
        c = self.kernel_size[0] // 2
        weight = self.weight[:, :, : c + 1] * self.mask[:, :, : c + 1]
        return F.conv2d(F.pad(x, (c, c, c, 0)), weight, self.bias)  # (B, C_out, H, W)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mask_type={self.mask_type!r}"
