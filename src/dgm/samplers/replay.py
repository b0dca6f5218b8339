"""A fixed-capacity replay buffer of persistent MCMC chains, kept in registered buffers so that a
model owning one saves and restores its chains with its ``state_dict``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from dgm.core.errors import ConfigError

__all__ = ["ReplayBuffer"]


class ReplayBuffer(nn.Module):
    """Fixed-capacity buffer of persistent chains (Du & Mordatch 2019, "Implicit Generation and
    Generalization in Energy-Based Models", §3.1; Tieleman 2008 for persistent CD).

    The states live in a registered buffer ``data`` of shape ``(capacity, *event)``, so a model
    that owns a ``ReplayBuffer`` saves and restores its chains with its ``state_dict``. The buffer
    is topped up with ``init`` draws on first use (``count`` of valid slots, also a buffer).

    :meth:`sample` draws ``n`` stored chains uniformly, replacing each independently with a fresh
    ``init`` draw with probability ``reinit_prob``, and returns their slots; after running MCMC on
    them, :meth:`push` writes the new states back into those slots (or, without slots, into the
    next slots of a ring).
    """

    def __init__(self, capacity: int, event_shape: tuple[int, ...], reinit_prob: float = 0.05):
        super().__init__()
        if capacity < 1:
            raise ConfigError(f"replay buffer capacity must be at least 1, not {capacity}")
        if not 0 <= reinit_prob <= 1:
            raise ConfigError(f"reinit_prob must lie in [0, 1], not {reinit_prob}")
        self.capacity = capacity
        self.reinit_prob = reinit_prob
        self.register_buffer("data", torch.zeros(capacity, *event_shape))
        # slots [0, count) hold states; the rest are filled by ``init`` on the next sample()
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def sample(
        self,
        n: int,
        init: Callable[[int], Tensor],
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``(states (n, *event), slots (n,))``; ``init(k)`` draws ``k`` fresh initial states."""
        have = int(self.count)
        if have < self.capacity:
            self.data[have:] = init(self.capacity - have).to(self.data)
            self.count.fill_(self.capacity)
        dev = self.data.device
        idx = torch.randint(0, self.capacity, (n,), generator=generator, device=dev)  # (n,)
        x = self.data[idx].clone()  # (n, *event)
        fresh = torch.rand(n, generator=generator, device=dev) < self.reinit_prob  # (n,)
        k = int(fresh.sum())
        if k:
            x[fresh] = init(k).to(x)
        return x, idx

    def push(self, x: Tensor, idx: Tensor | None = None) -> None:
        """Store states ``x (n, *event)`` into slots ``idx``, or the next ``n`` ring slots."""
        x = x.detach().to(self.data)
        if idx is None:
            idx = (self.ptr + torch.arange(x.shape[0], device=x.device)) % self.capacity
            self.ptr.copy_((self.ptr + x.shape[0]) % self.capacity)
            self.count.copy_(torch.clamp(self.count + x.shape[0], max=self.capacity))
        self.data[idx] = x

    def extra_repr(self) -> str:
        return f"capacity={self.capacity}, reinit_prob={self.reinit_prob}"
