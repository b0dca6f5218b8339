r"""``transformer``: a causal Transformer over the flattened pixels (or any discrete sequence).

Vaswani et al., "Attention Is All You Need", NeurIPS 2017 (arXiv:1706.03762), in the
decoder-only, pre-LayerNorm form of GPT-2 (Radford et al. 2019) as in nanoGPT; over image pixels
it is the Image Transformer / Image GPT idea (Parmar et al. 2018, arXiv:1802.05751; Chen et al.
2020).

The data ``x in {0..L-1}^D`` (any event shape, flattened in raster order) is read as the token
sequence ``[s, x_0, ..., x_{D-2}]``, where ``s`` is a start token (one per class when
``conditional=True``). Token embeddings plus learned positional embeddings pass through
``depth`` blocks ``h <- h + Attn(LN(h))``, ``h <- h + MLP(LN(h))`` with causal self-attention,
and a final LayerNorm and linear map give the logits of ``x_d`` at position ``d``: they depend on
``x_{<d}`` only.

**Fast sampling.** The keys and values of positions already generated never change, so the
sampler keeps them (a key/value cache) and runs each block on the newest token only: ``O(D)`` work
per token instead of ``O(D^2)`` for a full pass.

>>> from dgm.core.spec import DataSpec
>>> m = Transformer(DataSpec((6,), "discrete", levels=3), Transformer.Config(width=8, heads=2))
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
from dgm.models.autoregressive.base import AutoregressiveModel

__all__ = ["Transformer", "TransformerConfig"]


@dataclass
class TransformerConfig:
    """Hyperparameters of :class:`Transformer`.

    Attributes:
        width: width of the residual stream (divisible by ``heads``).
        depth: Transformer blocks.
        heads: attention heads.
        mlp_ratio: hidden width of each MLP as a multiple of ``width``.
        dropout: dropout on attention outputs and MLPs during training (0 disables it).
        conditional: condition on class labels (a start token per class).
        label_dropout: probability that a training label is replaced by a null class
            (conditional models), so the model is also unconditional: ``log_prob(x)`` and
            ``sample(n)`` without labels use that branch, and ``sample(n, y, guidance=w)`` mixes
            the two branches' logits; 0: no null class.
    """

    #: keys of earlier versions and their names now (saved runs are translated)
    renamed: ClassVar[dict[str, str]] = {"dim": "width", "layers": "depth"}

    width: int = 64
    depth: int = 4
    heads: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.0
    conditional: bool = False
    label_dropout: float = 0.0

    def __post_init__(self) -> None:
        for key in ("width", "depth", "heads", "mlp_ratio"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1, not {getattr(self, key)}")
        if self.width % self.heads:
            raise ConfigError(f"width ({self.width}) must be divisible by heads ({self.heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), not {self.dropout}")


class Block(nn.Module):
    """Pre-LN Transformer block: causal self-attention then an MLP, both residual."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim),
            nn.GELU(),
            nn.Linear(mlp_ratio * dim, dim),
            nn.Dropout(dropout),
        )

    def _split(self, t: Tensor) -> Tensor:
        b, s, d = t.shape
        return t.view(b, s, self.heads, d // self.heads).transpose(1, 2)  # (B, heads, S, hd)

    def forward(self, h: Tensor) -> Tensor:
        """Full causal pass over ``h (B, S, dim)``."""
        q, k, v = self.qkv(self.ln1(h)).chunk(3, dim=-1)  # each (B, S, dim)
        p = self.dropout if self.training else 0.0
        att = F.scaled_dot_product_attention(
            self._split(q), self._split(k), self._split(v), is_causal=True, dropout_p=p
        )  # (B, heads, S, hd)
        h = h + F.dropout(self.proj(att.transpose(1, 2).flatten(2)), p, self.training)
        return h + self.mlp(self.ln2(h))  # (B, S, dim)

    def step(self, h: Tensor, keys: Tensor, values: Tensor, t: int) -> Tensor:
        """Position ``t`` only: ``h (n, 1, dim)``; its key and value go into the caches
        ``(n, heads, S, hd)``, and it attends to positions ``0..t``."""
        q, k, v = self.qkv(self.ln1(h)).chunk(3, dim=-1)  # each (n, 1, dim)
        keys[:, :, t : t + 1] = self._split(k)
        values[:, :, t : t + 1] = self._split(v)
        att = F.scaled_dot_product_attention(
            self._split(q), keys[:, :, : t + 1], values[:, :, : t + 1]
        )  # (n, heads, 1, hd)
        h = h + self.proj(att.transpose(1, 2).flatten(2))
        return h + self.mlp(self.ln2(h))  # (n, 1, dim)


@register
class Transformer(AutoregressiveModel):
    """Causal Transformer over discrete sequences or flattened images (see the module docstring)."""

    name = "transformer"
    description = (
        "Causal Transformer over flattened pixels/sequences, exact likelihood, key/value cache "
        "sampling (Vaswani 2017)"
    )
    Config = TransformerConfig
    #: on MNIST-sized images the options of its 30-minute binarized-MNIST benchmark (94.75 nats
    #: on 2000 test images, one thread, ``autoregressive_nll_transformer30.json``), the cosine
    #: decay on the time clock. ``dgm train transformer --data binarized-mnist`` with them:
    #: 92.31 on the full test set, one thread (``defaults_binarized_mnist.json``); 83.40 in
    #: 5080 steps on two threads of an AVX-512 host (``defaults_binarized_mnist_2threads.json``)
    large_image_train_defaults: ClassVar[dict[str, Any]] = {
        "max_minutes": 30,
        "batch_size": 16,
        "lr": 2e-3,
        "schedule": "cosine",
        "warmup_steps": 100,
        "grad_clip": 1.0,
    }
    example = Example(
        spec=DataSpec((1, 3, 3), kind="discrete", levels=3, num_classes=3),
        config={"width": 8, "depth": 2, "heads": 2, "mlp_ratio": 2},
        variants=({"dropout": 0.2}, {"conditional": True, "label_dropout": 0.2}),
    )

    def __init__(self, spec: DataSpec, config: TransformerConfig | None = None) -> None:
        super().__init__(spec, config)
        c: TransformerConfig = self.config
        # token ids: data values 0..L-1, then the start token(s): one per class, or a single one
        self.tokens = nn.Embedding(self.levels + max(self.label_rows, 1), c.width)
        self.position = nn.Parameter(0.02 * torch.randn(self.num_dims, c.width))
        self.blocks = nn.ModuleList(
            Block(c.width, c.heads, c.mlp_ratio, c.dropout) for _ in range(c.depth)
        )
        self.ln = nn.LayerNorm(c.width)
        self.out = nn.Linear(c.width, self.levels)
        self.drop = nn.Dropout(c.dropout)

    def _start(self, y: Tensor | None, n: int) -> Tensor:
        """Embedding ``(n, 1, dim)`` of the start token (per class when conditional)."""
        ids = self.levels + (y if y is not None else torch.zeros(n, dtype=torch.long))
        return self.tokens(ids.to(self.position.device))[:, None]  # (n, 1, dim)

    def embed(self, x: Tensor) -> Tensor:
        """Embeddings ``(B, D, dim)`` of the data values (flattened)."""
        return self.tokens(x.reshape(x.shape[0], -1).long())  # (B, D, dim)

    def logits_from_embeddings(self, e: Tensor, y: Tensor | None = None) -> Tensor:
        """Logits ``(B, D, L)`` from value embeddings ``e (B, D, dim)``: position ``d`` reads the
        start token and ``e_{<d}`` (the tests differentiate through ``e``)."""
        seq = torch.cat([self._start(y, e.shape[0]), e[:, :-1]], dim=1)  # (B, D, dim)
        h = self.drop(seq + self.position)
        for block in self.blocks:
            h = block(h)
        return self.out(self.ln(h))  # (B, D, L)

    def logits(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Logits ``(B, D, L)`` of every conditional; ``y`` are long labels or ``None``."""
        return self.logits_from_embeddings(self.embed(x), y)

    def fast_decoder(self, n: int, y: Tensor | None) -> _CachedDecoder:
        return _CachedDecoder(self, n, y)


class _CachedDecoder:
    """Key/value cache: each block runs on the newest token only."""

    def __init__(self, model: Transformer, n: int, y: Tensor | None) -> None:
        c: TransformerConfig = model.config
        like = model.position
        shape = (n, c.heads, model.num_dims, c.width // c.heads)
        self.model, self.t = model, 0
        self.keys = [like.new_zeros(shape) for _ in model.blocks]
        self.values = [like.new_zeros(shape) for _ in model.blocks]
        self.next = model._start(y, n)  # (n, 1, dim) embedding of the next input token

    def logits(self) -> Tensor:
        m, t = self.model, self.t
        h = self.next + m.position[t]  # (n, 1, dim)
        for block, k, v in zip(m.blocks, self.keys, self.values):
            h = block.step(h, k, v, t)
        return m.out(m.ln(h))[:, 0]  # (n, L)

    def feed(self, values: Tensor) -> None:
        self.next = self.model.tokens(values.long())[:, None]  # (n, 1, dim)
        self.t += 1
