"""The latent figure of a VAE run draws a spread of the test split, not its first examples."""

from __future__ import annotations

import torch

import dgm.models.vae  # noqa: F401  (registers vae)
import dgm.plots.run as run_plots
from dgm.core.spec import DataSpec
from dgm.data.dataset import Dataset
from dgm.data.preprocess import Identity
from dgm.models import build


def test_a_test_split_sorted_by_class_gives_every_class_to_the_latent_figure(tmp_path, monkeypatch):
    spec = DataSpec((1, 8, 8), "discrete", levels=2, num_classes=10)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2, (3000, 1, 8, 8), generator=g).float()
    labels = torch.arange(10).repeat_interleave(300)  # sorted: the first 2000 hold classes 0-6
    data = Dataset("sorted", spec, x, x[:10], x, labels, labels[:10], labels)
    seen = {}
    monkeypatch.setattr(
        run_plots,
        "save_latent_map",
        lambda latent, p, labels=None, **k: seen.update(codes=latent["codes"], labels=labels),
    )
    model = build("vae", spec, latent_dim=2, hidden=(8,))
    run_plots.write_plots(tmp_path, model, Identity(), data)
    assert seen["codes"].shape == (2000, 2) and len(seen["labels"]) == 2000
    assert set(seen["labels"].tolist()) == set(range(10))
