"""FID, KID and precision/recall against closed forms, and the cached feature network."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from dgm.core.errors import DgmError
from dgm.eval.features import (
    FeatureExtractor,
    FeatureNet,
    classifier_features,
    data_checksum,
    dataset_features,
    default_cache_dir,
)
from dgm.eval.fid import fid, frechet_distance, gaussian_stats, kid, precision_recall


def random_spd(d: int, g: torch.Generator) -> torch.Tensor:
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def test_fid_of_a_set_against_itself_is_zero():
    f = torch.randn(2000, 16, generator=torch.Generator().manual_seed(0))
    assert fid(f, f) < 1e-8
    assert fid(f, f + 1.0) == pytest.approx(16.0, rel=1e-8)  # a pure shift: |mu1 - mu2|^2


def test_frechet_distance_closed_forms():
    g = torch.Generator().manual_seed(1)
    d = 6
    kw = {"generator": g, "dtype": torch.float64}
    mu1, mu2 = torch.randn(d, **kw), torch.randn(d, **kw)
    # diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2
    a, b = torch.rand(d, **kw) + 0.1, torch.rand(d, **kw) + 0.1
    exact = float((mu1 - mu2).pow(2).sum() + (a.sqrt() - b.sqrt()).pow(2).sum())
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(
        exact, rel=1e-10
    )
    # full covariances that do not commute: against scipy.linalg.sqrtm of the product
    s1, s2 = random_spd(d, g), random_spd(d, g)
    covmean = scipy.linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    ref = float((mu1 - mu2).pow(2).sum()) + float(np.trace(s1.numpy() + s2.numpy() - 2 * covmean))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-8)


def test_fid_of_gaussian_features_matches_the_closed_form():
    g = torch.Generator().manual_seed(2)
    d, n = 4, 200_000
    mu1, mu2 = torch.zeros(d, dtype=torch.float64), torch.full((d,), 0.5, dtype=torch.float64)
    s1, s2 = random_spd(d, g), random_spd(d, g)
    l1, l2 = torch.linalg.cholesky(s1), torch.linalg.cholesky(s2)
    x = mu1 + torch.randn(n, d, generator=g, dtype=torch.float64) @ l1.T
    y = mu2 + torch.randn(n, d, generator=g, dtype=torch.float64) @ l2.T
    m1, c1 = gaussian_stats(x)
    torch.testing.assert_close(c1, s1, atol=0.02, rtol=0)
    exact = frechet_distance(mu1, s1, mu2, s2)
    # the estimate's standard error at n = 2e5 is ~0.005 here
    assert fid(x, y) == pytest.approx(exact, abs=0.02)


def naive_kid(x, y):
    d = x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1.0) ** 3  # noqa: E731
    m = x.shape[0]
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return float(
        (kxx.sum() - kxx.trace() + kyy.sum() - kyy.trace()) / (m * (m - 1)) - 2 * kxy.mean()
    )


def test_kid_is_the_unbiased_polynomial_mmd():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(300, 8, generator=g, dtype=torch.float64)
    y = torch.randn(300, 8, generator=g, dtype=torch.float64) + 0.2
    mean, std = kid(x, y, num_subsets=1, subset_size=300)  # one subset = the whole sets
    assert mean == pytest.approx(naive_kid(x, y), rel=1e-10) and std == 0.0
    # unbiased: near zero between two samples of one distribution, clearly positive otherwise
    same, same_std = kid(x, torch.randn(300, 8, generator=g), num_subsets=50, subset_size=200)
    assert abs(same) < 3 * same_std
    shifted, shifted_std = kid(x, y + 0.5, num_subsets=50, subset_size=200)
    assert shifted > 5 * shifted_std


def test_precision_recall_on_known_configurations():
    g = torch.Generator().manual_seed(4)
    a = torch.randn(500, 2, generator=g)
    assert precision_recall(a, a) == {"precision": 1.0, "recall": 1.0, "k": 3}
    far = precision_recall(a, a + 100.0)
    assert far["precision"] == 0.0 and far["recall"] == 0.0
    # real: two clusters; fake: one of them (mode collapse) -> precise but half the recall
    real = torch.cat([torch.randn(500, 2, generator=g) - 5, torch.randn(500, 2, generator=g) + 5])
    fake = torch.randn(1000, 2, generator=g) + 5
    pr = precision_recall(real, fake)
    assert pr["precision"] > 0.95 and 0.45 < pr["recall"] < 0.55
    with pytest.raises(DgmError, match="k must be"):
        precision_recall(a[:3], a[:3], k=3)


def test_feature_callable_is_applied_before_the_scores():
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(400, 3, generator=g), torch.randn(400, 3, generator=g)
    first = lambda t: t[:, :1]  # noqa: E731
    assert fid(x, y, features=first) == pytest.approx(fid(x[:, :1], y[:, :1]))
    with pytest.raises(DgmError, match="NaN"):
        fid(x, y, features=lambda t: t * float("nan"))


# ------------------------------------------------------------------------------------- features
@pytest.fixture(scope="module")
def digits():
    from dgm.data import load

    return load("digits")


@pytest.fixture(scope="module")
def digit_features(digits, tmp_path_factory):
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny CNN: one thread is fastest
    try:
        yield dataset_features(digits, cache_dir=tmp_path_factory.mktemp("cache"))
    finally:
        torch.set_num_threads(old)


def test_feature_network_learns_the_labels_and_is_cached(digits, digit_features):
    f = digit_features
    assert f.info["cached"] is False and f.info["val_accuracy"] > 0.9
    assert f.accuracy(digits.test, digits.test_labels) > 0.9
    feats = f(digits.test)  # (447, 64)
    assert feats.shape == (447, 64) and torch.isfinite(feats).all()
    again = dataset_features(digits, cache_dir=f.info["path"].rsplit("/", 1)[0])
    assert again.info["cached"] is True and again.info["val_accuracy"] == f.info["val_accuracy"]
    assert torch.equal(again(digits.test), feats)
    # FID in this feature space: test vs validation images is small, test vs noise is large
    noise = torch.randint(0, 17, digits.test.shape, generator=torch.Generator().manual_seed(0))
    assert fid(digits.test, digits.val, features=f) < 0.1 * fid(
        digits.test, noise.float(), features=f
    )


def test_cache_key_depends_on_data_and_corrupt_files_are_rebuilt(tmp_path):
    g = torch.Generator().manual_seed(6)
    x = torch.randint(0, 2, (64, 1, 6, 6), generator=g).float()
    y = (x.mean((1, 2, 3)) > 0.5).long()
    assert data_checksum(x, y) == data_checksum(x.clone(), y.clone())
    assert data_checksum(x, y) != data_checksum(x, 1 - y)
    kw = {"num_classes": 2, "cache_dir": tmp_path, "epochs": 2}
    first = classifier_features(x, y, **kw)
    path = first.info["path"]
    with open(path, "wb") as fh:
        fh.write(b"not safetensors")
    rebuilt = classifier_features(x, y, **kw)
    assert rebuilt.info["cached"] is False and rebuilt.info["path"] == path
    assert torch.equal(rebuilt(x), first(x))  # training is deterministic
    other = classifier_features(x, 1 - y, **kw)
    assert other.info["path"] != path


def test_features_need_labels_and_a_known_cache_dir(monkeypatch, tmp_path):
    from dgm.core.spec import DataSpec
    from dgm.data import Dataset

    spec = DataSpec((1, 4, 4), "discrete", levels=2)
    x = torch.zeros(4, 1, 4, 4)
    ds = Dataset("blank", spec, x, x, x)
    with pytest.raises(DgmError, match="no class labels"):
        dataset_features(ds, cache_dir=tmp_path)
    monkeypatch.setenv("DGM_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "features"
    net = FeatureNet((3,), num_classes=2, feature_dim=5)  # vectors get an MLP
    assert net(torch.zeros(7, 3)).shape == (7, 2) and net.features(torch.zeros(7, 3)).shape == (
        7,
        5,
    )
    assert not math.isnan(float(net.scale))


def test_the_feature_extractor_streams_batches_sized_by_the_image():
    """Features are computed in the inference batch of the image (41 MNIST images; batches of 2000
    page-faulted their maps in anew and took 2.5x as long), with the values of one pass."""
    torch.manual_seed(0)
    net = FeatureNet((1, 28, 28), 10, feature_dim=8, width=4)
    sizes: list[int] = []
    net.body.register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))
    fe = FeatureExtractor(net, {})
    x = torch.rand(100, 1, 28, 28)
    f = fe(x)
    assert fe.batch_size == 41 and sizes == [41, 41, 18]
    torch.testing.assert_close(f, FeatureExtractor(net, {}, batch_size=100)(x))
