"""The summary of a finished run: final train / validation / test NLL in nats and bits/dim.

Every family is scored alike: :data:`SUMMARY_EXAMPLES` examples of each split, a fixed random
subset (:func:`dgm.data.dataset.fixed_subset`: a split's first examples are biased when it is
ordered), the same examples for every model of a dataset, whatever its likelihood costs (the
full test split is one ``dgm eval RUN`` away). The summary says so: ``{split}_nll_examples``
counts the examples scored, ``{split}_examples`` the size of the split, and ``summary_note``
names a subset in words.
A time budget (a :class:`~dgm.core.progress.Deadline`) stops scoring, inside a batch if need
be: a split scored in part, or not at all, is named in ``cut_for_time``. An adaptive ODE solve
(the probability-flow likelihood of cnf, score-sde, flow matching) is capped at
:data:`SUMMARY_ODE_STEPS` dopri5 steps per batch: a split that needs more is not scored, and
``{split}_nll_skipped`` says why (``dgm eval`` has no cap).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import torch

from dgm.core.model import Model
from dgm.core.progress import Deadline, Progress, TimeUp
from dgm.data import Dataset
from dgm.data.dataset import fixed_subset
from dgm.eval.likelihood import bits_per_dim, likelihood_of, log_likelihood
from dgm.samplers.ode import StepCapReached, step_cap

__all__ = ["SUMMARY_EXAMPLES", "SUMMARY_ODE_STEPS", "SPLITS", "summarize"]

#: examples of each split the summary scores, for every family (a fixed random subset)
SUMMARY_EXAMPLES = 1000
#: dopri5 steps per solve the summary allows (a solve of a trained 2-D model takes tens)
SUMMARY_ODE_STEPS = 500
#: the order of scoring: under a time budget the test figure comes first
SPLITS = ("test", "val", "train")
#: examples per batch, the grain of the progress lines and of the deadline: a model whose
#: likelihood needs autograd (an ODE trace) costs seconds per hundred examples, and a diffusion
#: bound (1000 noise levels) took over 40 s for a batch of 1000 on a loaded machine
_BATCH, _BATCH_COSTLY = 200, 100


def summarize(
    model: Model,
    dataset: Dataset,
    pre: Any,
    *,
    seed: int = 0,
    max_examples: int | None = SUMMARY_EXAMPLES,
    deadline: Deadline | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Final test / validation / train NLL in nats and bits/dim, where the model has a likelihood.

    ``max_examples`` examples of each split (``None``: all; a fixed random subset,
    :func:`~dgm.data.dataset.fixed_subset`) are scored in batches with a
    generator seeded ``seed + 99``; no batch starts after ``deadline``. ``progress`` reports each
    split on stderr (:class:`~dgm.core.progress.Progress`). Non-finite values become ``None``
    (the dict is written as JSON).
    """
    model.eval()
    deadline = deadline or Deadline()
    res: dict[str, Any] = {}
    if not (model.exact_likelihood or model.likelihood_bound):
        # none (a GAN), or an AIS estimate (an EBM on images) that `dgm eval` computes
        info = likelihood_of(model, pre)
        res["likelihood_kind"] = info.kind
        res["likelihood"] = None
        if info.kind != "none":
            res["likelihood"] = f"{info}; its test NLL is computed by `dgm eval --metrics nll`"
        return res
    batch = _BATCH_COSTLY if model.needs_grad_for_inference else _BATCH
    notes: list[str] = []
    cut: list[str] = []
    capped = None  # why a split was not scored (the ODE cap); the later splits are skipped too
    for split in SPLITS:
        x, y = dataset.split(split)
        if x is None or x.shape[0] == 0:
            continue
        if capped:
            res[f"{split}_examples"], res[f"{split}_nll_examples"] = int(x.shape[0]), 0
            res[f"{split}_nll_skipped"] = capped
            continue
        size = int(x.shape[0])
        n = size if max_examples is None else min(size, max_examples)
        y = y if model.conditional else None
        idx = fixed_subset(size, n)
        if idx is not None:
            x, y = x[idx.to(x.device)], None if y is None else y[idx.to(y.device)]
        g = torch.Generator(device=model.device).manual_seed(seed + 99)
        what = f"scoring the {split} split"
        values, info = [], None
        with Progress(what, n, unit="examples", enabled=progress, clock=deadline.clock) as bar:
            if n < size:
                bar.note(
                    f"{n} of {size} examples, a fixed random subset (`dgm eval` scores them all)"
                )
            for start in range(0, n, batch):
                if deadline.passed():
                    break
                stop = min(n, start + batch)
                yb = None if y is None else y[start:stop]
                try:  # a batch begun before the deadline stops at it (an ODE solve can be long)
                    with deadline.enforced(), step_cap(SUMMARY_ODE_STEPS):
                        ll, info = log_likelihood(
                            model, x[start:stop], yb, preprocessor=pre, generator=g
                        )
                except TimeUp:
                    break
                except StepCapReached:
                    values, capped = (
                        [],
                        (
                            f"the ODE needed more than {SUMMARY_ODE_STEPS} solver steps, the cap of "
                            "the end-of-run summary; `dgm eval RUN --metrics nll` computes it"
                        ),
                    )
                    res[f"{split}_nll_skipped"] = capped
                    bar.note(f"not scored: {capped}")
                    break
                values.append(ll)
                bar.update(stop - start)
        scored = sum(v.numel() for v in values)
        res[f"{split}_examples"] = size
        res[f"{split}_nll_examples"] = scored
        if scored < n and not capped:
            cut.append(f"{split} ({scored} of {n} examples scored)")
        if scored == 0:
            continue
        ll = torch.cat(values)  # (scored,) float64
        mean = float(-ll.mean())
        res[f"{split}_nll"] = mean
        res[f"{split}_nll_sem"] = float(ll.std() / math.sqrt(scored)) if scored > 1 else math.nan
        res[f"{split}_bpd"] = float(bits_per_dim(mean, math.prod(x.shape[1:])))
        res["likelihood"] = str(info)
        res["likelihood_kind"] = info.kind
        res["likelihood_info"] = asdict(info)
        if scored < size:
            notes.append(f"{scored} of {size} {split} examples (a fixed random subset)")
    res["summary_examples"] = max_examples
    if notes:
        res["summary_note"] = (
            f"NLL figures on a subset: {', '.join(notes)}; `dgm eval RUN` scores the whole "
            "test split"
        )
    if cut:
        res["cut_for_time"] = cut
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in res.items()
    }
