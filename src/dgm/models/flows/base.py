"""What every flow model shares: exact ``log_prob`` and ``sample`` through ``self.flow``."""

from __future__ import annotations

from torch import Tensor

from dgm.core.errors import DataError
from dgm.core.model import Model

__all__ = ["FlowModel"]


class FlowModel(Model):
    """A :class:`Model` whose subclass builds ``self.flow`` (a
    :class:`dgm.core.distributions.NormalizingFlow`) in its constructor."""

    family = "flows"
    exact_likelihood = True
    data_kinds = frozenset({"continuous"})

    def _no_labels(self, y: Tensor | None) -> None:
        if y is not None:
            raise DataError(f"model {self.name!r} is unconditional; call it without labels y")

    def log_prob(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        self._no_labels(y)
        return self.flow.log_prob(self.check_input(x))  # (B,)

    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        self._no_labels(y)
        return self.flow.sample(n)  # (n, *event_shape)

    def forward_transform(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Data to noise: ``(z (B, *event_shape), log|det dz/dx| (B,))``."""
        return self.flow(self.check_input(x))

    def inverse_transform(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Noise to data: ``(x (B, *event_shape), log|det dx/dz| (B,))``."""
        return self.flow.inverse(self.check_input(z, "z"))
