"""The figures of a trained model written into its run directory: ``samples.png``, ``density.png``
(2-D data, exact density) and, for a latent-variable model on images, ``reconstructions.png`` and
``latent.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dgm.core.io import atomic_path
from dgm.core.model import Model
from dgm.core.protocols import LatentVariableModel
from dgm.data import Dataset
from dgm.plots.figures import save_density, save_latent_map, save_reconstructions, save_samples

__all__ = ["write_plots"]


def write_plots(
    out: Path, model: Model, pre: Any, dataset: Dataset, *, seed: int = 0
) -> list[Path]:
    """Write ``samples.png`` and, for 2-D data with an exact model density, ``density.png``
    (the model beside the true density). Each file appears atomically."""
    written = []
    model.eval()
    torch.manual_seed(seed)
    two_d = dataset.spec.event_shape == (2,)
    density = getattr(dataset, "density", None)
    bounds = density.bounds if density is not None else None
    with model.inference():
        s = pre.inverse(model.sample(2000 if two_d else 100)).to("cpu")
    with atomic_path(out / "samples.png", suffix=".png") as tmp:
        save_samples(
            s, tmp, levels=dataset.spec.levels, bounds=bounds, title=f"{model.name} samples"
        )
    written.append(out / "samples.png")
    if isinstance(model, LatentVariableModel) and dataset.spec.is_image:
        x, labels = dataset.split("test")
        y = labels if model.conditional else None
        with model.inference():
            xm, _ = pre(x[:2000].to(model.device, model.dtype))
            yb = None if y is None else y[:2000].to(model.device)
            pairs = model.reconstructions(xm[:16], None if yb is None else yb[:16])
            pairs = pre.inverse(pairs.flatten(0, 1)).reshape(pairs.shape).to("cpu")
            latent = model.latent_map(xm, yb)
            latent["grid"] = pre.inverse(latent["grid"].flatten(0, 1)).reshape(latent["grid"].shape)
        for name, draw in (
            (
                "reconstructions",
                lambda p: save_reconstructions(pairs, p, levels=dataset.spec.levels),
            ),
            (
                "latent",
                lambda p: save_latent_map(
                    latent,
                    p,
                    labels=None if labels is None else labels[:2000],
                    levels=dataset.spec.levels,
                ),
            ),  # fmt: skip
        ):
            with atomic_path(out / f"{name}.png", suffix=".png") as tmp:
                draw(tmp)
            written.append(out / f"{name}.png")
    if two_d and model.exact_likelihood:
        if bounds is None:
            lo, hi = dataset.train.min(0).values, dataset.train.max(0).values
            bounds = (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))

        def log_q(pts: torch.Tensor) -> torch.Tensor:
            with model.inference():
                xm, ld = pre(pts.to(model.device, model.dtype))
                return (model.log_prob(xm) + ld).to("cpu", torch.float64)

        true = density.log_prob if density is not None and density.exact_log_prob else None
        # A density that needs autograd at inference (ODE trace, MCMC energy) costs tens of network
        # passes per point: a 80 x 80 grid keeps the plot to seconds instead of many minutes.
        n = 80 if model.needs_grad_for_inference else 200
        with atomic_path(out / "density.png", suffix=".png") as tmp:
            save_density(log_q, tmp, bounds, true_log_prob=true, n=n, title=f"{model.name} density")
        written.append(out / "density.png")
    return written
