"""The analytic 2-D densities: normalised, sampled exactly, modes where documented (float64)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from dgm.core.errors import DataError
from dgm.data import Density2D, get_density, load
from dgm.data.analytic import Checkerboard, Grid25, Ring8, Rings, density_names

EXACT = ["8gaussians", "checkerboard", "rings", "ring8", "grid25"]


def _grid(bounds, n):
    """Midpoints of an n x n grid over bounds, (n*n, 2) in row-major (y, x) order, and cell area."""
    xmin, xmax, ymin, ymax = bounds
    hx, hy = (xmax - xmin) / n, (ymax - ymin) / n
    xs = xmin + hx * (torch.arange(n, dtype=torch.float64) + 0.5)
    ys = ymin + hy * (torch.arange(n, dtype=torch.float64) + 0.5)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1), hx * hy


def _log_prob(density, pts, chunk=100_000):
    return torch.cat([density.log_prob(pts[i : i + chunk]) for i in range(0, len(pts), chunk)])


def _samples(density, n, seed=0):
    return density.sample(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _chi2_pvalue(density, samples, bins=20, sub=25):
    """Chi-square test of samples against cell probabilities of ``density``'s log_prob, with the
    probabilities integrated on a fine grid (``sub x sub`` midpoints per cell) over its bounds."""
    n_fine = bins * sub
    pts, area = _grid(density.bounds, n_fine)
    p = (_log_prob(density, pts).exp() * area).reshape(bins, sub, bins, sub).sum((1, 3))  # (y, x)
    xmin, xmax, ymin, ymax = density.bounds
    ix = torch.floor((samples[:, 0] - xmin) / (xmax - xmin) * bins).long()
    iy = torch.floor((samples[:, 1] - ymin) / (ymax - ymin) * bins).long()
    inside = (ix >= 0) & (ix < bins) & (iy >= 0) & (iy < bins)
    counts = torch.bincount(iy[inside] * bins + ix[inside], minlength=bins * bins).double()
    expected = p.reshape(-1) * samples.shape[0]
    big = expected >= 5
    obs, exp = counts[big], expected[big]
    rest_obs, rest_exp = samples.shape[0] - obs.sum(), samples.shape[0] - exp.sum()
    if rest_exp >= 5:  # pool the sparse cells and everything outside the bounds
        obs, exp = torch.cat([obs, rest_obs.reshape(1)]), torch.cat([exp, rest_exp.reshape(1)])
    elif rest_obs > 10 + 10 * rest_exp:  # samples where the density has (almost) no mass
        return 0.0
    stat = float(((obs - exp) ** 2 / exp).sum())
    return float(stats.chi2.sf(stat, df=obs.numel() - 1))


@pytest.mark.parametrize(
    ("name", "n"), [("8gaussians", 300), ("rings", 400), ("ring8", 400), ("grid25", 400)]
)
def test_density_integrates_to_one_over_its_bounds(name, n):
    d = get_density(name)
    pts, area = _grid(d.bounds, n)
    total = float(_log_prob(d, pts).exp().sum() * area)
    assert total == pytest.approx(1.0, abs=1e-3)


def test_checkerboard_integrates_to_one_exactly_and_has_dark_area_32():
    d = Checkerboard()
    pts, area = _grid(d.bounds, 400)  # cell edges at multiples of 2 fall between midpoints
    lp = d.log_prob(pts)
    assert float(torch.isfinite(lp).double().sum() * area) == pytest.approx(32.0, rel=1e-12)
    assert float(lp.exp().sum() * area) == pytest.approx(1.0, rel=1e-12)
    pts_wide, area_wide = _grid((-8.0, 8.0, -8.0, 8.0), 800)
    assert float(d.log_prob(pts_wide).exp().sum() * area_wide) == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("name", EXACT)
def test_sampler_matches_log_prob_by_chi_square(name):
    d = get_density(name)
    assert _chi2_pvalue(d, _samples(d, 200_000)) > 1e-3


def _entropy_gap(density, samples):
    """(mean log_prob over samples + entropy by grid quadrature) in units of its standard error
    (plus a 1e-3 allowance for the quadrature)."""
    pts, area = _grid(density.bounds, 400)
    lp = _log_prob(density, pts)
    p = lp.exp()
    neg_entropy = float(torch.where(p > 0, p * lp, torch.zeros_like(p)).sum() * area)
    lp_s = density.log_prob(samples)
    if not torch.isfinite(lp_s).all():
        return math.inf
    sem = float(lp_s.std()) / math.sqrt(lp_s.numel())
    return abs(float(lp_s.mean()) - neg_entropy) / (sem + 1e-3 / 5)


@pytest.mark.parametrize("name", EXACT)
def test_mean_log_prob_of_samples_equals_entropy_by_quadrature(name):
    d = get_density(name)
    assert _entropy_gap(d, _samples(d, 100_000, seed=1)) < 5


def test_sampler_checks_detect_a_slightly_wrong_sampler():
    # the same checks must reject samples from a neighbouring density
    assert _chi2_pvalue(Rings(), _samples(Rings(std=0.092), 100_000)) < 1e-6
    assert _chi2_pvalue(Checkerboard(), _samples(Checkerboard(), 100_000) + 0.05) < 1e-6
    assert _entropy_gap(Ring8(), _samples(Ring8(std=0.021), 100_000)) > 10
    assert _entropy_gap(Grid25(), _samples(Grid25(std=0.0525), 100_000)) > 10


@pytest.mark.parametrize("name", density_names())
def test_samples_lie_inside_bounds_with_requested_dtype(name):
    d = get_density(name)
    s = d.sample(50_000, generator=torch.Generator().manual_seed(2))
    assert s.shape == (50_000, 2) and s.dtype == torch.float32
    xmin, xmax, ymin, ymax = d.bounds
    assert (s[:, 0] > xmin).all() and (s[:, 0] < xmax).all()
    assert (s[:, 1] > ymin).all() and (s[:, 1] < ymax).all()
    again = d.sample(50_000, generator=torch.Generator().manual_seed(2))
    assert torch.equal(s, again)


def test_ring8_modes_and_std():
    d = get_density("ring8")
    k = torch.arange(8, dtype=torch.float64)
    expected = 2.0 * torch.stack([torch.cos(k * math.pi / 4), torch.sin(k * math.pi / 4)], 1)
    assert torch.allclose(d.modes, expected, atol=1e-12)
    assert d.mode_std == 0.02
    # the density at a mode is that of one component with weight 1/8
    peak = -math.log(2 * math.pi * 0.02**2) - math.log(8)
    assert torch.allclose(d.log_prob(d.modes), torch.full((8,), peak, dtype=torch.float64))


def test_grid25_modes_and_std():
    d = get_density("grid25")
    coords = {(float(x), float(y)) for x, y in d.modes}
    assert coords == {
        (x, y) for x in (-4.0, -2.0, 0.0, 2.0, 4.0) for y in (-4.0, -2.0, 0.0, 2.0, 4.0)
    }
    assert d.mode_std == 0.05


def test_8gaussians_convention():
    d = get_density("8gaussians")
    assert torch.allclose(
        d.modes.norm(dim=1), torch.full((8,), 2 * math.sqrt(2), dtype=torch.float64)
    )
    assert d.mode_std == pytest.approx(0.5 / math.sqrt(2))
    angles = torch.atan2(d.modes[:, 1], d.modes[:, 0]).remainder(2 * math.pi)
    assert torch.allclose(angles.sort().values, torch.arange(8, dtype=torch.float64) * math.pi / 4)


@pytest.mark.parametrize("cls", [Ring8, Grid25])
def test_mixture_samples_cover_every_mode_equally_with_the_stated_std(cls):
    d = cls()
    s = _samples(d, 100_000, seed=3)
    dist = torch.cdist(s, d.modes)  # (n, K)
    nearest = dist.argmin(dim=1)
    counts = torch.bincount(nearest, minlength=len(d.modes)).double()
    assert stats.chisquare(counts.numpy()).pvalue > 1e-3
    offsets = s - d.modes[nearest]
    assert float(offsets.std()) == pytest.approx(d.mode_std, rel=0.01)


def test_checkerboard_cells():
    d = Checkerboard()
    pts = torch.tensor(
        [[1.0, 1.0], [-1.0, 1.0], [-3.0, -3.0], [3.0, -1.0], [5.0, 0.0], [0.5, -4.5]]
    )
    lp = d.log_prob(pts)
    dark = -math.log(32.0)
    assert lp.tolist() == pytest.approx([dark, -math.inf, dark, dark, -math.inf, -math.inf])


@pytest.mark.parametrize("name", EXACT)
def test_log_prob_agrees_in_float32_and_float64_and_stays_finite_far_away(name):
    d = get_density(name)
    x = _samples(d, 1000, seed=4)
    lp64 = d.log_prob(x)
    lp32 = d.log_prob(x.float())
    assert lp32.dtype == torch.float32 and lp64.dtype == torch.float64
    assert torch.allclose(lp32.double(), lp64, rtol=1e-5, atol=1e-4)
    if name != "checkerboard":  # zero density off the board, by definition
        far = torch.tensor([[30.0, -40.0], [0.0, 0.0], [1e3, 1e3]])
        assert torch.isfinite(d.log_prob(far)).all()
        assert torch.allclose(d.log_prob(far).double(), d.log_prob(far.double()), rtol=1e-5)


@pytest.mark.parametrize("name", ["8gaussians", "rings", "ring8", "grid25"])
def test_log_prob_gradient(name):
    d = get_density(name)
    x = _samples(d, 6, seed=5).requires_grad_(True)
    assert torch.autograd.gradcheck(d.log_prob, (x,))
    origin = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(d.log_prob(origin).sum(), origin)
    assert torch.isfinite(g).all()


def test_moons_has_no_log_prob_and_known_moments():
    d = get_density("moons")
    assert isinstance(d, Density2D) and not d.exact_log_prob
    with pytest.raises(DataError, match="moons has no closed-form density"):
        d.log_prob(torch.zeros(3, 2))
    s = _samples(d, 200_000, seed=6)
    # before scaling: each moon with prob 1/2, t ~ U[0, pi], noise 0.1
    m_up, m_lo = torch.tensor([0.0, 2 / math.pi]), torch.tensor([1.0, 0.5 - 2 / math.pi])
    within = torch.diag(torch.tensor([0.5, 0.5 - 4 / math.pi**2]))  # same for both moons
    diff = (m_up - m_lo)[:, None]
    cov = within + 0.25 * diff @ diff.T + 0.01 * torch.eye(2)
    mean_exact = 2 * (m_up + m_lo) / 2 + torch.tensor([-1.0, -0.2])
    cov_exact = 4 * cov
    sem = (cov_exact.diagonal() / s.shape[0]).sqrt()
    assert ((s.mean(0).float() - mean_exact).abs() < 5 * sem).all()
    assert torch.allclose(torch.cov(s.T).float(), cov_exact, atol=0.02)


def test_get_density_unknown_name():
    with pytest.raises(DataError, match=r"unknown 2-D density 'rign8' \(did you mean 'ring8'\?\)"):
        get_density("rign8")


def test_sample_rejects_bad_n():
    with pytest.raises(DataError, match="non-negative integer"):
        get_density("ring8").sample(-1)


@pytest.mark.parametrize("name", density_names())
def test_2d_datasets_have_documented_splits_and_spec(name):
    data = load(name)
    assert data.name == name and data.density is not None and data.density.name == name
    assert data.spec.event_shape == (2,) and data.spec.kind == "continuous"
    assert [data.split(s)[0].shape[0] for s in ("train", "val", "test")] == [50_000, 5_000, 10_000]
    assert data.train.dtype == torch.float32 and data.train_labels is None
    assert not torch.equal(data.train[:5_000], data.val)
    if data.density.exact_log_prob:
        assert torch.isfinite(data.density.log_prob(data.test)).all()


def test_2d_datasets_are_reproducible_per_seed():
    a, b, c = load("8gaussians", seed=0), load("8gaussians", seed=0), load("8gaussians", seed=1)
    assert torch.equal(a.train, b.train) and torch.equal(a.test, b.test)
    assert not torch.equal(a.train, c.train) and not torch.equal(a.test, c.test)
