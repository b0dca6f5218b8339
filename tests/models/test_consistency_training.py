"""The improved consistency-training options (Song & Dhariwal 2023) of ``consistency``: the
discretisation curriculum, the log-normal choice of interval and the pseudo-Huber metric, each
checked against its formula, in float64."""

from __future__ import annotations

import math

import pytest
import torch

from dgm.core.errors import ConfigError
from dgm.core.spec import DataSpec
from dgm.models.flow_matching import Consistency, ConsistencyConfig

D64 = torch.float64


def model(**cfg):
    return Consistency(DataSpec((2,)), ConsistencyConfig(width=8, depth=1, **cfg)).to(D64)


def test_the_curriculum_doubles_n_up_to_levels():
    m = model(levels=160, levels_start=10, double_every=100)
    got = [m.levels_at(s) for s in (0, 99, 100, 250, 399, 400, 10_000)]
    assert got == [10, 10, 20, 40, 80, 160, 160]
    assert m.levels_at(None) == 160  # outside training: the finest grid
    assert model(levels=20).levels_at(5000) == 20  # no curriculum: N fixed


def test_lognormal_interval_probabilities_are_the_lognormal_mass_of_each_interval():
    m = model(time_sampling="lognormal")
    n = 8
    p = m.interval_probs(n)
    assert p.shape == (n,) and math.isclose(float(p.sum()), 1.0, rel_tol=1e-12)
    # interval k covers sigma = (1 - t) / t from (1 - k/n)/(k/n) down to (1 - (k+1)/n)/((k+1)/n)
    normal = torch.distributions.Normal(torch.tensor(-1.1, dtype=D64), torch.tensor(2.0, dtype=D64))
    for k in range(n):
        hi = math.inf if k == 0 else (1 - k / n) / (k / n)
        lo = (1 - (k + 1) / n) / ((k + 1) / n)
        cdf_hi = 1.0 if hi == math.inf else float(normal.cdf(torch.tensor(math.log(hi), dtype=D64)))
        cdf_lo = 0.0 if lo == 0 else float(normal.cdf(torch.tensor(math.log(lo), dtype=D64)))
        assert math.isclose(float(p[k]), cdf_hi - cdf_lo, rel_tol=1e-9, abs_tol=1e-12), k
    u = model(time_sampling="uniform").interval_probs(n)
    assert torch.allclose(u, torch.full((n,), 1 / n, dtype=D64))


def test_pseudo_huber_is_the_formula_and_l2_is_the_mean_square():
    a = torch.tensor([[0.0, 0.0], [3.0, 4.0]], dtype=D64)
    b = torch.zeros(2, 2, dtype=D64)
    c = 0.00054 * math.sqrt(2)
    got = model(metric="pseudo-huber").distance(a, b)
    assert torch.allclose(got, torch.tensor([0.0, math.sqrt(25 + c * c) - c], dtype=D64))
    assert torch.allclose(model(metric="pseudo-huber", huber_c=1.0).distance(a, b),
                          torch.tensor([0.0, math.sqrt(26) - 1], dtype=D64))  # fmt: skip
    assert torch.allclose(model(metric="l2").distance(a, b), torch.tensor([0.0, 12.5], dtype=D64))


def test_training_uses_the_curriculum_of_its_step():
    # during training_step the loss's grid is the curriculum's: at step 0 with levels_start 1
    # the only interval is [0, 1], whose target is the data itself (f(x, 1) = x)
    m = model(levels=64, levels_start=1, double_every=1000)
    seen = []
    orig = m.consistency

    def spy(z, t, y=None, end=None):
        seen.append(t.clone())
        return orig(z, t, y, end)

    m.consistency = spy
    m.training_step(torch.randn(16, 2, dtype=D64), 0, lambda loss, group: None)
    assert all(torch.all(t == 0) or torch.all(t == 1) for t in seen) and m.step_in_training is None


@pytest.mark.parametrize("bad", [{"levels_start": 0}, {"double_every": -1}, {"huber_c": 0.0}])
def test_bad_options_are_one_clear_error(bad):
    with pytest.raises(ConfigError):
        ConsistencyConfig(**bad)
