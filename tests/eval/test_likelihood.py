"""NLL and bits/dim on models whose density is known, and ``evaluate`` end to end on a model that
is the true density (every discrepancy metric must then be ~0)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from dgm.core.errors import DgmError
from dgm.core.model import Model
from dgm.core.spec import DataSpec
from dgm.data import Dataset, Dequantize, load
from dgm.eval.likelihood import bits_per_dim, log_likelihood, nll
from dgm.eval.run import METRICS, evaluate, format_table, not_applicable
from dgm.models import build


@dataclass
class GaussConfig:
    std: float = 1.5


class Gauss(Model):
    """N(mu, std^2 I) over the flattened event: a model with a closed-form log p."""

    name = "test-gauss"
    family = "test"
    description = "isotropic Gaussian (test only)"
    Config = GaussConfig
    exact_likelihood = True

    def __init__(self, spec: DataSpec, config: GaussConfig | None = None) -> None:
        super().__init__(spec, config)
        self.mu = nn.Parameter(torch.full((spec.num_dims,), 0.25, dtype=torch.float64))

    def log_prob(self, x, y=None):
        d = torch.distributions.Normal(self.mu, self.config.std)
        return d.log_prob(x.reshape(x.shape[0], -1)).sum(1)

    def sample(self, n, y=None):
        z = self.mu + self.config.std * torch.randn(n, self.num_dims, dtype=self.mu.dtype)
        return z.reshape(n, *self.event_shape)


class GaussWithBound(Gauss):
    """The same density offered only through a bound, log p - 1."""

    name = "test-gauss-bound"
    exact_likelihood = False
    likelihood_bound = "elbo"

    def log_prob(self, x, y=None):
        raise AssertionError("a bound model's log_prob must not be called")

    def elbo(self, x, y=None):
        return Gauss.log_prob(self, x) - 1.0


class Sampler(Gauss):
    """No likelihood at all (like a GAN)."""

    name = "test-sampler"
    exact_likelihood = False


class TrueDensity(Model):
    """A 'model' that is the analytic density itself."""

    name = "test-true"
    family = "test"
    description = "the data's own density (test only)"
    Config = GaussConfig
    exact_likelihood = True

    def __init__(self, spec: DataSpec, density) -> None:
        super().__init__(spec, GaussConfig())
        self.density = density
        self.register_buffer("dummy", torch.zeros((), dtype=torch.float64))

    def log_prob(self, x, y=None):
        return self.density.log_prob(x.double())

    def sample(self, n, y=None):
        return self.density.sample(n, dtype=torch.float64)


def exact_nll(x: torch.Tensor, mu: float, std: float) -> float:
    z = (x.double() - mu) / std
    d = x[0].numel()
    return float(
        (0.5 * z.pow(2).sum(1) + d * math.log(std) + 0.5 * d * math.log(2 * math.pi)).mean()
    )


def test_bits_per_dim():
    assert bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)
    torch.testing.assert_close(
        bits_per_dim(torch.tensor([3.0 * math.log(2)]), 3), torch.tensor([1.0])
    )


def test_nll_of_a_model_with_known_density():
    model = Gauss(DataSpec((3,)))
    x = torch.randn(1000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    m = nll(model, x, batch_size=128)
    assert m["likelihood"] == "log_prob: exact" and m["likelihood_kind"] == "exact"
    assert m["n"] == 1000
    assert m["nll"] == pytest.approx(exact_nll(x, 0.25, 1.5), rel=1e-12)
    assert m["bpd"] == pytest.approx(m["nll"] / (3 * math.log(2)), rel=1e-12)
    ll, _ = log_likelihood(model, x)
    assert m["nll_sem"] == pytest.approx(float(ll.std()) / math.sqrt(1000))


def test_a_bound_is_named_and_no_likelihood_is_an_error():
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    m = nll(GaussWithBound(DataSpec((2,))), x)
    assert m["likelihood"] == "elbo(): a lower bound on log p" and m["likelihood_kind"] == "bound"
    assert m["nll"] == pytest.approx(exact_nll(x, 0.25, 1.5) + 1.0, rel=1e-12)
    with pytest.raises(DgmError, match="no likelihood"):
        nll(Sampler(DataSpec((2,))), x)


def test_dequantization_adds_its_log_determinant_and_says_it_is_a_bound():
    levels, d = 4, 5
    pre = Dequantize(levels)
    model = Gauss(pre.spec(DataSpec((d,), "discrete", levels=levels)))
    x = torch.randint(0, levels, (200, d), generator=torch.Generator().manual_seed(2)).double()
    g = torch.Generator().manual_seed(3)
    m = nll(model, x, preprocessor=pre, generator=g)
    assert m["likelihood_kind"] == "bound"  # exact on the dequantized data, a bound on the discrete
    assert (
        m["likelihood"]
        == "log_prob: a lower bound on log p of the discrete data (dequantization bound)"
    )
    z, log_det = pre(x, generator=torch.Generator().manual_seed(3))
    assert float(log_det[0]) == pytest.approx(-d * math.log(levels))
    assert m["nll"] == pytest.approx(exact_nll(z, 0.25, 1.5) + d * math.log(levels), rel=1e-9)


# ------------------------------------------------------------------------------------- evaluate
@pytest.fixture(scope="module")
def ring8():
    return load("ring8")


def test_evaluate_the_true_density_gives_zero_discrepancies(ring8, one_thread):
    model = TrueDensity(ring8.spec, ring8.density)
    res = evaluate(model, ring8, max_test=2000, num_samples=1000, grid_size=500, classifier="knn")
    assert set(res["skipped"]) == {"conditional"}  # the one metric for conditional models
    assert set(res["seconds"]) >= set(METRICS) - {"conditional"}
    assert abs(res["kl"]) < 4 * res["kl_sem"] + 1e-9  # log p - log q is exactly 0
    # the model scores points in float32 (its dtype), the truth in float64
    assert abs(res["reverse_kl"]) < 1e-5 and res["tv"] < 1e-5
    assert res["grid_integral"] == pytest.approx(1.0, abs=1e-3)
    assert res["c2st_p_value"] > 0.01 and res["mmd_p_value"] > 0.01
    assert res["modes_captured"] == 8 and res["modes_high_quality"] > 0.97
    assert res["fid"] < 0.05 and res["precision"] > 0.9 and res["recall"] > 0.9
    assert res["anomaly_noise_auroc"] > 0.9  # ring8's modes are narrow: noise is obvious
    table = format_table(res)
    assert "modes captured" in table and "8/8" in table


def test_evaluate_is_deterministic_and_explains_what_does_not_apply(ring8, one_thread):
    model = Gauss(ring8.spec)
    kw = {"max_test": 500, "num_samples": 300, "metrics": ["c2st", "mmd", "modes"]}
    a, b = evaluate(model, ring8, **kw), evaluate(model, ring8, **kw)
    a.pop("seconds"), b.pop("seconds")
    assert a == b and a["modes_captured"] < 8  # one broad Gaussian is not eight narrow ones
    sampler = Sampler(ring8.spec)
    with pytest.raises(DgmError, match="needs a likelihood"):
        evaluate(sampler, ring8, metrics=["nll"])
    res = evaluate(sampler, ring8, max_test=300, metrics=None, grid_size=50)
    assert {"nll", "kl", "anomaly"} <= set(res["skipped"]) and res["likelihood"] is None
    digits_like = type("D", (), {"name": "digits", "density": None, "feature_data": None})()
    digits_like.spec = DataSpec((1, 8, 8), "discrete", levels=17)
    assert "separated modes" in not_applicable(model, digits_like, "modes")
    assert "known density" in not_applicable(model, digits_like, "kl")
    assert "class labels" in not_applicable(model, digits_like, "fid")
    with pytest.raises(DgmError, match="unknown metric"):
        not_applicable(model, ring8, "bleu")


def test_feature_metrics_apply_to_images_that_declare_labelled_data(ring8):
    spec = DataSpec((1, 4, 4), "discrete", levels=2)
    x = torch.zeros(4, 1, 4, 4)
    model = Gauss(ring8.spec)
    unlabelled = Dataset("blank", spec, x, x, x)
    declared = Dataset("blank", spec, x, x, x, feature_data=lambda: (x, torch.zeros(4), x, None))
    assert "class labels" in not_applicable(model, unlabelled, "fid")
    assert all(not_applicable(model, declared, m) is None for m in ("fid", "kid", "prd"))


class Counting(Gauss):
    """The Gaussian, recording the size of every batch it scores."""

    name = "test-gauss-counting"

    def __init__(self, spec: DataSpec, config: GaussConfig | None = None) -> None:
        super().__init__(spec, config)
        self.batches: list[int] = []

    def log_prob(self, x, y=None):
        self.batches.append(int(x.shape[0]))
        return super().log_prob(x)


@pytest.mark.parametrize(("shape", "batch"), [((1, 28, 28), 41), ((1, 8, 8), 512), ((2,), 1000)])
def test_scoring_streams_batches_sized_by_the_example(shape, batch):
    """The default batch holds 2^15 input values (dgm.core.spec.INFERENCE_VALUES; a forward
    pass over 1000 MNIST images page-faulted its feature maps in anew every batch), capped at
    1000 examples; the values do not depend on the batching."""
    spec = DataSpec(shape)
    assert spec.inference_batch() == batch
    assert DataSpec((40000,)).inference_batch() == 1  # never less than one example
    n = 2 * batch + 3
    model = Counting(spec)
    x = torch.randn(n, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ll, _ = log_likelihood(model, x)
    assert model.batches == [batch, batch, 3]
    model.batches.clear()
    whole, _ = log_likelihood(model, x, batch_size=n)
    assert model.batches == [n]
    torch.testing.assert_close(ll, whole, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("name", "spec"),
    [("made", DataSpec((64,), "discrete", levels=2)), ("maf", DataSpec((64,))),
     ("iaf", DataSpec((64,)))],
)  # fmt: skip
def test_mlp_autoregressive_models_score_in_batches_of_1000(name, spec, monkeypatch):
    """MADE, MAF and IAF hold hidden vectors, not maps, per example: they score 1000 at a time
    (MADE's scoring was 2x slower in MNIST-sized batches of 41), with the values of one pass;
    an image model keeps the spec's inference batch."""
    model = build(name, spec, hidden=[8]).double()
    assert model.inference_batch() == 1000 and spec.inference_batch() == 512
    assert build("pixelcnn", DataSpec((1, 28, 28), "discrete", levels=2)).inference_batch() == 41
    sizes: list[int] = []
    inner = model.log_likelihood

    def counting(x, y=None, **kw):
        sizes.append(int(x.shape[0]))
        return inner(x, y, **kw)

    monkeypatch.setattr(model, "log_likelihood", counting)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2, (1003, 64), generator=g).double()
    if spec.kind == "continuous":
        x = torch.randn(1003, 64, generator=g, dtype=torch.float64)
    ll, _ = log_likelihood(model, x)
    assert sizes == [1000, 3]
    whole, _ = log_likelihood(model, x, batch_size=1003)
    torch.testing.assert_close(ll, whole, rtol=1e-12, atol=1e-9)
