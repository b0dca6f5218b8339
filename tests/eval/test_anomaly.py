"""AUROC / AUPRC against hand-checked values and scikit-learn, and the built-in shifts."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import mannwhitneyu
from sklearn.metrics import average_precision_score, roc_auc_score

from dgm.core.errors import DgmError
from dgm.eval.anomaly import (
    auprc,
    auroc,
    builtin_shifts,
    fgsm,
    mann_whitney_u,
    pixel_flips,
    pixel_noise,
    resize_images,
)


def test_auroc_is_mann_whitney_u_on_a_hand_checked_case():
    pos = torch.tensor([0.9, 0.8, 0.8, 0.3])
    neg = torch.tensor([0.8, 0.2, 0.1])
    # pairs won by the positive (ties 1/2): 0.9 -> 3, 0.8 -> 2.5, 0.8 -> 2.5, 0.3 -> 2; U = 10
    u, p = mann_whitney_u(pos, neg)
    assert u == 10.0
    assert auroc(pos, neg) == pytest.approx(10 / 12)
    ref = mannwhitneyu(pos.numpy(), neg.numpy(), alternative="two-sided", method="asymptotic")
    assert u == ref.statistic and p == pytest.approx(ref.pvalue)


def test_auroc_and_auprc_agree_with_scikit_learn_with_ties():
    g = torch.Generator().manual_seed(0)
    pos = torch.randint(0, 20, (300,), generator=g).double() + 3  # many ties
    neg = torch.randint(0, 20, (200,), generator=g).double()
    labels = [1] * 300 + [0] * 200
    scores = torch.cat([pos, neg]).numpy()
    assert auroc(pos, neg) == pytest.approx(roc_auc_score(labels, scores))
    assert auprc(pos, neg) == pytest.approx(average_precision_score(labels, scores))
    assert auroc(neg, pos) == pytest.approx(1 - auroc(pos, neg))
    assert auroc(torch.ones(3), torch.ones(4)) == 0.5
    with pytest.raises(DgmError, match="NaN"):
        auroc(torch.tensor([float("nan")]), neg)


def test_pixel_noise_and_flips_stay_in_the_data_space():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 17, (50, 1, 8, 8), generator=g).float()
    z = pixel_noise(x, 0.1, levels=17, generator=g)
    assert z.min() >= 0 and z.max() <= 16 and torch.equal(z, z.round())
    assert 0.3 < (z != x).float().mean() < 0.9
    b = torch.randint(0, 2, (200, 1, 10, 10), generator=g).float()
    f = pixel_flips(b, 0.1, generator=g)
    assert set(f.unique().tolist()) <= {0.0, 1.0}
    assert abs((f != b).float().mean().item() - 0.1) < 0.01  # 20k pixels: std 0.002
    with pytest.raises(DgmError, match="binary"):
        pixel_flips(x, 0.1)


def test_fgsm_raises_the_classifier_loss_within_the_levels():
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 17, (64, 1, 4, 4), generator=g).float()
    w = torch.randn(16, 3, generator=g)
    logits = lambda t: t.reshape(t.shape[0], -1) @ w / 16  # noqa: E731
    y = logits(x).argmax(1)
    xa = fgsm(logits, x, y, 0.125, levels=17)  # 2 levels of 16
    assert torch.equal(xa, xa.round()) and xa.min() >= 0 and xa.max() <= 16
    assert (xa - x).abs().max() <= 2
    ce = torch.nn.functional.cross_entropy
    assert ce(logits(xa), y) > ce(logits(x), y) + 0.1


def test_resize_images_to_another_size_and_levels():
    x = torch.full((3, 1, 28, 28), 255.0)
    x[:, :, :14] = 0.0
    small = resize_images(x, (8, 8), 256, 17)
    assert small.shape == (3, 1, 8, 8) and small[0, 0, 0, 0] == 0 and small[0, 0, -1, 0] == 16
    big = resize_images(small, (28, 28), 17, 2)
    assert big.shape == (3, 1, 28, 28) and set(big.unique().tolist()) == {0.0, 1.0}


def test_builtin_shifts_suit_the_data(tmp_path):
    from dgm.data import load

    digits = load("digits")
    x, y = digits.test[:40], digits.test_labels[:40]
    w = torch.randn(64, 10, generator=torch.Generator().manual_seed(3))

    class Linear:
        def logits(self, t):
            return t.reshape(t.shape[0], -1) @ w

    # tmp_path holds no MNIST, so the "other" dataset of digits is left out
    shifts = builtin_shifts(digits, x, y, Linear(), data_dir=tmp_path)
    assert set(shifts) == {"noise", "fgsm"}
    for xs, ys in shifts.values():
        assert xs.shape == x.shape and torch.equal(ys, y) and xs.max() <= 16
    spec = digits.spec.__class__((1, 8, 8), "discrete", levels=2)
    binary = type(digits)("b", spec, x, x, x, ood_dataset="digits")
    shifts = builtin_shifts(binary, (x > 8).float())
    assert set(shifts) == {"flips", "other"}  # the digits themselves, binarized
    assert set(shifts["other"][0].unique().tolist()) <= {0.0, 1.0}
    assert set(builtin_shifts(type(digits)("b", spec, x, x, x), (x > 8).float())) == {"flips"}
    points = load("ring8")
    (noisy, labels), *_ = builtin_shifts(points, points.test[:50]).values()
    assert noisy.shape == (50, 2) and labels is None
