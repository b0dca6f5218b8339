"""Evaluate a trained model on its dataset: every metric that applies, as one JSON-able dict."""

from __future__ import annotations

import math
from typing import Any

import torch

from dgm.core.model import Model
from dgm.eval.density import grid_integral, kl_divergence
from dgm.eval.likelihood import nll

__all__ = ["evaluate"]


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def evaluate(
    model: Model,
    dataset: Any,
    preprocessor: Any = None,
    *,
    seed: int = 0,
    grid_size: int = 300,
    max_test: int | None = None,
    bound_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Test NLL and bits/dim (exact or the model's named bound); for analytic 2-D data also
    KL(true || model) from exact test samples and the model density's integral over a grid.

    Deterministic for a given ``seed`` (dequantization noise comes from a seeded generator).
    """
    model.eval()
    x, y = dataset.split("test")
    if max_test is not None:
        x = x[:max_test]
        y = None if y is None else y[:max_test]
    res: dict[str, Any] = {"model": model.name, "data": dataset.name, "n_test": int(x.shape[0])}
    has_likelihood = model.exact_likelihood or model.likelihood_bound is not None
    if has_likelihood:
        g = torch.Generator(device=model.device).manual_seed(seed)
        m = nll(
            model,
            x,
            y if model.conditional else None,
            preprocessor=preprocessor,
            generator=g,
            bound_options=bound_options,
        )
        res.update(
            test_nll=m["nll"],
            test_nll_sem=m["nll_sem"],
            test_bpd=m["bpd"],
            likelihood=m["likelihood"],
        )
    else:
        res["likelihood"] = None
    density = getattr(dataset, "density", None)
    if has_likelihood and density is not None and model.exact_likelihood:

        def log_q(pts: torch.Tensor) -> torch.Tensor:
            with model.inference():
                xm = pts.to(model.device, model.dtype)
                ld = torch.zeros(xm.shape[0], dtype=model.dtype, device=model.device)
                if preprocessor is not None:
                    xm, ld = preprocessor(xm)
                return (model.log_prob(xm) + ld).to("cpu", torch.float64)

        if density.exact_log_prob:
            kl = kl_divergence(lambda p: density.log_prob(p.double()), log_q, x)
            res.update(kl=kl["kl"], kl_sem=kl["kl_sem"], kl_n=kl["n"])
        xmin, xmax, ymin, ymax = density.bounds
        pad_x, pad_y = 0.25 * (xmax - xmin), 0.25 * (ymax - ymin)
        box = (xmin - pad_x, xmax + pad_x, ymin - pad_y, ymax + pad_y)
        res["grid_integral"] = grid_integral(log_q, box, grid_size)
        res["grid_bounds"] = list(box)
    return _finite(res)
