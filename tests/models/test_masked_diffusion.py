"""Masked (absorbing-state) diffusion: the forward process, the bound against an enumerable model,
the T = D sampler against the exact joint (chi-square), completion (float64 for the maths)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy import stats
from torch import nn

from dgm.core.errors import ConfigError, DataError
from dgm.core.spec import DataSpec
from dgm.eval.likelihood import nll
from dgm.models import build
from dgm.models.masked_diffusion import MaskedDiffusion, MaskSchedule
from dgm.models.masked_diffusion.model import (
    NETWORK_DEFAULTS,
    MaskedDiffusionConfig,
    random_regions,
)

D, L = 3, 2  # the enumerable model: 3 binary pixels


class TableNet(nn.Module):
    """Logits ``(B, D, L)`` looked up from the whole token vector (any conditionals at all)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table)  # ((L + 1)^D, D, L)

    def forward(self, z, t, y=None):
        idx = (z * (L + 1) ** torch.arange(D)).sum(1)  # (B,)
        return self.table[idx]


def table_model(table: torch.Tensor, **config) -> MaskedDiffusion:
    model = build("masked-diffusion", DataSpec((D,), "discrete", levels=L), network="transformer",
                  width=8, depth=1, heads=1, **config).double()  # fmt: skip
    model.net = TableNet(table.double())
    return model.eval()


def conditional(model, x: tuple[int, ...], visible: frozenset[int], i: int) -> float:
    """p(x_i | x_visible) of the model: the others masked."""
    z = torch.tensor([[x[j] if j in visible else L for j in range(D)]])
    with torch.no_grad():
        probs = torch.softmax(model.logits(z, torch.ones(1)), -1)
    return float(probs[0, i, x[i]])


def order_log_probs(model, x) -> list[float]:
    """log p_sigma(x) for every order sigma: the chain rule of the model's conditionals."""
    out = []
    for sigma in itertools.permutations(range(D)):
        lp = sum(math.log(conditional(model, x, frozenset(sigma[:d]), sigma[d])) for d in range(D))
        out.append(lp)
    return out


def random_table(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 1.5 * torch.randn((L + 1) ** D, D, L, generator=g, dtype=torch.float64)


def joint_table(p: torch.Tensor) -> torch.Tensor:
    """Logits whose conditionals are those of the joint ``p`` over ``{0,1}^D``: log p(x_i | x_S)."""
    table = torch.zeros((L + 1) ** D, D, L, dtype=torch.float64)
    configs = list(itertools.product(range(L), repeat=D))
    for z in itertools.product(range(L + 1), repeat=D):
        idx = sum(v * (L + 1) ** j for j, v in enumerate(z))
        vis = [j for j in range(D) if z[j] < L]
        for i in range(D):
            mass = torch.zeros(L, dtype=torch.float64)
            for c, x in enumerate(configs):
                if all(x[j] == z[j] for j in vis):
                    mass[x[i]] += p[c]
            table[idx, i] = mass.log()
    return table


CONFIGS = list(itertools.product(range(L), repeat=D))


# ------------------------------------------------------------------ the forward process
@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_masking_probability_is_one_minus_alpha(kind):
    s = MaskSchedule(kind)
    torch.manual_seed(0)
    x = torch.zeros(200_000, 4)
    for tv in (0.1, 0.4, 0.75):
        t = torch.full((x.shape[0],), tv, dtype=torch.float64)
        frac = s.mask(x, t).double().mean()
        expected = 1 - float(s.alpha(torch.tensor(tv, dtype=torch.float64)))
        assert abs(float(frac) - expected) < 4 * math.sqrt(expected * (1 - expected) / x.numel())
    n = x.shape[0]
    assert not s.mask(x, torch.zeros(n, dtype=torch.float64)).any()  # t = 0: nothing masked
    assert s.mask(x, torch.ones(n, dtype=torch.float64)).all()  # t = 1: everything


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_weight_is_minus_alpha_prime_over_one_minus_alpha_and_time_of_inverts(kind):
    s = MaskSchedule(kind)
    t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64, requires_grad=True)
    (da,) = torch.autograd.grad(s.alpha(t).sum(), t)
    t = t.detach()
    torch.testing.assert_close(s.weight(t), -da / (1 - s.alpha(t)))
    torch.testing.assert_close(s.time_of(1 - s.alpha(t)), t)


def test_masked_counts_one_pixel_per_step_at_t_equals_d_and_never_increase():
    total = torch.tensor([5, 3])
    c = MaskSchedule("linear").masked_counts(total, 5)
    assert c[:, 0].tolist() == [5, 4, 3, 2, 1, 0]
    c = MaskSchedule("cosine").masked_counts(torch.tensor([64]), 10)[:, 0]
    assert c[0] == 64 and c[-1] == 0 and bool((c[1:] <= c[:-1]).all())


def test_unknown_schedule_is_one_clear_error():
    with pytest.raises(ConfigError, match="linear, cosine"):
        MaskSchedule("sqrt")


# ------------------------------------------------------------------ the bound
def closed_form(model, x):
    """(-log p(x) exactly, the negative ELBO E_sigma[-log p_sigma(x)] exactly)."""
    lps = torch.tensor(order_log_probs(model, x), dtype=torch.float64)
    exact = float(torch.logsumexp(lps, 0) - math.log(len(lps)))
    return -exact, float(-lps.mean())


def test_negative_elbo_is_at_least_the_exact_nll_and_the_exact_model_sums_to_one():
    model = table_model(random_table(0))
    total = 0.0
    for x in CONFIGS:
        exact_nll, nelbo = closed_form(model, x)
        assert nelbo >= exact_nll - 1e-12
        total += math.exp(-exact_nll)
    assert total == pytest.approx(1.0, abs=1e-12)  # log p of the order mixture is normalised
    # the gap is real for conditionals that do not come from one joint
    gaps = [closed_form(model, x)[1] - closed_form(model, x)[0] for x in CONFIGS]
    assert max(gaps) > 0.01


@pytest.mark.parametrize(("estimator", "schedule"), [("time", "linear"), ("time", "cosine"),
                                                     ("count", "linear")])  # fmt: skip
def test_monte_carlo_bound_converges_to_its_closed_form(estimator, schedule):
    model = table_model(random_table(1), bound_estimator=estimator, schedule=schedule)
    torch.manual_seed(0)
    reps = 40
    x = torch.tensor(CONFIGS * reps, dtype=torch.float64)  # (8 * reps, 3)
    with model.inference():
        elbo, se = model.elbo_stats(x, k=100)  # 4000 draws per configuration
    elbo = elbo.view(reps, len(CONFIGS)).mean(0)
    se = se.view(reps, len(CONFIGS)).pow(2).sum(0).sqrt() / reps
    for i, cfg in enumerate(CONFIGS):
        _, nelbo = closed_form(model, cfg)
        assert 0 < float(se[i]) < (0.1 if estimator == "count" else 0.3)
        assert abs(-float(elbo[i]) - nelbo) < 5 * float(se[i]), (cfg, -float(elbo[i]), nelbo)


def test_training_loss_is_an_unbiased_estimate_of_the_batch_bound():
    model = table_model(random_table(2), estimator="time")
    torch.manual_seed(0)
    x = torch.tensor(CONFIGS * 250, dtype=torch.float64)  # (2000, 3)
    target = sum(closed_form(model, c)[1] for c in CONFIGS) / len(CONFIGS)
    losses = torch.tensor([float(model.loss(x)["loss"].detach()) for _ in range(40)])
    assert abs(float(losses.mean()) - target) < 5 * float(losses.std()) / math.sqrt(40) + 1e-3


def region_closed_form(model, x, region: list[int]) -> float:
    """E over orders of ``region`` of -sum log p(x_i | the rest, the region's earlier pixels)."""
    rest = frozenset(j for j in range(D) if j not in region)
    terms = []
    for sigma in itertools.permutations(region):
        terms.append(-sum(math.log(conditional(model, x, rest | frozenset(sigma[:d]), sigma[d]))
                          for d in range(len(sigma))))  # fmt: skip
    return sum(terms) / len(terms)


def test_region_bound_converges_to_the_order_average_of_completing_the_region():
    model = table_model(random_table(3))
    region = [1, 2]  # pixel 0 observed
    torch.manual_seed(0)
    reps = 4000
    x = torch.tensor(CONFIGS * reps, dtype=torch.float64).long()  # (8 * reps, 3)
    mask = torch.zeros(x.shape, dtype=torch.bool)
    mask[:, region] = True
    with model.inference():
        draws = torch.rand(x.shape[0], dtype=torch.float64).clamp(min=1e-12)
        terms = model.nelbo_draws(x, None, draws, "count", mask).view(reps, len(CONFIGS))
    masked, _, weight = model.mask_draws(x, draws, "count", mask)
    assert not (masked & ~mask).any() and (masked.sum(1) >= 1).all()
    torch.testing.assert_close(weight, 2.0 / masked.sum(1).double())
    for i, cfg in enumerate(CONFIGS):
        mean, se = float(terms[:, i].mean()), float(terms[:, i].std()) / math.sqrt(reps)
        assert abs(mean - region_closed_form(model, cfg, region)) < 5 * se + 1e-9, cfg
    # for conditionals of one joint the region bound is exactly -log p(x_region | x_rest)
    p = torch.softmax(torch.randn(len(CONFIGS), generator=torch.Generator().manual_seed(4),
                                  dtype=torch.float64), 0)  # fmt: skip
    exact = table_model(joint_table(p))
    for c, cfg in enumerate(CONFIGS):
        marginal = sum(float(p[k]) for k, o in enumerate(CONFIGS) if o[0] == cfg[0])
        want = -math.log(float(p[c]) / marginal)
        assert region_closed_form(exact, cfg, region) == pytest.approx(want, abs=1e-10)


def test_random_regions_are_non_empty_rectangles_over_all_channels_or_spans():
    torch.manual_seed(0)
    r = random_regions((2, 6, 5), 500).view(500, 2, 6, 5)
    assert torch.equal(r[:, 0], r[:, 1]) and r.flatten(1).any(1).all()
    rows, cols = r[:, 0].any(2), r[:, 0].any(1)  # (n, H), (n, W)
    assert torch.equal(r[:, 0], rows[:, :, None] & cols[:, None, :])  # each a filled rectangle
    assert not r[:, 0].all(2).all(1).all()  # not every region the whole image
    for side in (rows[:, 0], rows[:, -1], cols[:, 0], cols[:, -1]):  # every border is reached
        assert 0.2 < float(side.double().mean()) < 0.8
    flat = random_regions((7,), 300)
    start = flat.double().argmax(1)
    n = flat.sum(1)
    pos = torch.arange(7)
    assert (n >= 1).all() and torch.equal(
        flat, (pos >= start[:, None]) & (pos < (start + n)[:, None])
    )


def test_region_masks_train_on_both_bounds_and_are_checked():
    model = build("masked-diffusion", DataSpec((1, 6, 6), "discrete", levels=3), width=8,
                  depth=1, region_masks=0.25)  # fmt: skip
    x = torch.randint(0, 3, (16, 1, 6, 6)).double()
    out = model.loss(x)
    assert set(out) == {"loss", "nelbo", "region_nll"} and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert set(build("masked-diffusion", DataSpec((1, 6, 6), "discrete", levels=3), width=8,
                     depth=1, region_masks=1.0).loss(x)) == {"loss", "region_nll"}  # fmt: skip
    for bad in (-0.1, 1.5):
        with pytest.raises(ConfigError, match="region_masks"):
            MaskedDiffusionConfig(region_masks=bad)


def test_likelihood_is_named_a_bound_estimate_with_its_draws_and_bits_per_dim_is_shared():
    model = table_model(random_table(3))
    info = model.likelihood_info(k=32)
    assert info.kind == "bound_estimate" and info.method == "elbo(k=32)" and "32" in info.detail
    # the reported bound takes the count form (bounded terms), whatever form trains the model
    assert model.config.estimator == "time" and "masked count draws" in info.detail
    x = torch.tensor(CONFIGS, dtype=torch.float64)
    torch.manual_seed(0)
    out = nll(model, x, bound_options={"k": 8})
    assert out["likelihood_kind"] == "bound_estimate"
    assert out["bpd"] == pytest.approx(out["nll"] / (D * math.log(2)))
    with pytest.raises(DataError, match="integers 0..1"):
        model.elbo(torch.full((2, D), 2.0))


# ------------------------------------------------------------------ sampling and completion
def chi2_pvalue(samples: torch.Tensor, p: torch.Tensor) -> float:
    idx = (samples.long() * (2 ** torch.arange(D - 1, -1, -1))).sum(1)  # CONFIGS order
    counts = torch.bincount(idx, minlength=len(CONFIGS)).double()
    assert counts[p == 0].sum() == 0  # nothing where the joint has no mass
    keep = p > 0
    return float(stats.chisquare(counts[keep].numpy(), (p[keep] * len(samples)).numpy()).pvalue)


def test_t_equals_d_sampling_draws_the_model_joint():
    """One pixel per step in a random order: exactly the mixture over orders, whatever the
    conditionals; with the conditionals of a joint, that joint."""
    model = table_model(random_table(4))
    exact = torch.tensor([math.exp(-closed_form(model, c)[0]) for c in CONFIGS])
    torch.manual_seed(0)
    with model.inference():
        s = model.sample(20_000, steps=D)
    assert chi2_pvalue(s, exact) > 1e-3
    p = torch.tensor([0.30, 0.02, 0.05, 0.13, 0.10, 0.05, 0.05, 0.30], dtype=torch.float64)
    model = table_model(joint_table(p))
    for order in ("random", "confidence"):
        torch.manual_seed(1)
        with model.inference():
            s = model.sample(20_000, steps=D, order=order)
        if order == "random":
            assert chi2_pvalue(s, p) > 1e-3
    # one step draws every pixel from its marginal: the product of marginals, not the joint
    torch.manual_seed(2)
    with model.inference():
        s = model.sample(20_000, steps=1)
    assert chi2_pvalue(s, p) < 1e-6


def test_raster_order_one_pixel_per_step_draws_the_chain_rule_in_raster_order():
    """With conditionals of no one joint, order matters: ``order="raster"`` draws
    prod_i p(x_i | x_<i, the rest masked), not the mixture over orders."""
    model = table_model(random_table(4))
    raster = torch.tensor([
        math.prod(conditional(model, c, frozenset(range(i)), i) for i in range(D))
        for c in CONFIGS
    ], dtype=torch.float64)  # fmt: skip
    mixture = torch.tensor([math.exp(-closed_form(model, c)[0]) for c in CONFIGS])
    assert (raster - mixture).abs().max() > 0.02  # the test can tell the two apart
    torch.manual_seed(5)
    with model.inference():
        s = model.sample(20_000, steps=D, order="raster")
    assert chi2_pvalue(s, raster / raster.sum()) > 1e-3
    assert chi2_pvalue(s, mixture) < 1e-6


def test_completion_draws_the_conditional_and_keeps_the_observed_pixels():
    p = torch.tensor([0.30, 0.02, 0.05, 0.13, 0.10, 0.05, 0.05, 0.30], dtype=torch.float64)
    model = table_model(joint_table(p))
    n = 20_000
    x = torch.tensor([[1.0, 0.0, 0.0]]).expand(n, D)
    observed = torch.tensor([True, False, False])
    torch.manual_seed(3)
    with model.inference():
        out = model.complete(x, observed)
    assert bool((out[:, 0] == 1).all())
    cond = p * torch.tensor([c[0] == 1 for c in CONFIGS], dtype=torch.float64)
    assert chi2_pvalue(out, cond / cond.sum()) > 1e-3


def test_completion_of_images_returns_observed_pixels_unchanged():
    torch.manual_seed(0)
    spec = DataSpec((1, 6, 6), "discrete", levels=5)
    model = build("masked-diffusion", spec, width=8, depth=1).eval()
    x = torch.randint(0, 5, (4, 1, 6, 6)).float()
    observed = torch.rand(4, 1, 6, 6) < 0.5
    with model.inference():
        for steps, order in ((0, "random"), (3, "confidence"), (1, "random"), (0, "raster")):
            out = model.complete(x, observed, steps=steps, order=order)
            assert out.shape == x.shape
            assert torch.equal(out[observed], x[observed])
            assert bool(((out >= 0) & (out <= 4) & (out == out.round())).all())
        lower = torch.zeros(1, 6, 6, dtype=torch.bool)
        lower[:, :3] = True  # one event's mask broadcast over the batch
        assert torch.equal(model.complete(x, lower)[:, :, :3], x[:, :, :3])
        with pytest.raises(DataError, match="the mask has shape"):
            model.complete(x, torch.ones(2, 2, dtype=torch.bool))
        with pytest.raises(ConfigError, match="steps must lie in 1..36"):
            model.sample(2, steps=37)


def test_the_default_network_size_follows_the_network_chosen():
    mnist = MaskedDiffusion(DataSpec((1, 28, 28), "discrete", levels=2), MaskedDiffusionConfig())
    digits = MaskedDiffusion(DataSpec((1, 8, 8), "discrete", levels=17), MaskedDiffusionConfig())
    assert mnist.network == "unet" and mnist.net_size == {"width": 16, "depth": 1,
                                                           "mults": (1, 2, 2)}  # fmt: skip
    assert digits.network == "resnet" and digits.net_size["width"] == 64
    assert digits.net_size["depth"] == NETWORK_DEFAULTS["resnet"]["depth"] == 6
    # the binarized-MNIST benchmark's U-Net: 16 channels at the first level
    assert sum(p.numel() for p in mnist.parameters()) < 400_000
    given = MaskedDiffusion(
        DataSpec((1, 28, 28), "discrete", levels=2), MaskedDiffusionConfig(width=8, mults=(1, 2))
    )
    assert given.net_size == {"width": 8, "depth": 1, "mults": (1, 2)}
