"""Sample grids, 2-D scatter plots and density heat maps, saved as PNG."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from dgm.eval.density import grid  # noqa: E402

__all__ = ["image_grid", "save_samples", "save_density", "save_reconstructions", "save_latent_map"]


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
