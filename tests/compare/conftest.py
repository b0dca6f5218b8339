"""Settings shared by the comparison tests: tiny runs, few samples, a coarse KL grid."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from dgm.models import get


def _configs(*names: str) -> dict[str, dict]:
    """Each model's small test configuration (its ``example.config``)."""
    return {n: dict(get(n).example.config) for n in names}


@pytest.fixture
def tiny() -> SimpleNamespace:
    """``tiny.eval`` (evaluation options), ``tiny.train`` (training options) and
    ``tiny.configs(*names)`` (model configurations) for runs that take seconds."""
    return SimpleNamespace(
        eval={"max_test": 300, "num_samples": 200, "grid_size": 40},
        train={"batch_size": 64, "eval_size": 200, "log_every": 5},
        configs=_configs,
    )
