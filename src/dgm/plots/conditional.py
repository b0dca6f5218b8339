"""Figures of conditional models: samples with one row per class, and the guidance curve
(conditional accuracy against FID over guidance weights, or over a flow's temperatures)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from dgm.eval.conditional import CURVE_OPTIONS  # noqa: E402
from dgm.plots.figures import image_grid, save_samples  # noqa: E402

__all__ = ["class_rows", "guidance_figure", "save_class_rows"]


def class_rows(labels: Tensor, per_class: int) -> list[tuple[int, list[int]]]:
    """``(class, indices)`` of each class drawn, in class order, at most ``per_class`` indices
    each: a row of the grid lists the first samples drawn for its label (classes no sample was
    drawn for get no row)."""
    labels = labels.to("cpu").long()
    return [
        (c, (labels == c).nonzero().flatten()[:per_class].tolist())
        for c in labels.unique().tolist()
    ]


def save_class_rows(
    samples: Tensor,
    labels: Tensor,
    path: str | Path,
    *,
    levels: int | None = None,
    per_class: int = 10,
    title: str = "",
) -> None:
    """Save samples drawn for ``labels``: images as a grid with one row per class drawn (the
    class on the left, empty cells where a class has fewer samples), 2-D points as a scatter
    coloured by class; other data as :func:`~dgm.plots.figures.save_samples`."""
    if samples.dim() == 4:
        rows = class_rows(labels, per_class)
        n, c, h, w = samples.shape
        blank = torch.full((1, c, h, w), float("nan"), dtype=torch.float64)
        tiles = []
        for _, idx in rows:
            row = samples[idx].to("cpu", torch.float64) if idx else blank[:0]
            tiles.append(torch.cat([row, blank.expand(per_class - len(idx), c, h, w)]))
        grid = torch.cat(tiles)  # (K * per_class, C, H, W)
        hi = float(levels - 1) if levels else float(np.nanmax(grid.numpy()))
        arr = image_grid(grid.nan_to_num(hi), levels, per_class)  # empty cells white
        fig, ax = plt.subplots(figsize=(6, max(1.0, 0.6 * len(rows))))
        ax.imshow(arr, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ticks = [1 + (h + 1) * k + h / 2 for k in range(len(rows))]
        ax.set_yticks(ticks, [str(k) for k, _ in rows])
        ax.set_ylabel("class asked for")
        for side in ax.spines.values():
            side.set_visible(False)
    elif samples.dim() == 2 and samples.shape[1] == 2:
        pts = samples.detach().to("cpu", torch.float64).numpy()
        fig, ax = plt.subplots(figsize=(5, 5))
        sc = ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5, c=labels.cpu().numpy(), cmap="tab10")
        ax.legend(*sc.legend_elements(), title="class", fontsize=7, loc="best")
        ax.set_aspect("equal")
    else:
        save_samples(samples, path, levels=levels, title=title)
        return
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def guidance_figure(curve: list[dict[str, Any]], title: str = "", key: str = "guidance") -> Any:
    """Conditional accuracy (y) against FID (x) over the values of the sampling option ``key``
    (``guidance`` weights, labelled ``w=...``, or ``temperature``, labelled ``T=...``), one point
    per value, with the accuracy's standard error as a vertical bar. ``curve`` holds dicts with
    ``key``, ``accuracy``, ``accuracy_stderr`` and ``fid``. Returns the figure."""
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    fid = [p["fid"] for p in curve]
    acc = [p["accuracy"] for p in curve]
    err = [p.get("accuracy_stderr", 0.0) for p in curve]
    short = CURVE_OPTIONS[key][0] if key in CURVE_OPTIONS else key
    ax.errorbar(fid, acc, yerr=err, marker="o", capsize=2)
    for p in curve:
        ax.annotate(f"{short}={p[key]:g}", (p["fid"], p["accuracy"]), fontsize=7,
                    textcoords="offset points", xytext=(3, 3))  # fmt: skip
    ax.set_xlabel("FID (estimate; lower is better)")
    ax.set_ylabel("conditional accuracy (estimate)")
    ax.set_title(title or f"{key}: accuracy against FID")
    fig.tight_layout()
    return fig
