"""Completion (inpainting), the :class:`~dgm.core.protocols.Completer` ability: every model that
has it returns the observed entries unchanged; on tiny models whose conditionals are known by
enumeration the completions are draws of them (chi-square); RePaint on a Gaussian whose noise
prediction is exact moves towards the true conditional."""

from __future__ import annotations

import itertools
import math
import re

import pytest
import torch
from scipy.stats import chisquare

from conftest import perturb
from dgm.core.errors import DataError
from dgm.core.protocols import Completer
from dgm.core.spec import DataSpec
from dgm.models import build, entries
from dgm.models.diffusion.complete import repaint
from dgm.models.diffusion.schedules import DiscreteSchedule

# every registered model and each of its example variants (as the conformance suite), if it completes
CASES = {}
for _cls in entries():
    for _v in ({}, *_cls.example.variants):
        _name = _cls.name + (f"[{','.join(f'{k}={v}' for k, v in _v.items())}]" if _v else "")
        CASES[_name] = (_cls, {**_cls.example.config, **_v})
COMPLETERS = [
    n
    for n, (c, cfg) in CASES.items()
    if isinstance(build(c.name, c.example.spec, **cfg), Completer)
]


def test_the_expected_models_complete():
    assert {"made", "pixelcnn", "gated-pixelcnn", "transformer", "rnn", "ddpm"} <= set(COMPLETERS)
    assert "made[conditional=True]" in COMPLETERS


@pytest.mark.parametrize("name", COMPLETERS)
def test_observed_entries_are_returned_unchanged(name):
    cls, config = CASES[name]
    torch.manual_seed(0)
    model = perturb(build(cls.name, cls.example.spec, **config)).double().eval()
    spec = model.spec
    g = torch.Generator().manual_seed(1)
    n = 6
    if spec.kind == "discrete":
        x = torch.randint(0, spec.levels, (n, *spec.event_shape), generator=g).double()
    else:
        x = torch.randn(n, *spec.event_shape, generator=g, dtype=torch.float64)
    y = torch.arange(n) % spec.num_classes if model.conditional else None
    mask = torch.rand(n, *spec.event_shape, generator=g) < 0.5
    with model.inference():
        try:
            out = model.complete(x, mask, y)
        except DataError as e:  # a model that completes prefixes only says so, then does them
            assert "prefix" in str(e)
            d = x[0].numel()
            mask = (torch.arange(d) < torch.arange(n)[:, None] % d).view(n, *spec.event_shape)
            out = model.complete(x, mask, y)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out[mask], x[mask])
    if spec.kind == "discrete":
        assert ((out >= 0) & (out <= spec.levels - 1) & (out == out.round())).all()


def _enumerate(model, d: int = 3) -> dict[tuple[int, ...], float]:
    xs = torch.tensor(list(itertools.product([0, 1], repeat=d)), dtype=torch.float64)
    with model.inference():
        p = model.log_prob(xs).exp()
    assert abs(float(p.sum()) - 1) < 1e-9
    return {tuple(int(v) for v in x): float(q) for x, q in zip(xs, p)}


def _chi_square(model, observed: dict[int, int], n: int = 3000, **options) -> float:
    """p-value of completions of ``observed`` (dimension -> value) against the exact
    conditional ``p(x_missing | x_observed)`` of ``model`` on 3 binary dimensions."""
    joint = _enumerate(model)
    keep = {x: p for x, p in joint.items() if all(x[d] == v for d, v in observed.items())}
    total = sum(keep.values())
    x = torch.zeros(n, 3, dtype=torch.float64)
    mask = torch.zeros(n, 3, dtype=torch.bool)
    for d, v in observed.items():
        x[:, d], mask[:, d] = v, True
    with model.inference():
        out = model.complete(x, mask, **options)
    assert torch.equal(out[mask], x[mask])
    cells = sorted(keep)
    counts = [int((out == torch.tensor(c, dtype=torch.float64)).all(1).sum()) for c in cells]
    assert sum(counts) == n
    return chisquare(counts, [n * keep[c] / total for c in cells]).pvalue


def _tiny_made(**config) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build("made", DataSpec((3,), "discrete", levels=2), hidden=(8,), **config)
    return perturb(model, scale=1.5).double().eval()


def test_made_given_a_prefix_samples_the_exact_conditional():
    model = _tiny_made()
    torch.manual_seed(3)
    assert _chi_square(model, {0: 1}, particles=1) > 1e-3


def test_made_given_any_mask_samples_the_conditional_as_particles_grow():
    model = _tiny_made()
    torch.manual_seed(4)
    assert _chi_square(model, {1: 1}, particles=256) > 1e-3  # dimension 1 alone: not a prefix
    # one particle ignores the observed entry's likelihood: the draw is the chain's, far off
    torch.manual_seed(4)
    assert _chi_square(model, {1: 1}, particles=1) < 1e-6


def test_order_agnostic_made_completes_as_the_mixture():
    model = _tiny_made(masks=3, ordering="random", connectivity="random")
    torch.manual_seed(5)
    assert _chi_square(model, {2: 0}, particles=256) > 1e-3


def test_autoregressive_models_given_a_prefix_sample_the_exact_conditional():
    torch.manual_seed(0)
    model = build("rnn", DataSpec((3,), "discrete", levels=2), embed=4, width=8)
    model = perturb(model, scale=1.0).double().eval()
    torch.manual_seed(6)
    assert _chi_square(model, {0: 0}) > 1e-3
    with pytest.raises(DataError, match="observed prefix of its raster order"):
        model.complete(torch.zeros(2, 3), torch.tensor([[False, True, False]] * 2))


def test_repaint_on_a_gaussian_with_exact_noise_prediction_approaches_the_conditional():
    # data N(0, S), S = [[1, r], [r, 1]]; x_t ~ N(0, C_t), C_t = abar S + (1 - abar) I, and the
    # exact noise prediction is eps(z, t) = sqrt(1 - abar_t) C_t^{-1} z
    r = 0.9
    S = torch.tensor([[1.0, r], [r, 1.0]], dtype=torch.float64)
    sch = DiscreteSchedule.named("linear", 100, 1e-4, 0.1)

    def eps(z, t):
        abar = float(sch.alphas_cumprod[t])
        C = abar * S + (1 - abar) * torch.eye(2, dtype=torch.float64)
        return math.sqrt(1 - abar) * z @ torch.linalg.inv(C)

    n = 4000
    z0 = torch.zeros(n, 2, dtype=torch.float64)
    z0[:, 0] = 1.5  # observed x_1 = 1.5: x_2 | x_1 ~ N(1.35, 0.19)
    mask = torch.zeros(n, 2, dtype=torch.bool)
    mask[:, 0] = True
    g = torch.Generator().manual_seed(0)
    plain = repaint(eps, sch, z0, mask, resample=1, generator=g)
    resampled = repaint(eps, sch, z0, mask, resample=10, generator=g)
    assert torch.equal(resampled[:, 0], z0[:, 0]) and torch.equal(plain[:, 0], z0[:, 0])
    err_plain = abs(float(plain[:, 1].mean()) - r * 1.5)
    err_resampled = abs(float(resampled[:, 1].mean()) - r * 1.5)
    assert err_resampled < 0.1 and err_resampled < err_plain
    assert abs(float(resampled[:, 1].var()) - (1 - r * r)) < 0.1


@pytest.mark.parametrize("name", COMPLETERS)
@pytest.mark.parametrize(
    "bad,words",
    [("shape", "the mask has shape (3, 2)"), ("values", "0 (missing) and 1 (observed)")],
)
def test_a_bad_mask_is_one_sentence_for_every_completer(name, bad, words):
    cls, config = CASES[name]
    model = build(cls.name, cls.example.spec, **config).eval()
    spec = model.spec
    x = torch.zeros(3, *spec.event_shape)
    y = torch.zeros(3, dtype=torch.long) if model.conditional else None
    mask = torch.ones(3, 2) if bad == "shape" else torch.full((3, *spec.event_shape), 0.5)
    with pytest.raises(DataError, match=re.escape(words)), model.inference():
        model.complete(x, mask, y)


@pytest.mark.parametrize("name", ["made", "masked-diffusion", "ddpm"])
def test_one_examples_mask_is_used_for_every_row(name):
    cls, config = CASES[name]
    torch.manual_seed(0)
    model = build(cls.name, cls.example.spec, **config).double().eval()
    spec = model.spec
    x = torch.randint(0, max(spec.levels or 2, 2), (4, *spec.event_shape)).double()
    if spec.kind != "discrete":
        x = torch.randn(4, *spec.event_shape, dtype=torch.float64)
    one = torch.zeros(spec.event_shape, dtype=torch.bool).flatten()
    one[: one.numel() // 2] = True
    with model.inference():
        out = model.complete(x, one.view(spec.event_shape))
    flat_in, flat_out = x.reshape(4, -1), out.reshape(4, -1)
    assert torch.equal(flat_out[:, one], flat_in[:, one])
