"""Sample grids, 2-D scatter plots and density heat maps, saved as PNG."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from dgm.eval.density import grid  # noqa: E402

__all__ = [
    "curves_figure",
    "density_figure",
    "figure_bytes",
    "image_grid",
    "save_density",
    "save_latent_map",
    "save_reconstructions",
    "save_samples",
]


def image_grid(images: Tensor, levels: int | None = None, ncols: int | None = None) -> np.ndarray:
    """Tile images ``(N, C, H, W)`` into one array ``(rows*H, cols*W[, C])`` scaled to [0, 1]."""
    x = images.detach().to("cpu", torch.float64)
    n, c, h, w = x.shape
    lo, hi = (0.0, float(levels - 1)) if levels else (float(x.min()), float(x.max()))
    x = ((x - lo) / max(hi - lo, 1e-12)).clamp(0, 1)
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    pad = 1
    canvas = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c))
    for i in range(n):
        r, col = divmod(i, ncols)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        canvas[top : top + h, left : left + w] = x[i].permute(1, 2, 0).numpy()
    return canvas[..., 0] if c == 1 else canvas


def save_samples(
    samples: Tensor,
    path: str | Path,
    *,
    levels: int | None = None,
    bounds: tuple[float, float, float, float] | None = None,
    title: str = "",
) -> None:
    """Save samples as an image grid (images) or a scatter plot (2-D points)."""
    fig = None
    if samples.dim() == 4:
        arr = image_grid(samples[:100], levels)
        fig, ax = plt.subplots(figsize=(6, 6))
        ax.imshow(arr, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.axis("off")
    elif samples.dim() == 2 and samples.shape[1] == 2:
        pts = samples.detach().to("cpu", torch.float64).numpy()
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.4)
        if bounds is not None:
            ax.set_xlim(bounds[0], bounds[1])
            ax.set_ylim(bounds[2], bounds[3])
        ax.set_aspect("equal")
    else:
        flat = samples.detach().reshape(samples.shape[0], -1).to("cpu", torch.float64).numpy()
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.imshow(flat[:64], aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_xlabel("dimension")
        ax.set_ylabel("sample")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_density(
    model_log_prob: Callable[[Tensor], Tensor],
    path: str | Path,
    bounds: tuple[float, float, float, float],
    *,
    true_log_prob: Callable[[Tensor], Tensor] | None = None,
    n: int = 200,
    title: str = "model",
) -> None:
    """Heat maps of the model density beside the true density on the same grid."""
    pts, _ = grid(bounds, n)
    panels = [(title, model_log_prob)]
    if true_log_prob is not None:
        panels.insert(0, ("true density", true_log_prob))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.5), squeeze=False)
    for ax, (name, fn) in zip(axes[0], panels):
        dens = torch.cat(
            [torch.exp(fn(pts[i : i + 10_000]).double()) for i in range(0, len(pts), 10_000)]
        )
        ax.imshow(
            dens.reshape(n, n).numpy(),
            origin="lower",
            extent=bounds,
            cmap="magma",
            interpolation="nearest",
        )
        ax.set_title(name)
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_reconstructions(pairs: Tensor, path: str | Path, *, levels: int | None = None) -> None:
    """Inputs (top row) above their reconstructions (bottom row); ``pairs`` is ``(2, B, C, H, W)``."""
    b = pairs.shape[1]
    arr = image_grid(pairs.flatten(0, 1), levels, ncols=b)
    fig, ax = plt.subplots(figsize=(min(1.0 * b, 16), 2.4))
    ax.imshow(arr, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title("inputs (top) and reconstructions (bottom)")
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_latent_map(
    latent: dict[str, Tensor],
    path: str | Path,
    *,
    labels: Tensor | None = None,
    levels: int | None = None,
) -> None:
    """Left: encoder means of test data in a 2-D plane of the latent space, coloured by label.
    Right: decoder means over a grid of that plane."""
    codes = latent["codes"].detach().to("cpu", torch.float64).numpy()
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    c = None if labels is None else labels.to("cpu").numpy()
    sc = axes[0].scatter(codes[:, 0], codes[:, 1], c=c, s=3, cmap="tab10")
    if c is not None:
        fig.colorbar(sc, ax=axes[0], label="label")
    axes[0].set_title("latent codes (encoder means)")
    grid_imgs = latent["grid"]
    g = grid_imgs.shape[0]
    axes[1].imshow(
        image_grid(grid_imgs.flatten(0, 1), levels, ncols=g), cmap="gray", vmin=0, vmax=1
    )
    axes[1].set_title("decoder means over the latent plane")
    axes[1].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def figure_bytes(fig: Any, fmt: str = "png", dpi: int = 80) -> bytes:
    """Render a matplotlib figure to PNG or SVG bytes (for reports that inline their images)
    and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi, metadata={"Date": None} if fmt == "svg" else None)
    plt.close(fig)
    return buf.getvalue()


def density_figure(
    samples: Tensor,
    bounds: tuple[float, float, float, float],
    *,
    true_log_prob: Callable[[Tensor], Tensor] | None = None,
    model_log_prob: Callable[[Tensor], Tensor] | None = None,
    n: int = 100,
    name: str = "model",
) -> Any:
    """Side by side on the same axes: the true density (when known), the model's density (when
    it has an exact one) as heat maps on an ``n x n`` grid, and a scatter of the model's samples
    ``(N, 2)``. Returns the figure."""
    pts, _ = grid(bounds, n)
    panels: list[tuple[str, Any]] = []
    if true_log_prob is not None:
        panels.append(("true density", true_log_prob))
    if model_log_prob is not None:
        panels.append((f"{name} density", model_log_prob))
    panels.append((f"{name} samples", None))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2), squeeze=False)
    for ax, (title, fn) in zip(axes[0], panels):
        if fn is None:
            s = samples.detach().to("cpu", torch.float64).numpy()
            ax.scatter(s[:, 0], s[:, 1], s=1, alpha=0.4)
            ax.set_xlim(bounds[0], bounds[1])
            ax.set_ylim(bounds[2], bounds[3])
        else:
            dens = torch.cat(
                [torch.exp(fn(pts[i : i + 10_000]).double()) for i in range(0, len(pts), 10_000)]
            )
            ax.imshow(
                dens.reshape(n, n).numpy(), origin="lower", extent=bounds, cmap="magma",
                interpolation="nearest",
            )  # fmt: skip
        ax.set_title(title, fontsize=9)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def curves_figure(
    panels: dict[str, dict[str, list[tuple[float, float]]]], *, title: str = "", ncols: int = 2
) -> Any:
    """Line plots of curves against the training step: ``panels`` maps a panel title (e.g.
    "training", "validation") to ``{curve name: [(step, value), ...]}``; each panel has axes of
    its own (curves on one axes share a scale, so only comparable ones belong together), at most
    ``ncols`` panels a row. Returns the figure."""
    shown = {k: v for k, v in panels.items() if any(v.values())}
    n = max(1, len(shown))
    cols = min(n, ncols)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    axes = axes.ravel()
    for ax, (name, curves) in zip(axes, shown.items()):
        for label, points in curves.items():
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, label=label, lw=1.2, marker="." if len(xs) < 30 else None)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    for ax in axes[len(shown) :]:
        ax.axis("off")
    if not shown:
        axes[0].text(0.5, 0.5, "no curves logged", ha="center", va="center")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
