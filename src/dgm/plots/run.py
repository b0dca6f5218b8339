"""The figures of a trained model written into its run directory: ``samples.png``, ``density.png``
(2-D data, exact density) and, for a latent-variable model on images, ``reconstructions.png`` and
``latent.png``.

Each figure is a phase with its progress on stderr (``progress=True``); under a time budget (a
:class:`~dgm.core.progress.Deadline`) no figure starts after the deadline, and the density grid,
scored in chunks, is abandoned when the deadline passes midway (no file is written).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch

from dgm.core.io import atomic_path
from dgm.core.model import Model
from dgm.core.progress import Deadline, Progress, TimeUp
from dgm.core.protocols import ConditionalModel, LatentVariableModel
from dgm.data import Dataset
from dgm.plots.conditional import save_class_rows
from dgm.plots.figures import save_density, save_latent_map, save_reconstructions, save_samples

__all__ = ["write_plots"]


class _OutOfTime(Exception):
    """The deadline passed while a figure was being computed."""


def write_plots(
    out: Path,
    model: Model,
    pre: Any,
    dataset: Dataset,
    *,
    seed: int = 0,
    deadline: Deadline | None = None,
    progress: bool = False,
    skipped: list[str] | None = None,
) -> list[Path]:
    """Write ``samples.png`` and, for 2-D data with an exact model density, ``density.png``
    (the model beside the true density). Each file appears atomically. Figures not drawn
    because ``deadline`` passed are appended to ``skipped``; returns the files written."""
    written: list[Path] = []
    deadline = deadline or Deadline()
    skipped = [] if skipped is None else skipped
    clock = deadline.clock

    def phase(what: str, total: float | None = None, unit: str = "") -> Progress:
        return Progress(what, total, unit=unit, enabled=progress, clock=clock)

    model.eval()
    torch.manual_seed(seed)
    two_d = dataset.spec.event_shape == (2,)
    density = getattr(dataset, "density", None)
    bounds = density.bounds if density is not None else None
    if deadline.passed():
        skipped.extend(_applicable(model, dataset))
        return written
    n_samples = 2000 if two_d else 100
    y = None
    if isinstance(model, ConditionalModel) and model.conditional:  # one row of 10 per class
        k = model.num_classes
        per = -(-n_samples // k) if two_d else 10
        y = torch.arange(k, device=model.device).repeat_interleave(per)  # (k * per,)
        n_samples = int(y.numel())
    with phase("drawing samples for samples.png", n_samples, "samples") as bar:
        try:
            with model.inference(), deadline.enforced():
                labels = {} if y is None else {"y": y}
                s = pre.inverse(model.sample(n_samples, **labels)).to("cpu")
            bar.update(n_samples)
        except TimeUp:  # one long sampling call is stopped at the deadline, not run to its end
            bar.note("the time budget ran out while drawing; samples.png is not written")
            s = None
    if s is None:
        skipped.extend(_applicable(model, dataset))
        return written
    with atomic_path(out / "samples.png", suffix=".png") as tmp:
        if y is None:
            save_samples(
                s, tmp, levels=dataset.spec.levels, bounds=bounds, title=f"{model.name} samples"
            )
        else:
            save_class_rows(s, y, tmp, levels=dataset.spec.levels, title=f"{model.name} samples")
    written.append(out / "samples.png")
    if isinstance(model, LatentVariableModel) and dataset.spec.is_image and deadline.passed():
        skipped.extend(["reconstructions.png", "latent.png"])
    elif isinstance(model, LatentVariableModel) and dataset.spec.is_image:
        x, labels = dataset.split("test")
        # a fixed random spread of the test split: some are sorted by class (the binarized
        # MNIST's first 2000 are 0s and 1s)
        pick = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))[:2000]
        x, labels = x[pick], None if labels is None else labels[pick]
        y = labels if model.conditional else None
        with model.inference():
            xm, _ = pre(x.to(model.device, model.dtype))
            yb = None if y is None else y.to(model.device)
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
                    labels=labels,
                    levels=dataset.spec.levels,
                ),
            ),  # fmt: skip
        ):
            with atomic_path(out / f"{name}.png", suffix=".png") as tmp:
                draw(tmp)
            written.append(out / f"{name}.png")
    if two_d and model.exact_likelihood and deadline.passed():
        skipped.append("density.png")
    elif two_d and model.exact_likelihood:
        if bounds is None:
            lo, hi = dataset.train.min(0).values, dataset.train.max(0).values
            bounds = (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))

        # A density that needs autograd at inference (ODE trace, MCMC energy) costs tens of network
        # passes per point: a 80 x 80 grid keeps the plot to seconds instead of many minutes;
        # it is scored in chunks, to report progress and to heed the deadline.
        n = 80 if model.needs_grad_for_inference else 200
        chunk = 400 if model.needs_grad_for_inference else 2000
        with phase("the model density for density.png", n * n, "points") as bar:

            def log_q(pts: torch.Tensor) -> torch.Tensor:
                parts = []
                for i in range(0, pts.shape[0], chunk):
                    if deadline.passed():
                        raise _OutOfTime
                    try:
                        with model.inference(), deadline.enforced():
                            xm, ld = pre(pts[i : i + chunk].to(model.device, model.dtype))
                            parts.append((model.log_prob(xm) + ld).to("cpu", torch.float64))
                    except TimeUp as e:
                        raise _OutOfTime from e
                    bar.update(parts[-1].shape[0])
                return torch.cat(parts)

            true = density.log_prob if density is not None and density.exact_log_prob else None
            try:
                with atomic_path(out / "density.png", suffix=".png") as tmp:
                    save_density(
                        log_q, tmp, bounds, true_log_prob=true, n=n, title=f"{model.name} density"
                    )
                written.append(out / "density.png")
            except _OutOfTime:
                plt.close()  # the figure save_density had opened
                bar.note("the time budget ran out; density.png is not written")
                skipped.append("density.png")
    return written


def _applicable(model: Model, dataset: Dataset) -> list[str]:
    """The figures :func:`write_plots` draws for this model and data."""
    names = ["samples.png"]
    if isinstance(model, LatentVariableModel) and dataset.spec.is_image:
        names += ["reconstructions.png", "latent.png"]
    if dataset.spec.event_shape == (2,) and model.exact_likelihood:
        names.append("density.png")
    return names
