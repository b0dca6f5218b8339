"""Model selection for ``dgm compare --grid``: grid points, cross-validation folds, validation scores.

Each grid point is trained with seed 0 and scored on the *validation* split, by validation NLL
where the model has a likelihood, else by the MMD^2 between its samples and the validation data;
with ``cv=K``, by the mean of that score over K folds of train+validation (Stone, 1974, "Cross-
validatory choice and assessment of statistical predictions"). The runner then evaluates only the
chosen point on the test split, so the test split never chooses.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from dgm import api
from dgm.core.errors import ConfigError
from dgm.core.io import atomic_write_text
from dgm.data import Dataset
from dgm.eval.twosample import mmd2_unbiased
from dgm.train.config import TrainConfig

__all__ = ["cv_folds", "grid_points", "parse_grid", "slug", "split_values", "validation_score"]


def split_values(text: str) -> list[str]:
    """Split ``v1,v2`` on commas outside brackets: ``"[64,64],[32]"`` -> ``["[64,64]", "[32]"]``."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[({"
        depth -= ch in "])}"
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return [v for v in out if v]


def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """``["hidden=[64],[128]", "lr=1e-3,3e-4"]`` -> ``{"hidden": [...], "lr": [...]}``."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not split_values(values):
            raise ConfigError(
                f"--grid takes KEY=V1,V2,... (e.g. --grid lr=1e-3,3e-4), not {item!r}"
            )
        grid[key.strip()] = split_values(values)
    return grid


def slug(text: str) -> str:
    """A folder name for a dataset name, file or grid tag (``data/small.npy`` -> ``small``)."""
    text = Path(text).stem if ("/" in text or "." in text) else text
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_") or "data"


def grid_points(cls: type, grid: dict[str, list[str]]) -> list[tuple[str, dict, dict]]:
    """``(tag, model_overrides, train_overrides)`` for every grid point that applies to ``cls``:
    a key of its ``Config`` goes to the model, a key of ``TrainConfig`` to training; keys of
    neither are left out, and no key that applies gives the one point ``"default"``."""
    model_keys = {f.name for f in dataclasses.fields(cls.Config)}
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    keys = [k for k in grid if k in model_keys or k in train_keys]
    out = []
    for values in itertools.product(*(grid[k] for k in keys)):
        point = dict(zip(keys, values))
        tag = ",".join(f"{k}={v}" for k, v in point.items()) or "default"
        m = {k: v for k, v in point.items() if k in model_keys}
        t = {k: v for k, v in point.items() if k not in model_keys}
        out.append((slug(tag.replace(" ", "")), m, t))
    return out


def cv_folds(dataset: Dataset, k: int) -> list[Dataset]:
    """``k`` datasets from train+validation (a fixed permutation, seed 0): fold ``i`` validates
    (and tests) on the ``i``-th part and trains on the others. The test split is never used."""
    x = torch.cat([dataset.train, dataset.val])  # (N, *event)
    y = None
    if dataset.train_labels is not None and dataset.val_labels is not None:
        y = torch.cat([dataset.train_labels, dataset.val_labels])  # (N,)
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    parts = perm.chunk(k)
    out = []
    for i, held in enumerate(parts):
        rest = torch.cat([p for j, p in enumerate(parts) if j != i])
        pick = (lambda idx: None) if y is None else (lambda idx: y[idx])  # noqa: B023
        out.append(
            Dataset(
                name=f"{dataset.name} (fold {i + 1} of {k})",
                spec=dataset.spec,
                train=x[rest],
                val=x[held],
                test=x[held],
                train_labels=pick(rest),
                val_labels=pick(held),
                test_labels=pick(held),
            )  # fmt: skip
        )
    return out


def validation_score(path: Path, val_x: torch.Tensor) -> tuple[str, float]:
    """``(what, value)``, lower is better: the validation NLL from the run's summary, else the
    unbiased MMD^2 between 1000 of its samples (seed 0) and ``val_x`` (cached in the run)."""
    summary = json.loads((path / "summary.json").read_text())
    if summary.get("val_nll") is not None:
        return "validation NLL", float(summary["val_nll"])
    cache = path / "validation.json"
    if cache.is_file():
        return "validation MMD²", float(json.loads(cache.read_text())["mmd2"])
    run = api.load_run(path)
    n = min(1000, val_x.shape[0])
    with torch.random.fork_rng(devices=[]), run.model.inference():
        torch.manual_seed(0)
        s = run.preprocessor.inverse(run.model.sample(n)).to("cpu", torch.float32)
    value = float(mmd2_unbiased(val_x[:n].flatten(1), s.flatten(1)))
    atomic_write_text(cache, json.dumps({"mmd2": value}) + "\n")
    return "validation MMD²", value
