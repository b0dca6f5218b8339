r"""``rnn``: an LSTM over the flattened sequence, the simplest autoregressive baseline.

Hochreiter & Schmidhuber, "Long Short-Term Memory", Neural Computation 1997; as a language model
over pixels, the Row/Diagonal LSTMs of van den Oord et al. ("Pixel Recurrent Neural Networks",
ICML 2016) are its two-dimensional refinements -- this model is the plain one-dimensional version.

The data ``x in {0..L-1}^D`` (any event shape, flattened in raster order) is read as
``[s, x_0, ..., x_{D-2}]`` with a learned start vector ``s``; an LSTM of ``depth`` layers reads
the embedded sequence, and a linear map of its state after ``d`` inputs gives the logits of
``x_d``, which therefore depend on ``x_{<d}`` only. With ``conditional=True`` a class embedding is
concatenated to every input.

**Fast sampling** carries the recurrent state ``(h, c)`` from one step to the next (one LSTM step
per dimension); the naive sampler re-reads the whole prefix for every dimension.

>>> from dgm.core.spec import DataSpec
>>> m = RNN(DataSpec((6,), "discrete", levels=3), RNN.Config(embed=4, width=8))
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
from dgm.models.autoregressive.base import AutoregressiveModel

__all__ = ["RNN", "RNNConfig"]


@dataclass
class RNNConfig:
    """Hyperparameters of :class:`RNN`.

    Attributes:
        embed: size of the value (and class) embeddings.
        width: LSTM state size.
        depth: stacked LSTM layers.
        conditional: condition on class labels (a class embedding joins every input).
        label_dropout: probability that a training label is replaced by a null class
            (conditional models), so the model is also unconditional: ``log_prob(x)`` and
            ``sample(n)`` without labels use that branch, and ``sample(n, y, guidance=w)`` mixes
            the two branches' logits; 0: no null class.
    """

    #: keys of earlier versions and their names now (saved runs are translated)
    renamed: ClassVar[dict[str, str]] = {"hidden": "width", "layers": "depth"}

    embed: int = 32
    width: int = 256
    depth: int = 1
    conditional: bool = False
    label_dropout: float = 0.0

    def __post_init__(self) -> None:
        for key in ("embed", "width", "depth"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1, not {getattr(self, key)}")


@register
class RNN(AutoregressiveModel):
    """LSTM autoregressive model over discrete sequences (see the module docstring)."""

    name = "rnn"
    description = "LSTM over the flattened sequence, exact likelihood, stateful fast sampling"
    Config = RNNConfig
    #: on MNIST-sized images the options of its 30-minute binarized-MNIST benchmark (101.10 nats
    #: on the full test set, one thread, ``autoregressive_nll_rnn30.json``), the cosine decay on
    #: the time clock. ``dgm train rnn --data binarized-mnist`` with them: 100.60 on the full
    #: test set (``defaults_binarized_mnist.json``)
    large_image_train_defaults: ClassVar[dict[str, Any]] = {
        "max_minutes": 30,
        "batch_size": 64,
        "lr": 2e-3,
        "schedule": "cosine",
        "warmup_steps": 20,
        "grad_clip": 1.0,
    }
    example = Example(
        spec=DataSpec((7,), kind="discrete", levels=3, num_classes=3),
        config={"embed": 4, "width": 8},
        variants=({"conditional": True, "label_dropout": 0.2},),
    )

    def __init__(self, spec: DataSpec, config: RNNConfig | None = None) -> None:
        super().__init__(spec, config)
        c: RNNConfig = self.config
        self.values = nn.Embedding(self.levels, c.embed)
        self.start = nn.Parameter(0.1 * torch.randn(c.embed))
        self.classes = nn.Embedding(self.label_rows, c.embed) if self.conditional else None
        in_width = c.embed * (2 if self.conditional else 1)
        self.lstm = nn.LSTM(in_width, c.width, num_layers=c.depth, batch_first=True)
        self.out = nn.Linear(c.width, self.levels)

    def _with_class(self, e: Tensor, y: Tensor | None) -> Tensor:
        """Concatenate the class embedding to every input ``e (B, S, E)``."""
        if self.classes is None or y is None:
            return e
        cls = self.classes(y)[:, None].expand(-1, e.shape[1], -1)  # (B, S, E)
        return torch.cat([e, cls], dim=-1)

    def embed(self, x: Tensor) -> Tensor:
        """Embeddings ``(B, D, E)`` of the data values (flattened)."""
        return self.values(x.reshape(x.shape[0], -1).long())  # (B, D, E)

    def logits_from_embeddings(self, e: Tensor, y: Tensor | None = None) -> Tensor:
        """Logits ``(B, D, L)`` from value embeddings ``e (B, D, E)``: step ``d`` has read the
        start vector and ``e_{<d}`` (the tests differentiate through ``e``)."""
        start = self.start.expand(e.shape[0], 1, -1)  # (B, 1, E)
        seq = self._with_class(torch.cat([start, e[:, :-1]], dim=1), y)  # (B, D, E')
        h, _ = self.lstm(seq)  # (B, D, hidden)
        return self.out(h)  # (B, D, L)

    def logits(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Logits ``(B, D, L)`` of every conditional; ``y`` are long labels or ``None``."""
        return self.logits_from_embeddings(self.embed(x), y)

    def fast_decoder(self, n: int, y: Tensor | None) -> _StateDecoder:
        return _StateDecoder(self, n, y)


class _StateDecoder:
    """One LSTM step per dimension, carrying the state ``(h, c)``."""

    def __init__(self, model: RNN, n: int, y: Tensor | None) -> None:
        self.model, self.y = model, y
        self.state: tuple[Tensor, Tensor] | None = None
        self.next = model.start.expand(n, 1, -1)  # (n, 1, E)

    def logits(self) -> Tensor:
        h, self.state = self.model.lstm(self.model._with_class(self.next, self.y), self.state)
        return self.model.out(h[:, 0])  # (n, L)

    def feed(self, values: Tensor) -> None:
        self.next = self.model.values(values.long())[:, None]  # (n, 1, E)
