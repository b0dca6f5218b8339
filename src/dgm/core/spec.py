"""What a model needs to know about its data: shape and kind, never the data itself."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

from dgm.core.errors import ConfigError

__all__ = ["INFERENCE_VALUES", "DataSpec", "inference_batch"]

Kind = Literal["continuous", "discrete"]

#: input values per forward pass when a model scores data (2^15: 41 MNIST images, 512 of the 8x8
#: digits, the cap for 2-D points). A network's feature maps hold a hundred or more values per
#: input value; past 32 MB glibc's malloc maps each one fresh from the kernel and returns it when
#: freed, so every batch page-faults its maps in again. A Gated PixelCNN scored 2000 binarized
#: MNIST images in 29.8 s in batches of 1000 (29.4 s of it in the kernel, 15 million page faults)
#: and in 9.7 s in batches of 32 (0.1 s in the kernel), 2 threads; smaller batches were as fast or
#: faster for every image model measured (pixelcnn, transformer, rnn, vae, realnvp, glow)
INFERENCE_VALUES = 2**15


def inference_batch(num_dims: int, cap: int = 1000) -> int:
    """Examples of ``num_dims`` values per forward pass when scoring: :data:`INFERENCE_VALUES`
    input values, at least 1 and at most ``cap``."""
    return max(1, min(cap, INFERENCE_VALUES // max(1, num_dims)))


@dataclass(frozen=True)
class DataSpec:
    """Shape and type of one example.

    Args:
        event_shape: shape of one example, e.g. ``(2,)`` for 2-D points or ``(1, 28, 28)`` for images.
        kind: ``"continuous"`` (real values) or ``"discrete"`` (integers ``0 .. levels - 1``,
            stored as floating-point tensors).
        levels: number of values a discrete dimension takes (2 for binary, 17 for the 8x8 digits,
            256 for 8-bit images); ``None`` for continuous data.
        num_classes: number of class labels when the data has labels, else ``None``.
    """

    event_shape: tuple[int, ...]
    kind: Kind = "continuous"
    levels: int | None = None
    num_classes: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "event_shape", tuple(int(s) for s in self.event_shape))
        if self.kind not in ("continuous", "discrete"):
            raise ConfigError(f"kind must be 'continuous' or 'discrete', not {self.kind!r}")
        if self.kind == "discrete" and (self.levels is None or self.levels < 2):
            raise ConfigError("discrete data needs levels >= 2 (e.g. 2 for binary images)")
        if self.kind == "continuous" and self.levels is not None:
            raise ConfigError("continuous data has no levels; use kind='discrete' for integer data")

    @property
    def num_dims(self) -> int:
        """Number of scalar dimensions of one example (the D in bits per dimension)."""
        return math.prod(self.event_shape)

    @property
    def is_image(self) -> bool:
        return len(self.event_shape) == 3

    @property
    def is_large_image(self) -> bool:
        """An image above 16 pixels a side (MNIST, not the 8x8 digits): where models pick
        larger networks' shapes and their MNIST training recipes."""
        return self.is_image and max(self.event_shape[1:]) > 16

    def inference_batch(self, cap: int = 1000) -> int:
        """Examples per forward pass when scoring (:func:`inference_batch`)."""
        return inference_batch(self.num_dims, cap)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["event_shape"] = list(self.event_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DataSpec:
        """The spec saved by :meth:`to_dict`; anything else is one :class:`ConfigError`."""
        try:
            return cls(
                event_shape=tuple(d["event_shape"]),
                kind=d.get("kind", "continuous"),
                levels=d.get("levels"),
                num_classes=d.get("num_classes"),
            )
        except ConfigError as e:
            raise ConfigError(f"the data spec {d!r} is malformed: {e}") from None
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ConfigError(
                f"the data spec {d!r} is malformed; it needs event_shape (a list of integers), "
                "kind, levels and num_classes as dgm writes them"
            ) from None
