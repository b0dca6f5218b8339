"""Preprocessing: round trips, log-determinants, and the dequantization bound checked in float64."""

from __future__ import annotations

import json
import math

import pytest
import torch

from dgm.core.errors import ConfigError, DataError
from dgm.core.spec import DataSpec
from dgm.data import (
    Binarize,
    Dequantize,
    Identity,
    preprocessor_from_config,
)
from dgm.data.preprocess import default_preprocessor

IMAGES = DataSpec((1, 8, 8), "discrete", levels=17, num_classes=10)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_identity():
    x = torch.randn(5, 2, dtype=torch.float64)
    xm, log_det = Identity()(x)
    assert xm is x and torch.equal(log_det, torch.zeros(5, dtype=torch.float64))
    assert Identity().spec(IMAGES) == IMAGES and Identity().inverse(x) is x


# ---------------------------------------------------------------------------------- dequantize
@pytest.mark.parametrize("levels", [2, 17, 256])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dequantize_round_trip_and_range(levels, dtype):
    x = torch.randint(levels, (64, 1, 8, 8), generator=_gen(1)).to(dtype)
    deq = Dequantize(levels)
    xm, _ = deq(x, generator=_gen(2))
    assert xm.dtype == dtype and xm.shape == x.shape
    assert ((xm >= 0) & (xm < 1)).all()
    assert torch.equal(deq.inverse(xm), x)
    assert not torch.equal(xm, (x + 0.5) / levels)  # noise was added


def test_dequantize_round_trip_survives_float32_rounding_at_bin_edges():
    # u close to 1 makes x + u round up to x + 1 in float32 about 2^-17 of the time at x = 200;
    # with 2 million draws that happens ~15 times, and each must still map back to x
    x = torch.cat([torch.full((1_000_000,), 200.0), torch.full((1_000_000,), 255.0)])[:, None]
    deq = Dequantize(256)
    xm, _ = deq(x, generator=_gen(3))
    assert (xm < 1).all()
    assert torch.equal(deq.inverse(xm), x)


def test_dequantize_log_det_and_spec():
    deq = Dequantize(17)
    x = torch.randint(17, (3, 1, 8, 8), generator=_gen(4)).double()
    _, log_det = deq(x, generator=_gen(5))
    assert log_det.shape == (3,) and log_det.dtype == torch.float64
    assert torch.allclose(log_det, torch.full((3,), -64 * math.log(17), dtype=torch.float64))
    assert deq.spec(IMAGES) == DataSpec((1, 8, 8), "continuous", num_classes=10)
    assert deq.stochastic


def test_dequantize_noise_is_reproducible_with_a_generator():
    x = torch.zeros(4, 3)
    deq = Dequantize(4)
    assert torch.equal(deq(x, generator=_gen(6))[0], deq(x, generator=_gen(6))[0])
    assert not torch.equal(deq(x, generator=_gen(6))[0], deq(x, generator=_gen(7))[0])


def test_dequantize_bound_is_tight_for_a_density_constant_on_bins():
    # 1-D, 4 levels: q(y) = 4 * pi_k on bin k = [k/4, (k+1)/4), so P(k) = pi_k exactly and
    # log q((k + u) / 4) - log 4 = log pi_k for every u
    pi = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    deq = Dequantize(4)
    x = torch.arange(4, dtype=torch.float64).repeat(250)[:, None]  # (1000, 1)
    y, log_det = deq(x, generator=_gen(8))
    log_q = torch.log(4 * pi[torch.floor(4 * y[:, 0]).long()])
    assert torch.allclose(log_q + log_det, torch.log(pi[x[:, 0].long()]), atol=1e-12)


def _smooth_density(y):
    """A normalised density on [0, 1) that varies strongly inside each of 4 bins."""
    return torch.exp(2.0 * torch.sin(6 * math.pi * y)) / _SMOOTH_Z


_fine = (torch.arange(400_000, dtype=torch.float64) + 0.5) / 400_000
_SMOOTH_Z = float(torch.exp(2.0 * torch.sin(6 * math.pi * _fine)).mean())


def test_dequantize_bound_is_below_the_exact_discrete_log_likelihood():
    levels, n = 4, 20_000
    deq = Dequantize(levels)
    for k in range(levels):
        # exact log P(k) and exact E_u[log q((k + u) / L)] by midpoint quadrature over the bin
        u = (torch.arange(100_000, dtype=torch.float64) + 0.5) / 100_000
        q = _smooth_density((k + u) / levels)
        log_p = math.log(float(q.mean()) / levels)
        expected_bound = float(q.log().mean()) - math.log(levels)
        # Monte Carlo through the preprocessor
        x = torch.full((n, 1), float(k), dtype=torch.float64)
        y, log_det = deq(x, generator=_gen(10 + k))
        bound = torch.log(_smooth_density(y[:, 0])) + log_det  # (n,)
        sem = float(bound.std()) / math.sqrt(n)
        assert abs(float(bound.mean()) - expected_bound) < 5 * sem  # u is uniform on the bin
        assert float(bound.mean()) + 5 * sem < log_p  # a strict lower bound (Jensen gap > 0)
        assert log_p - expected_bound < 1.5  # and not a vacuous one


def test_dequantize_rejects_raw_data_that_is_not_integer_levels():
    with pytest.raises(DataError, match=r"dequantize needs integer values 0..3, found 0.5"):
        Dequantize(4)(torch.tensor([[0.5, 1.0]]))
    with pytest.raises(DataError, match="found 4.0"):
        Dequantize(4)(torch.tensor([[4.0]]))
    with pytest.raises(DataError, match="already continuous"):
        Dequantize(4).spec(DataSpec((2,)))
    with pytest.raises(
        DataError, match=r"set up for 256 levels but the data has 17; use Dequantize\(levels=17\)"
    ):
        Dequantize(256).spec(IMAGES)
    with pytest.raises(ConfigError, match="only kind is 'uniform'"):
        Dequantize(4, kind="variational")
    with pytest.raises(ConfigError, match="levels must be an integer >= 2"):
        Dequantize(1)


# ---------------------------------------------------------------------------------- binarize
def test_dynamic_binarize_mean_is_x_over_levels_minus_one():
    x = torch.arange(256, dtype=torch.float32).repeat(4000, 1)  # (4000, 256): every level
    b, log_det = Binarize("dynamic")(x, generator=_gen(11))
    assert set(b.unique().tolist()) == {0.0, 1.0} and torch.equal(log_det, torch.zeros(4000))
    p = x[0] / 255
    sem = (p * (1 - p) / 4000).sqrt().clamp_min(1e-12)
    z = (b.mean(0) - p).abs() / sem
    assert (z[1:-1] < 5).all()
    assert b[:, 0].sum() == 0 and b[:, -1].sum() == 4000  # p = 0 and p = 1 are exact
    assert torch.equal(b, Binarize("dynamic")(x, generator=_gen(11))[0])


def test_static_binarize_is_a_deterministic_threshold():
    x = torch.arange(256, dtype=torch.float64)[None]
    b1, _ = Binarize("static")(x)
    b2, _ = Binarize("static")(x, generator=_gen(12))
    assert torch.equal(b1, b2) and torch.equal(b1[0], (torch.arange(256) > 127.5).double())
    b3, _ = Binarize("static", threshold=0.25, levels=17)(torch.arange(17.0)[None])
    assert torch.equal(b3[0], (torch.arange(17) > 4).float())
    assert not Binarize("static").stochastic and Binarize("dynamic").stochastic


def test_binarize_spec_and_inverse():
    raw = DataSpec((1, 28, 28), "discrete", levels=256, num_classes=10)
    assert Binarize().spec(raw) == DataSpec((1, 28, 28), "discrete", levels=2, num_classes=10)
    assert torch.equal(Binarize().inverse(torch.tensor([0.0, 1.0])), torch.tensor([0.0, 255.0]))
    with pytest.raises(DataError, match="binarize needs discrete data"):
        Binarize().spec(DataSpec((2,)))
    with pytest.raises(DataError, match="set up for 256 levels but the data has 17"):
        Binarize().spec(IMAGES)
    with pytest.raises(ConfigError, match="mode must be 'dynamic' or 'static'"):
        Binarize("sometimes")
    with pytest.raises(ConfigError, match=r"threshold must be a number in \[0, 1\)"):
        Binarize("static", threshold=1.5)


# ---------------------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    "pre", [Identity(), Dequantize(17), Binarize("static", 0.3, 17), Binarize("dynamic")]
)
def test_config_round_trip_through_json(pre):
    cfg = json.loads(json.dumps(pre.to_config()))
    back = preprocessor_from_config(cfg)
    assert type(back) is type(pre) and back.to_config() == pre.to_config() and back == pre


def test_config_errors_name_the_valid_choices():
    with pytest.raises(
        ConfigError,
        match="unknown preprocessor 'logit'; the preprocessors are: identity, dequantize, binarize",
    ):
        preprocessor_from_config({"name": "logit"})
    with pytest.raises(
        ConfigError,
        match="unknown key 'level' for preprocessor 'dequantize'; valid keys are: levels, kind",
    ):
        preprocessor_from_config({"name": "dequantize", "level": 3})
    with pytest.raises(ConfigError, match="is incomplete"):
        preprocessor_from_config({"name": "dequantize"})
    with pytest.raises(ConfigError, match="mapping with a 'name'"):
        preprocessor_from_config(["dequantize"])


# ---------------------------------------------------------------------------------- defaults
def test_default_preprocessor():
    discrete, continuous = frozenset({"discrete"}), frozenset({"continuous"})
    assert default_preprocessor(IMAGES, discrete) == Identity()
    assert default_preprocessor(IMAGES, continuous) == Dequantize(17)
    assert default_preprocessor(IMAGES, discrete | continuous) == Identity()
    assert default_preprocessor(DataSpec((2,)), continuous) == Identity()
    with pytest.raises(
        DataError, match="this model needs discrete data but the data is continuous; use"
    ):
        default_preprocessor(DataSpec((2,)), discrete)
