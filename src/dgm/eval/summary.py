"""The summary of a finished run: final train / validation / test NLL in nats and bits/dim."""

from __future__ import annotations

import math
from typing import Any

import torch

from dgm.core.model import Model
from dgm.data import Dataset
from dgm.eval.likelihood import likelihood_of
from dgm.eval.likelihood import nll as nll_metric

__all__ = ["SUMMARY_MAX_COSTLY", "SUMMARY_MAX_COSTLY_TRAIN", "SUMMARY_MAX_TRAIN", "summarize"]

SUMMARY_MAX_TRAIN = 10_000
SUMMARY_MAX_COSTLY = 1000
#: the training split of such models: its NLL only shows over-fitting, half as many suffice
SUMMARY_MAX_COSTLY_TRAIN = 500


def summarize(model: Model, dataset: Dataset, pre: Any, *, seed: int = 0) -> dict[str, Any]:
    """Final train (first 10k) / validation / test NLL in nats and bits/dim, where defined.

    Each split is scored with a generator seeded ``seed + 99``; ``{split}_nll_examples`` counts
    the examples scored. Non-finite values become ``None`` (the dict is written as JSON).
    """
    model.eval()
    res: dict[str, Any] = {}
    if not (model.exact_likelihood or model.likelihood_bound):
        # none (a GAN), or an AIS estimate (an EBM on images) that `dgm eval` computes
        info = likelihood_of(model, pre)
        res["likelihood_kind"] = info.kind
        res["likelihood"] = None
        if info.kind != "none":
            res["likelihood"] = f"{info}; its test NLL is computed by `dgm eval --metrics nll`"
        return res
    for split in ("train", "val", "test"):
        x, y = dataset.split(split)
        if x is None or x.shape[0] == 0:
            continue
        # models whose likelihood needs autograd (an ODE trace) cost seconds per hundred points:
        # their summary scores the first SUMMARY_MAX_COSTLY examples of each split (counted below)
        cap = SUMMARY_MAX_COSTLY if model.needs_grad_for_inference else None
        if split == "train":
            cap = SUMMARY_MAX_COSTLY_TRAIN if model.needs_grad_for_inference else SUMMARY_MAX_TRAIN
        if cap is not None:
            x = x[:cap]
            y = None if y is None else y[:cap]
        g = torch.Generator(device=model.device).manual_seed(seed + 99)
        y = y if model.conditional else None
        m = nll_metric(model, x, y, preprocessor=pre, generator=g)
        res[f"{split}_nll"] = m["nll"]
        res[f"{split}_nll_sem"] = m["nll_sem"]
        res[f"{split}_bpd"] = m["bpd"]
        res[f"{split}_nll_examples"] = int(x.shape[0])
        res["likelihood"] = m["likelihood"]
        res["likelihood_kind"] = m["likelihood_kind"]
        res["likelihood_info"] = m["likelihood_info"]
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in res.items()
    }
