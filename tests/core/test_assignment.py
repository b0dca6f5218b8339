"""The warm-started exact assignment: the same optimum as scipy's solver on the raw cost."""

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from dgm.core.assignment import EPS, ITERS, STAGES, linear_assignment, sinkhorn_potentials


def _total(cost: np.ndarray, cols: np.ndarray) -> float:
    return float(cost[np.arange(len(cols)), cols].sum())


def _optimum(cost: np.ndarray) -> float:
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].sum())


@pytest.mark.parametrize("n", [2, 7, 64, 200])
def test_warm_started_assignment_has_scipys_optimal_total_cost(n):
    rng = np.random.default_rng(n)
    for scale in (1e-3, 1.0, 50.0):  # 50: far points, a kernel clipped at exp(-60)
        a = rng.normal(size=(n, 2))
        b = scale * rng.uniform(-4, 4, size=(n, 2))
        cost = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        cols = linear_assignment(cost)
        assert sorted(cols.tolist()) == list(range(n))
        assert _total(cost, cols) == pytest.approx(_optimum(cost), rel=1e-12, abs=1e-12)
        assert _total(cost, linear_assignment(cost, warm_start=False)) == _optimum(cost)


def test_ties_and_rectangular_costs_keep_the_optimum():
    rng = np.random.default_rng(0)
    ties = rng.integers(0, 3, size=(40, 40)).astype(np.float64)  # many optimal assignments
    assert _total(ties, linear_assignment(ties)) == _optimum(ties)
    same = np.zeros((5, 5))  # a constant cost: no potentials, any permutation
    assert sorted(linear_assignment(same).tolist()) == list(range(5))
    wide = rng.normal(size=(6, 9))  # a column shift would change this optimum: none is applied
    cols = linear_assignment(wide)
    assert len(set(cols.tolist())) == 6
    assert _total(wide, cols) == pytest.approx(_optimum(wide), rel=1e-12)
    with pytest.raises(ValueError, match="n0 <= n1"):
        linear_assignment(wide.T)


def test_sinkhorn_potentials_are_nearly_dual_feasible():
    # the shift that makes the warm start fast: reduced costs C - f - g almost nonnegative and
    # almost zero on the optimal pairs (within a few eps = the last stage's regularisation
    # times the mean reduced cost), the others far from zero
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(2, 128, 2))
    cost = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    red = cost - cost.min(1, keepdims=True)
    eps = EPS[1] * float((red - red.min(0, keepdims=True)).mean())
    rows, cols = linear_sum_assignment(cost)

    def reduced(potentials):
        f, g = potentials
        return cost - f[:, None] - g[None, :]

    scaled = reduced(sinkhorn_potentials(cost))
    assert scaled.min() > -0.1 * eps
    assert scaled[rows, cols].max() < 4 * eps
    assert scaled.mean() > 100 * eps  # the other pairs stay far: not trivially zero everywhere
    # the stages are what make them tight: one stage at the last regularisation, with as many
    # iterations in all, leaves optimal pairs many eps from zero
    flat = reduced(sinkhorn_potentials(cost, eps=(EPS[1], EPS[1]), stages=1, iters=STAGES * ITERS))
    assert flat[rows, cols].max() > 3 * scaled[rows, cols].max()


def test_sinkhorn_potentials_refuse_what_they_cannot_steer():
    assert sinkhorn_potentials(np.zeros((4, 4))) is None  # constant: nothing to steer
    nan = np.ones((4, 4))
    nan[1, 2] = np.nan
    assert sinkhorn_potentials(nan) is None
