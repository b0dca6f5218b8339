"""Two-sample tests: the statistics against their formulas, and measured type-I error and power.

The repetition loops run single-threaded: their tensors are small, and a second thread only adds
synchronisation cost (and contention when other jobs share the two cores).
"""

from __future__ import annotations

import pytest
import torch
from sklearn.linear_model import LogisticRegression

from dgm.core.errors import DgmError
from dgm.eval.twosample import (
    c2st,
    gaussian_kernel,
    median_bandwidth,
    mmd,
    mmd2_unbiased,
    resolve_bandwidths,
)


def naive_mmd2(x, y, bandwidths):
    """Gretton et al. (2012), eq. 3, written with explicit sums over i != j."""
    m, n = len(x), len(y)
    kxx, kyy, kxy = (gaussian_kernel(a, b, bandwidths) for a, b in ((x, x), (y, y), (x, y)))
    return float(
        (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
        + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
        - 2 * kxy.mean()
    )


def test_mmd_matches_the_formula_for_unequal_sizes_and_bandwidth_mixtures():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(37, 3, generator=g, dtype=torch.float64)
    y = torch.randn(23, 3, generator=g, dtype=torch.float64) + 0.3
    for bw in (1.3, [0.5, 1.0, 4.0]):
        expected = naive_mmd2(x, y, [bw] if isinstance(bw, float) else bw)
        assert mmd2_unbiased(x, y, bw) == pytest.approx(expected, rel=1e-10, abs=1e-12)
        assert mmd(x, y, bandwidth=bw).statistic == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_mmd_kernel_chunks_do_not_change_the_result(monkeypatch):
    import dgm.eval.twosample as ts

    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(50, 2, generator=g), torch.randn(40, 2, generator=g)
    whole = mmd(x, y, num_permutations=50)
    monkeypatch.setattr(ts, "_chunk_rows", lambda n, p: 7)  # many small row blocks
    chunked = mmd(x, y, num_permutations=50)
    assert chunked.statistic == pytest.approx(whole.statistic, rel=1e-10)
    assert chunked.p_value == whole.p_value


def test_median_heuristic_and_mixture():
    z = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])  # distances 3, 4, 5
    assert median_bandwidth(z) == pytest.approx(4.0)
    assert resolve_bandwidths(z, "mixture") == pytest.approx([1.0, 2.0, 4.0, 8.0, 16.0])
    with pytest.raises(DgmError, match="positive"):
        resolve_bandwidths(z, -1.0)
    with pytest.raises(DgmError, match="median"):
        resolve_bandwidths(z, "silverman")


# Type-I error. With 200 repetitions at alpha = 0.05, a test of exact level 5% rejects X ~ Bin(200,
# 0.05) times, and P(4 <= X <= 18) = 0.99: the window 2%..9% holds a valid test, and catches a
# miscalibrated one (a test of true size 12% lands inside with probability ~0.1). The C2ST is
# slightly conservative (its accuracy is discrete); seeds are fixed, so the run is reproducible.
TYPE_ONE = {
    "mmd-median": lambda a, b, i: mmd(a, b, num_permutations=199, seed=i).p_value,
    "mmd-mixture": lambda a, b, i: (
        mmd(a, b, bandwidth="mixture", num_permutations=199, seed=i).p_value
    ),
    "c2st-logistic-binomial": lambda a, b, i: c2st(a, b, classifier="logistic", seed=i).p_value,
    "c2st-knn-permutation": lambda a, b, i: (
        c2st(a, b, classifier="knn", null="permutation", num_permutations=199, seed=i).p_value
    ),
}


@pytest.mark.parametrize("name", list(TYPE_ONE))
def test_type_one_error_is_near_alpha(name, one_thread):
    test = TYPE_ONE[name]
    rejections = 0
    for i in range(200):
        g = torch.Generator().manual_seed(10_000 + i)
        a, b = torch.randn(100, 2, generator=g), torch.randn(100, 2, generator=g)
        rejections += test(a, b, i) <= 0.05
    assert 0.02 <= rejections / 200 <= 0.09, rejections


# Power against a mean shift of 0.3 standard deviations in 2-D at n = 1000 per sample. Measured
# power is ~0.97 for the logistic C2ST and ~1 for MMD. With R repetitions we require at least 90%
# rejections; a test of true power 0.97 passes with probability > 0.98 (R = 30: P(Bin(30, 0.03)
# <= 3) = 0.99), while one of true power 0.8 passes with probability ~0.12 (R = 30), so the check
# can fail.
POWER = {
    "mmd": (20, lambda a, b, i: mmd(a, b, num_permutations=100, seed=i).p_value),
    "c2st-logistic": (30, lambda a, b, i: c2st(a, b, classifier="logistic", seed=i).p_value),
}


@pytest.mark.parametrize("name", list(POWER))
def test_power_against_a_small_mean_shift(name, one_thread):
    reps, test = POWER[name]
    shift = torch.tensor([0.3, 0.0])
    rejections = 0
    for i in range(reps):
        g = torch.Generator().manual_seed(20_000 + i)
        a, b = torch.randn(1000, 2, generator=g), torch.randn(1000, 2, generator=g) + shift
        rejections += test(a, b, i) <= 0.05
    assert rejections >= 0.9 * reps, rejections


def test_c2st_options_features_and_errors():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(300, 2, generator=g), torch.randn(200, 2, generator=g) + 3.0
    for clf in ("mlp", "knn", LogisticRegression(C=0.5)):
        r = c2st(x, y, classifier=clf, null="permutation", num_permutations=99)
        assert r.statistic > 0.95 and r.p_value == pytest.approx(0.01)
    r = c2st(x, y, classifier="logistic")
    assert r.details["n_test"] == 200 and r.details["n_train"] == 200  # balanced: 200 per sample
    assert r.p_value < 1e-20
    # features that throw away the informative coordinate make the samples indistinguishable
    r = c2st(
        x, y + torch.tensor([0.0, -3.0]), classifier="logistic", features=lambda t: t[:, 1:] * 0
    )
    assert r.statistic == 0.5 and r.p_value > 0.4
    with pytest.raises(DgmError, match="unknown classifier"):
        c2st(x, y, classifier="svm")
    with pytest.raises(DgmError, match="same shape"):
        c2st(x, torch.randn(10, 3))
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(DgmError, match="NaN"):
        mmd(bad, y)
    with pytest.raises(DgmError, match="null"):
        c2st(x, y, null="exact")
