r"""``made``: Masked Autoencoder for Distribution Estimation (Germain et al. 2015).

Germain, Gregor, Murray & Larochelle, "MADE: Masked Autoencoder for Distribution Estimation",
ICML 2015, arXiv:1502.03509.

For discrete data ``x in {0..L-1}^D`` (any event shape, flattened), a masked MLP
(:class:`dgm.nn.masked.MADENet`) outputs the parameters of every conditional of the chain rule in one
pass,

.. math::

    \log p(x \mid y) = \sum_{d} \log p(x_{o_d} \mid x_{o_1}, \dots, x_{o_{d-1}}, y),

with ``o`` the ordering. Binary data (``L = 2``) gets one logit per dimension (Bernoulli);
categorical data (``L > 2``) gets ``L`` logits per dimension (softmax). Inputs are encoded as
scalars ``x / (L - 1)`` or one-hot blocks of ``L`` features. With ``conditional=True`` a one-hot
class label ``y`` enters every hidden layer and the output layer unmasked. Sampling is ancestral:
``D`` passes, each drawing the dimension of the next rank.

>>> from dgm.core.spec import DataSpec
>>> model = MADE(DataSpec((4,), "discrete", levels=2), MADE.Config(hidden=(8,)))
>>> model.log_prob(model.sample(3)).shape
torch.Size([3])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from dgm.core.errors import ConfigError
from dgm.core.model import Example, Model, check_labels, unpack
from dgm.core.registry import register
from dgm.core.spec import DataSpec
from dgm.nn.masked import MADENet, made_order

__all__ = ["MADE", "MADEConfig"]


@dataclass
class MADEConfig:
    """Hyperparameters of :class:`MADE`.

    Attributes:
        hidden: widths of the hidden layers (one or more).
        ordering: ``"natural"`` (dimension 0 first, raster order for images) or ``"random"``
            (a permutation drawn from ``seed``).
        connectivity: hidden-unit degrees, ``"cyclic"`` (deterministic, evenly spread) or
            ``"random"`` (drawn from ``seed``, as in the paper).
        seed: seed of the random ordering and connectivity (masks are buffers, saved with the
            weights).
        input_encoding: ``"scalar"`` feeds ``x / (L - 1)`` (one feature per dimension),
            ``"onehot"`` feeds ``L`` features per dimension; ``"auto"`` is scalar for binary data
            and one-hot for ``L > 2``.
        activation: ``"relu"``, ``"tanh"`` or ``"elu"``.
        direct: add a masked direct input-to-output connection.
        masks: ``K`` orderings and connectivities over the same weights. With ``K > 1`` each
            training batch uses one drawn at random (order-agnostic training) and the density
            is the equal mixture of the ``K`` autoregressive models (``K`` passes per
            ``log_prob``); set 0 keeps ``ordering``, the others are random.
        order_agnostic: the mask sets ``k > 0`` draw their own orderings; with ``False`` they
            share ``ordering`` and differ in hidden connectivity only (connectivity-agnostic).
        conditional: condition on class labels (needs ``num_classes`` in the data spec).
        dropout: dropout probability on the hidden units during training (off in ``eval()``,
            so ``log_prob`` stays exact); a regulariser for small training sets.
    """

    hidden: tuple[int, ...] = (500,)
    ordering: Literal["natural", "random"] = "natural"
    connectivity: Literal["cyclic", "random"] = "cyclic"
    seed: int = 0
    input_encoding: Literal["auto", "scalar", "onehot"] = "auto"
    activation: Literal["relu", "tanh", "elu"] = "relu"
    direct: bool = False
    masks: int = 1
    order_agnostic: bool = True
    conditional: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if len(self.hidden) == 0 or min(self.hidden) < 1:
            raise ConfigError(f"hidden must list one or more positive widths, not {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be a probability in [0, 1), not {self.dropout}")
        if self.masks < 1:
            raise ConfigError(f"masks must be a positive number of mask sets, not {self.masks}")
        if self.masks > 1 and not self.order_agnostic and self.connectivity == "cyclic":
            raise ConfigError(
                "masks > 1 with order_agnostic=false would repeat one mask set: cyclic degrees "
                "do not vary; use connectivity=random or order_agnostic=true"
            )


@register
class MADE(Model):
    """MADE over discrete data of any event shape (see the module docstring)."""

    name = "made"
    family = "autoregressive"
    description = "MADE: masked autoencoder for binary/categorical data, exact likelihood (Germain et al. 2015)"
    Config = MADEConfig
    exact_likelihood = True
    data_kinds = frozenset({"discrete"})
    example = Example(
        spec=DataSpec((1, 3, 3), kind="discrete", levels=3, num_classes=3),
        config={"hidden": (16, 16)},
        variants=({"dropout": 0.2}, {"conditional": True}),
    )

    def __init__(self, spec: DataSpec, config: MADEConfig | None = None) -> None:
        super().__init__(spec, config)
        c: MADEConfig = self.config
        self.levels = int(spec.levels)  # type: ignore[arg-type]
        if c.conditional and not spec.num_classes:
            raise ConfigError(
                "made with conditional=True needs labelled data (num_classes in the data spec)"
            )
        self.num_classes = int(spec.num_classes) if c.conditional else 0
        encoding = c.input_encoding
        if encoding == "auto":
            encoding = "scalar" if self.levels == 2 else "onehot"
        self.encoding = encoding
        self.net = MADENet(
            made_order(self.num_dims, c.ordering, c.seed),
            c.hidden,
            in_features=self.levels if encoding == "onehot" else 1,
            out_features=1 if self.levels == 2 else self.levels,
            context_features=self.num_classes,
            activation=c.activation,
            direct=c.direct,
            connectivity=c.connectivity,
            seed=c.seed,
            num_masks=c.masks,
            order_agnostic=c.order_agnostic,
            dropout=c.dropout,
        )

    # ------------------------------------------------------------------ helpers
    def encode(self, x: Tensor) -> Tensor:
        """Network input from flat data ``(B, D)``: ``(B, D)`` scalars or ``(B, D, L)`` one-hot."""
        if self.encoding == "onehot":
            return F.one_hot(x.long(), self.levels).to(self.dtype)  # (B, D, L)
        return x.to(self.dtype) / (self.levels - 1)  # (B, D)

    def _context(self, y: Tensor | None, n: int) -> Tensor | None:
        y = check_labels(self, y, n)
        return None if y is None else F.one_hot(y, self.num_classes).to(self.dtype)  # (n, K)

    def logits(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Conditional logits of flat data ``(B, D)``: ``(B, D)`` (binary) or ``(B, D, L)``."""
        out = self.net(self.encode(x), self._context(y, x.shape[0]))  # (B, D, P)
        return out.squeeze(-1) if self.levels == 2 else out

    def chain_log_prob(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """``log p_k(x | y)`` of the current mask set ``k`` (flat checked ``x``), ``(B,)``."""
        logits = self.logits(x, y)
        if self.levels == 2:
            return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        logp = torch.log_softmax(logits, dim=-1)  # (B, D, L)
        return logp.gather(-1, x.long()[..., None]).squeeze(-1).sum(-1)  # (B,)

    # ------------------------------------------------------------------ the contract
    def loss(self, batch: Any) -> dict[str, Tensor]:
        """Mean NLL; with several mask sets, of one drawn at random (order-agnostic training).

        ``E_k[-log p_k(x)]`` bounds the mixture's NLL ``-log mean_k p_k(x)`` from above (Jensen),
        so training it trains every member of the mixture that ``log_prob`` evaluates.
        """
        x, y = unpack(batch)
        if self.training and self.net.num_masks > 1:
            self.net.use_mask(int(torch.randint(self.net.num_masks, ())))
            x = self.check_input(x).reshape(x.shape[0], -1).to(self.dtype)
            nll = -self.chain_log_prob(x, y if self.conditional else None)
        else:
            nll = -self.log_prob(x, y if self.conditional else None)
        return {"loss": nll.mean(), "nll": nll.mean().detach()}

    def log_prob(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Exact ``log p(x | y)`` in nats, ``(B,)``: a sum of Bernoulli or categorical terms;
        with ``K`` mask sets, ``log (1/K) sum_k p_k(x | y)`` (exact: a mixture of densities)."""
        x = self.check_input(x).reshape(x.shape[0], -1).to(self.dtype)  # (B, D)
        if self.net.num_masks == 1:
            return self.chain_log_prob(x, y)
        per_mask = []
        for k in range(self.net.num_masks):
            self.net.use_mask(k)
            per_mask.append(self.chain_log_prob(x, y))
        return torch.logsumexp(torch.stack(per_mask), 0) - math.log(self.net.num_masks)

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        """Ancestral sampling, ``(n, *event_shape)``: ``D`` passes in the order of the ranks; with
        several mask sets each sample first draws its mixture component."""
        ctx = self._context(y, n)
        x = torch.zeros(n, self.num_dims, device=self.device, dtype=self.dtype)  # (n, D)
        comp = torch.zeros(n, dtype=torch.long, device=self.device)
        if self.net.num_masks > 1:
            comp = torch.randint(self.net.num_masks, (n,), device=self.device)
        for k in comp.unique().tolist():
            rows = (comp == k).nonzero().squeeze(1)
            self.net.use_mask(k)
            x[rows] = self._ancestral(len(rows), None if ctx is None else ctx[rows])
        return x.view(n, *self.event_shape)

    def _ancestral(self, n: int, ctx: Tensor | None) -> Tensor:
        x = torch.zeros(n, self.num_dims, device=self.device, dtype=self.dtype)  # (n, D)
        for d in torch.argsort(self.net.order).tolist():
            out = self.net(self.encode(x), ctx)[:, d]  # (n, P)
            if self.levels == 2:
                x[:, d] = torch.bernoulli(torch.sigmoid(out[:, 0]))
            else:
                x[:, d] = torch.multinomial(torch.softmax(out, dim=-1), 1).squeeze(-1).to(x.dtype)
        return x
