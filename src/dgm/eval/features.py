"""Features for FID, KID, precision/recall and C2ST, without downloading anything.

The usual feature network, Inception-v3, needs weights from the internet; **Inception FID is not
possible offline**. dgm instead trains a small classifier on the dataset's own labels (``digits``,
``mnist``), or on the labelled data a dataset declares when its own training split has none
(:attr:`dgm.data.Dataset.feature_data`; ``binarized-mnist``: the MNIST training images binarized
with a fixed seed), and uses its penultimate layer as features. The trained weights are cached
as safetensors under a cache directory, keyed by a SHA-256 checksum of the training data and
labels, the hyperparameters and :data:`CODE_VERSION`, so every evaluation of the same data uses
the same network. Scores on these features compare models on the same data with each other; they
are **not comparable with published FID / KID figures**.

Any callable ``(N, ...) -> (N, F)`` can be used instead: every metric takes ``features=``.

>>> import tempfile
>>> from dgm.data import load
>>> d = load("digits")
>>> f = dataset_features(d, cache_dir=tempfile.mkdtemp())  # trains once, then loads from the cache
>>> f(d.test[:5]).shape
torch.Size([5, 64])
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn

from dgm.core.errors import DataError, DgmError
from dgm.core.io import save_tensors
from dgm.core.spec import inference_batch
from dgm.data.dataset import Dataset, LabelledSplits
from dgm.data.storage import data_dirs

__all__ = [
    "CACHE_ENV_VAR",
    "CODE_VERSION",
    "FeatureExtractor",
    "FeatureNet",
    "classifier_features",
    "data_checksum",
    "dataset_features",
    "default_cache_dir",
    "train_feature_net",
]

#: bump when FeatureNet or its training changes, so that stale cached weights are not reused
CODE_VERSION = "1"
#: environment variable naming the cache directory
CACHE_ENV_VAR = "DGM_CACHE"


class FeatureNet(nn.Module):
    """A small classifier of raw inputs: a 3-layer CNN for images ``(C, H, W)``, else a 2-layer MLP.

    ``features(x)`` is the penultimate layer before its ReLU, ``(N, feature_dim)``: pre-activation
    values are closer to Gaussian and have a full-rank covariance, which FID assumes. Inputs are
    standardised by the training data's mean and std, and features by their per-dimension mean and
    std over the training data (buffers saved with the weights), so that FID and KID are on a
    fixed, unit scale (the head sees the features before this last, affine, step).
    """

    def __init__(
        self,
        event_shape: Sequence[int],
        num_classes: int,
        feature_dim: int = 64,
        width: int = 32,
    ) -> None:
        super().__init__()
        self.event_shape = tuple(int(s) for s in event_shape)
        self.register_buffer("shift", torch.zeros(()))
        self.register_buffer("scale", torch.ones(()))
        if len(self.event_shape) == 3:
            c = self.event_shape[0]
            self.body = nn.Sequential(
                nn.Conv2d(c, width, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(2),
                nn.Flatten(),
                nn.Linear(8 * width, feature_dim),
            )
        else:
            d = int(torch.tensor(self.event_shape).prod())
            self.body = nn.Sequential(
                nn.Flatten(), nn.Linear(d, 4 * width), nn.ReLU(), nn.Linear(4 * width, feature_dim)
            )
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(feature_dim, num_classes))
        self.register_buffer("feature_mean", torch.zeros(feature_dim))
        self.register_buffer("feature_std", torch.ones(feature_dim))

    def hidden(self, x: Tensor) -> Tensor:
        return self.body((x - self.shift) / self.scale)  # (N, F) before standardisation

    def features(self, x: Tensor) -> Tensor:
        return (self.hidden(x) - self.feature_mean) / self.feature_std  # (N, F)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.hidden(x))  # (N, classes)


class FeatureExtractor:
    """A trained :class:`FeatureNet` as a callable ``raw (N, ...) -> features (N, F)``, batched and
    without gradients; ``logits`` is differentiable (for :func:`dgm.eval.anomaly.fgsm`)."""

    def __init__(
        self, net: FeatureNet, info: dict[str, Any], batch_size: int | None = None
    ) -> None:
        self.net = net.eval()
        self.info = info
        # default: the inference batch (41 MNIST images): the features of the 10,000 binarized
        # MNIST test images took 1.85 s in batches of 2000 (1.5 million page faults) and 0.69 s
        # in batches of 41, 2 threads (benchmarks/results/scoring_sampling.json)
        self.batch_size = batch_size or inference_batch(math.prod(net.event_shape))

    @property
    def dim(self) -> int:
        return self.net.head[-1].in_features

    def _check(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.net.event_shape:
            raise DataError(
                f"the feature network takes (N, {', '.join(map(str, self.net.event_shape))}) "
                f"inputs, not {tuple(x.shape)}"
            )
        return x.to(torch.float32)

    def __call__(self, x: Tensor) -> Tensor:
        x = self._check(x)
        with torch.no_grad():
            parts = [
                self.net.features(x[s : s + self.batch_size])
                for s in range(0, len(x), self.batch_size)
            ]
        return torch.cat(parts) if parts else torch.zeros(0, self.dim)

    def logits(self, x: Tensor) -> Tensor:
        return self.net(self._check(x))

    def accuracy(self, x: Tensor, y: Tensor) -> float:
        with torch.no_grad():
            pred = torch.cat(
                [
                    self.logits(x[s : s + self.batch_size]).argmax(1)
                    for s in range(0, len(x), self.batch_size)
                ]
            )
        return float((pred == y).double().mean())


def data_checksum(*tensors: Tensor, extra: str = "") -> str:
    """SHA-256 of the tensors' shapes, dtypes and bytes (in order) and of ``extra``."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().to("cpu").contiguous()
        h.update(f"{tuple(t.shape)}{t.dtype};".encode())
        h.update(t.numpy().tobytes())
    h.update(extra.encode())
    return h.hexdigest()


def default_cache_dir(data_dir: str | Path | None = None) -> Path:
    """Where cached feature networks live: ``$DGM_CACHE/features`` when set, else
    ``cache/features`` inside the first existing, writable data directory (see
    :mod:`dgm.data.storage`), else ``~/.cache/dgm/features``."""
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env).expanduser() / "features"
    for d in data_dirs(data_dir)[0]:
        if d.is_dir() and os.access(d, os.W_OK):
            return d / "cache" / "features"
    return Path.home() / ".cache" / "dgm" / "features"


def train_feature_net(
    x: Tensor,
    y: Tensor,
    *,
    num_classes: int,
    feature_dim: int = 64,
    width: int = 32,
    epochs: int | None = None,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
) -> FeatureNet:
    """Train a :class:`FeatureNet` on raw inputs ``x (N, ...)`` and labels ``y (N,)`` with Adam and
    cross-entropy; deterministic for a given ``seed``. By default ``epochs = clamp(30000 / N, 2,
    30)``: 30 epochs for the 1000 digits, 2 for the 50k MNIST images."""
    if x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise DataError(f"need one label per example and at least 2 examples, got {x.shape[0]}")
    n = x.shape[0]
    epochs = epochs if epochs is not None else int(min(30, max(2, 30_000 // n)))
    x = x.to(torch.float32)
    y = y.to(torch.int64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = FeatureNet(x.shape[1:], num_classes, feature_dim, width)
        net.shift.fill_(float(x.mean()))
        net.scale.fill_(float(x.std()) or 1.0)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * -(-n // batch_size))
        g = torch.Generator().manual_seed(seed)
        net.train()
        for _ in range(epochs):
            for idx in torch.randperm(n, generator=g).split(batch_size):
                loss = F.cross_entropy(net(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        net.eval()
        with torch.no_grad():
            h = torch.cat([net.hidden(c) for c in x[:10_000].split(2000)])  # (n, F)
            net.feature_mean.copy_(h.mean(0))
            net.feature_std.copy_(h.std(0).clamp_min(1e-6))
    return net


def classifier_features(
    x: Tensor,
    y: Tensor,
    *,
    num_classes: int,
    val: tuple[Tensor, Tensor] | None = None,
    cache_dir: str | Path | None = None,
    name: str = "features",
    seed: int = 0,
    **hyperparameters: Any,
) -> FeatureExtractor:
    """The feature extractor of a :class:`FeatureNet` trained on ``(x, y)``, from the cache when
    the same data, hyperparameters and :data:`CODE_VERSION` were seen before.

    The cache file ``{cache_dir}/{name}-{key[:16]}.safetensors`` holds the weights (safetensors,
    never pickle) and, as metadata, the full key, the hyperparameters and the train / validation
    accuracy. A cache file that cannot be read is rebuilt (it holds derived data only).
    ``info`` of the result records ``key``, ``path``, ``val_accuracy`` and ``cached``.
    """
    hp = {
        "num_classes": num_classes,
        "feature_dim": 64,
        "width": 32,
        "seed": seed,
    } | hyperparameters
    key = data_checksum(x, y, extra=json.dumps({"code": CODE_VERSION} | hp, sort_keys=True))
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache / f"{name}-{key[:16]}.safetensors"
    arch = {k: hp[k] for k in ("feature_dim", "width")}
    if path.is_file():
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                weights = {k: f.get_tensor(k) for k in f.keys()}
            if meta.get("key") == key:
                net = FeatureNet(x.shape[1:], num_classes, **arch)
                net.load_state_dict(weights)
                info = json.loads(meta.get("info", "{}")) | {"path": str(path), "cached": True}
                return FeatureExtractor(net.eval(), info)
        except (SafetensorError, OSError, RuntimeError, ValueError, json.JSONDecodeError):
            pass  # unreadable or stale: train again and replace it
    net = train_feature_net(x, y, **hp)
    extractor = FeatureExtractor(net, {})
    info: dict[str, Any] = {
        "key": key,
        "code_version": CODE_VERSION,
        "hyperparameters": hp,
        "train_accuracy": extractor.accuracy(x[:10_000], y[:10_000].to(torch.int64)),
    }
    if val is not None:
        info["val_accuracy"] = extractor.accuracy(val[0], val[1].to(torch.int64))
    cache.mkdir(parents=True, exist_ok=True)
    save_tensors(net.state_dict(), path, metadata={"key": key, "info": json.dumps(info)})
    extractor.info = info | {"path": str(path), "cached": False}
    return extractor


def _training_data(dataset: Dataset) -> LabelledSplits:
    """``(x, y, x_val, y_val)`` in the dataset's raw space to train its feature network on: its
    own labelled splits, else the labelled data it declares (:attr:`Dataset.feature_data`)."""
    data = dataset.labelled_splits()
    if data is None:
        raise DgmError(
            f"dataset {dataset.name!r} has no class labels to train a feature network on; "
            "feature-space metrics (fid, kid, prd) need labelled images such as digits or mnist, "
            "or a feature extractor passed as features="
        )
    return data


def dataset_features(
    dataset: Dataset,
    *,
    cache_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
    seed: int = 0,
) -> FeatureExtractor:
    """The cached feature extractor of a labelled dataset (``digits``, ``mnist``, or one that
    declares labelled data such as ``binarized-mnist``), trained on its training split; raises a
    one-sentence :class:`DgmError` for data without labels. ``data_dir`` only places the cache
    (:func:`default_cache_dir`)."""
    x, y, xv, yv = _training_data(dataset)
    num_classes = int(dataset.spec.num_classes or (int(y.max()) + 1))
    val = (xv, yv) if yv is not None else None
    cache = cache_dir if cache_dir is not None else default_cache_dir(data_dir)
    return classifier_features(
        x, y, num_classes=num_classes, val=val, cache_dir=cache, name=dataset.name, seed=seed
    )
