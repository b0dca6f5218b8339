"""Mode coverage on exact and collapsed samples of ring8 and grid25."""

from __future__ import annotations

import doctest
import math

import pytest
import torch

import dgm.eval.modes
from dgm.core.errors import DgmError
from dgm.data import get_density
from dgm.eval.modes import mode_coverage, mode_histogram, smeared_baseline
from dgm.eval.suite import mode_metrics

# fraction of a 2-D standard Gaussian within 3 std of its centre: 1 - exp(-9/2)
WITHIN_3_STD = 1.0 - math.exp(-4.5)


@pytest.mark.parametrize("name, k", [("ring8", 8), ("grid25", 25), ("8gaussians", 8)])
def test_exact_samples_capture_every_mode(name, k):
    d = get_density(name)
    s = d.sample(2500, generator=torch.Generator().manual_seed(0))
    r = mode_coverage(s, d.modes, d.mode_std)
    assert r["modes_captured"] == r["modes_total"] == k
    # 2500 draws: the high-quality fraction has standard error 0.002 around 0.989
    assert abs(r["high_quality"] - WITHIN_3_STD) < 0.01
    assert r["kl_uniform"] < 0.02


def test_collapsed_samples_capture_fewer_modes():
    d = get_density("ring8")
    g = torch.Generator().manual_seed(1)
    s = d.sample(3000, generator=g)
    near = torch.cdist(s.double(), d.modes).argmin(1)
    collapsed = s[near < 3]  # only modes 0, 1 and 2 survive
    r = mode_coverage(collapsed, d.modes, d.mode_std)
    assert r["modes_captured"] == 3
    assert r["kl_uniform"] == pytest.approx(math.log(8 / 3), abs=0.02)
    # a few stray samples on a fourth mode stay below the 1/5 threshold: not captured
    stray = d.modes[3].float() + 0.01 * torch.randn(5, 2, generator=g)
    r = mode_coverage(torch.cat([collapsed, stray]), d.modes, d.mode_std)
    assert r["modes_captured"] == 3 and r["min_count"] > 5


def test_blurry_samples_are_not_high_quality():
    d = get_density("grid25")
    g = torch.Generator().manual_seed(2)
    s = d.sample(2500, generator=g) + 0.5 * torch.randn(2500, 2, generator=g)  # 10 std of blur
    r = mode_coverage(s, d.modes, d.mode_std)
    assert r["high_quality"] < 0.05 and r["modes_captured"] < 25
    far = mode_coverage(torch.full((10, 2), 100.0), d.modes, d.mode_std)
    assert far["modes_captured"] == 0 and far["kl_uniform"] == pytest.approx(math.log(25))


def test_histogram_counts_and_errors():
    modes = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    pts = torch.tensor([[0.1, 0.0], [9.8, 0.0], [10.0, 0.25], [5.0, 0.0], [float("nan"), 0.0]])
    assert mode_histogram(pts, modes, std=0.1).tolist() == [1, 2]
    with pytest.raises(DgmError, match="same D"):
        mode_histogram(torch.zeros(3, 3), modes, 0.1)
    with pytest.raises(DgmError, match="positive"):
        mode_histogram(pts, modes, 0.0)


def ring(density, n: int, seed: int) -> torch.Tensor:
    """``n`` samples spread evenly around the circle through the modes, with a radial spread of
    one mode std: a model that smears the mixture into a ring."""
    g = torch.Generator().manual_seed(seed)
    radius = float(density.modes.norm(dim=1).max())
    angle = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    r = radius + density.mode_std * torch.randn(n, generator=g, dtype=torch.float64)
    return torch.stack([r * angle.cos(), r * angle.sin()], dim=1)  # (n, 2)


def test_a_ring_through_the_modes_is_not_called_high_quality():
    """On ring8 (neighbouring modes 77 std apart) a ring scores 7% against 99% for exact
    samples; on 8gaussians (6.1 std apart) it scores 91%, close to exact samples' 99%, so the
    figure is withheld there instead of being reported."""
    r8 = get_density("ring8")
    assert mode_coverage(ring(r8, 4000, 0), r8.modes, r8.mode_std)["high_quality"] < 0.1
    exact = r8.sample(4000, generator=torch.Generator().manual_seed(0))
    assert mode_metrics(exact, r8.modes, r8.mode_std)["modes_high_quality"] >= 0.95
    g8 = get_density("8gaussians")
    smeared = mode_coverage(ring(g8, 4000, 0), g8.modes, g8.mode_std)
    assert smeared["high_quality"] > 0.85 and not smeared["separated"]  # the rule cannot tell
    assert smeared["baseline"] == pytest.approx(0.98, abs=0.01)
    reported = mode_metrics(ring(g8, 4000, 0), g8.modes, g8.mode_std)
    assert reported["modes_high_quality"] is None and "withheld" in reported["modes_note"]
    exact = mode_coverage(g8.sample(4000), g8.modes, g8.mode_std)
    assert exact["high_quality"] >= 0.95  # the rule itself still passes exact samples


@pytest.mark.parametrize(
    "name, expected", [("ring8", 0.078), ("grid25", 0.15), ("8gaussians", 0.98)]
)
def test_baseline_is_what_smeared_samples_score(name, expected):
    d = get_density(name)
    assert smeared_baseline(d.modes, d.mode_std) == pytest.approx(expected, abs=0.005)
    assert smeared_baseline(d.modes[:1], d.mode_std) == 0.0


def test_docstring_examples_run():
    failures, tried = doctest.testmod(dgm.eval.modes)
    assert tried > 0 and failures == 0
