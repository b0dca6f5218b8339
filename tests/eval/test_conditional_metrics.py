"""Conditional accuracy, per-class FID and the guidance curve (dgm.eval.conditional): a model
that draws the class asked for scores the classifier's accuracy, one that ignores the label
scores chance, and guidance reaches the model as its sampling option."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from dgm.core.errors import DgmError
from dgm.core.model import Model, check_labels
from dgm.core.spec import DataSpec
from dgm.data import from_arrays
from dgm.eval.conditional import accuracy_with_stderr, conditional_metrics, guidance_curve
from dgm.eval.run import evaluate, format_table

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = DataSpec((1, 2, 2), "discrete", levels=256, num_classes=2)


def two_classes(n: int = 400):
    """Images of class 0 dark (0..60), of class 1 bright (195..255)."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    x = torch.randint(0, 61, (n, 1, 2, 2), generator=g) + 195 * y.view(-1, 1, 1, 1)
    return x.to(torch.uint8).numpy(), y.numpy()


class Brightness:
    """A stand-in for the dataset's feature classifier: class 1 when the mean is above 127."""

    def __call__(self, x):
        return x.reshape(len(x), -1).float() / 255

    def logits(self, x):
        m = x.reshape(len(x), -1).float().mean(1) / 255 - 0.5
        return torch.stack([-m, m], 1)


@dataclass
class GuidedOptions:
    """Attributes:
    guidance: how strongly to follow the label (the share of samples that do).
    """

    guidance: float = 1.0


class Stub(Model):
    """Draws class ``y`` with probability ``guidance`` (capped at 1), else the other class."""

    name = "stub"
    family = "test"
    SampleOptions = GuidedOptions
    data_kinds = frozenset({"discrete"})

    @dataclass
    class Config:
        conditional: bool = True

    def __init__(self, follow: bool = True):
        super().__init__(SPEC, self.Config())
        self.num_classes, self.follow = 2, follow
        self.w = torch.nn.Parameter(torch.zeros(()))

    def sample(self, n, y=None, guidance: float = 1.0):
        y = check_labels(self, y, n)
        if not self.follow:
            y = torch.randint(0, 2, (n,))
        flip = torch.rand(n) >= min(guidance, 1.0)
        c = torch.where(flip, 1 - y, y)
        return (torch.randint(0, 61, (n, 1, 2, 2)) + 195 * c.view(-1, 1, 1, 1)).float()


def test_accuracy_and_its_binomial_standard_error():
    a, se = accuracy_with_stderr(torch.tensor([1, 1, 0, 0]), torch.tensor([1, 1, 1, 0]))
    assert a == 0.75 and se == pytest.approx(math.sqrt(0.75 * 0.25 / 4))


def test_a_model_that_follows_the_label_scores_the_classifiers_accuracy():
    ds = from_arrays(*two_classes())
    res = conditional_metrics(Stub(), None, ds, Brightness(), num_samples=400, seed=0)
    assert res["cond_accuracy"] == 1.0 and res["cond_accuracy_stderr"] == 0.0
    assert res["cond_samples_per_class"] == 200 and res["cond_accuracy_per_class"] == [1.0, 1.0]
    assert all(f < 0.01 for f in res["cond_fid_per_class"])  # the same distribution per class


def test_a_model_that_ignores_the_label_scores_chance():
    ds = from_arrays(*two_classes())
    res = conditional_metrics(Stub(follow=False), None, ds, Brightness(), num_samples=2000)
    assert abs(res["cond_accuracy"] - 0.5) < 4 * res["cond_accuracy_stderr"]
    assert res["cond_accuracy_stderr"] == pytest.approx(math.sqrt(0.25 / 2000), rel=0.01)
    assert all(f > 0.1 for f in res["cond_fid_per_class"])  # half the samples of the other class


def test_the_guidance_curve_reads_each_weight():
    ds = from_arrays(*two_classes())
    curve = guidance_curve(Stub(), None, ds, Brightness(), [0.0, 0.5, 1.0], num_samples=2000)
    assert [p["guidance"] for p in curve] == [0.0, 0.5, 1.0]
    acc = [p["accuracy"] for p in curve]
    assert acc[0] == 0.0 and abs(acc[1] - 0.5) < 0.05 and acc[2] == 1.0
    assert curve[2]["fid"] < curve[1]["fid"]


def test_evaluate_reports_conditional_metrics_and_refuses_them_for_unconditional_models():
    ds = from_arrays(*two_classes())
    res = evaluate(
        Stub(), ds, metrics=["conditional"], features=Brightness(), num_samples=200,
        guidance=[0.5, 1.0],
    )  # fmt: skip
    assert res["cond_accuracy"] == 1.0 and len(res["guidance_curve"]) == 2
    table = format_table(res)
    assert "conditional accuracy" in table and "guidance w=0.5" in table
    stub = Stub()
    stub.config.conditional = False
    with pytest.raises(DgmError, match="unconditional"):
        evaluate(stub, ds, metrics=["conditional"], features=Brightness())


class Classifier(Stub):
    """A stub that also classifies (as the EBM does): by brightness, every fourth answer wrong."""

    def classify(self, x):
        c = (x.reshape(len(x), -1).mean(1) > 127).long()
        wrong = torch.arange(len(x)) % 4 == 0
        return torch.where(wrong, 1 - c, c)


def test_a_model_that_classifies_is_scored_on_the_test_split():
    ds = from_arrays(*two_classes(400))
    n_test = len(ds.split("test")[1])
    res = conditional_metrics(Classifier(), None, ds, Brightness(), num_samples=40)
    wrong = (torch.arange(n_test) % 4 == 0).double().mean()  # one batch (fewer than 500)
    assert res["cond_model_test_accuracy"] == pytest.approx(1 - float(wrong))
    a = res["cond_model_test_accuracy"]
    assert res["cond_model_test_accuracy_stderr"] == pytest.approx(math.sqrt(a * (1 - a) / n_test))
    assert "the model as a classifier" in format_table(
        evaluate(Classifier(), ds, metrics=["conditional"], features=Brightness(), num_samples=40)
    )
    assert "cond_model_test_accuracy" not in conditional_metrics(
        Stub(), None, ds, Brightness(), num_samples=40
    )
