"""Leaderboards: evaluation results of several runs per model, as mean ± std, ranked, in Markdown.

A *row* is one model on one dataset: its status (``ok``, ``not applicable`` when the model cannot
take the data, ``failed``), the kind of its likelihood figure, and ``metrics``: for every numeric
result of :func:`dgm.eval.run.evaluate` (plus training figures), ``{"mean", "std", "n"}`` over its
seeds (``std`` is the sample standard deviation, ``None`` for one seed).

Every family can draw samples, so rows are ranked by a sample metric that all of them have: FID in
the features of the dataset's classifier when the data has them (images with labels), else C2ST
accuracy (distance from chance, ``|acc - 1/2|``), ties broken by MMD^2. The NLL is shown beside it
with its kind (:mod:`dgm.core.likelihood`, recorded by :func:`dgm.eval.run.evaluate` as
``likelihood_kind``), in the words of :func:`dgm.core.likelihood.brief`:

* ``exact``: the model's ``log_prob``; ``exact_ode``: exact up to an ODE solver's tolerance;
* ``bound``: a lower bound on log p (``elbo``, ``iwae_bound``, or a continuous model's figure on
  dequantized discrete data), so the NLL and bits/dim shown are upper bounds on the true ones;
* ``bound_estimate``: a stochastic estimate of such a bound (DDPM's bound from a few terms);
* ``estimate``: an estimate that is neither exact nor a bound (a Hutchinson trace, AIS);
* ``none``: the model has no likelihood (GANs, score models): judged by its samples only.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from dgm.core.likelihood import KINDS, Likelihood, brief

__all__ = [
    "COLUMNS",
    "RANK_METRICS",
    "aggregate",
    "document_markdown",
    "format_stat",
    "likelihood_kind",
    "rank_rows",
    "result_kind",
    "to_markdown",
]

#: sample metrics that rank a leaderboard, in order of preference (lower is better for each)
RANK_METRICS = ("fid", "c2st_accuracy")

#: (key, label) of the leaderboard's metric columns, in order; absent columns are left out
COLUMNS: tuple[tuple[str, str], ...] = (
    ("test_nll", "test NLL (nats)"),
    ("test_bpd", "bits/dim"),
    ("kl", "KL(true‖model)"),
    ("c2st_accuracy", "C2ST acc."),
    ("mmd2", "MMD²"),
    ("fid", "FID*"),
    ("kid", "KID*"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("modes_captured", "modes"),
    ("modes_high_quality", "high-quality"),
    ("train_seconds", "train s"),
    ("steps", "steps"),
    ("parameters", "params"),
)

#: likelihood columns and the quantity they show (their cells say the figure's kind)
_QUANTITY = {"test_nll": "NLL", "test_bpd": "bits/dim"}

# result keys that are bookkeeping, not figures to average
_SKIP = {"n_test", "n_samples", "kl_n", "modes_total", "features_val_accuracy", "seed"}


def likelihood_kind(name: str | None) -> str:
    """The kind of a likelihood figure from its *name* alone, for results written before dgm
    recorded ``likelihood_kind`` beside it (:func:`result_kind` prefers the recorded kind).

    >>> likelihood_kind("log_prob"), likelihood_kind("log_prob (dequantization bound)")
    ('exact', 'bound')
    """
    if not name:
        return "none"
    text = name.lower()
    if "stochastic estimate of" in text:
        return "bound_estimate"
    if "estimate" in text:
        return "estimate"
    if "bound" in text:
        return "bound"
    if "ode solver tolerance" in text:
        return "exact_ode"
    return "exact"


def result_kind(res: dict[str, Any]) -> str:
    """The likelihood kind of an evaluation result: the recorded ``likelihood_kind``, else read
    from the ``likelihood`` name of an older file."""
    kind = res.get("likelihood_kind")
    return kind if kind in KINDS else likelihood_kind(res.get("likelihood"))


def _figure_note(row: dict[str, Any]) -> str | None:
    """What a row's NLL figure is, in the NLL's words (an upper bound, ...) for the footnote."""
    info = row.get("likelihood_info")
    if isinstance(info, dict):
        lik = Likelihood.from_dict(info)
        method = lik.method + (f" ({lik.detail})" if lik.detail else "")
        return f"`{method}`: {lik.describe('NLL')}"
    if row.get("likelihood"):
        return f"`{row['likelihood']}`"
    return None


def aggregate(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{key: {"mean", "std", "n"}}`` of every numeric top-level value of ``results`` (one dict
    per seed); ``None`` values (non-finite figures) are left out of their key's statistics.

    >>> aggregate([{"kl": 1.0}, {"kl": 3.0}])["kl"]
    {'mean': 2.0, 'std': 1.4142135623730951, 'n': 2}
    """
    keys: dict[str, list[float]] = {}
    for res in results:
        for key, value in res.items():
            if key in _SKIP or key.endswith("_sem") or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)) and math.isfinite(value):
                keys.setdefault(key, []).append(float(value))
    return {
        k: {
            "mean": statistics.fmean(v),
            "std": statistics.stdev(v) if len(v) > 1 else None,
            "n": len(v),
        }
        for k, v in keys.items()
    }


def _rank_value(row: dict[str, Any], key: str) -> float:
    stat = row.get("metrics", {}).get(key)
    if stat is None:
        return math.inf
    value = stat["mean"]
    return abs(value - 0.5) if key == "c2st_accuracy" else value


def rank_rows(rows: list[dict[str, Any]]) -> str | None:
    """Sort ``rows`` in place, best first, and number the evaluated ones (``row["rank"]``).
    Returns the metric that ranked them (the first of :data:`RANK_METRICS` any row has)."""
    ok = [r for r in rows if r.get("status") == "ok"]
    # FID ranks only in learned features (images): on raw vectors it compares means and
    # covariances only, blind to the modes of a 2-D density
    ok_fid = [r for r in ok if r.get("fid_space") == "features"]
    by = next(
        (
            k
            for k in RANK_METRICS
            if any(k in r.get("metrics", {}) for r in (ok_fid if k == "fid" else ok))
        ),
        None,
    )
    order = {"ok": 0, "failed": 1, "not applicable": 2}

    def key(r: dict[str, Any]) -> tuple:
        primary = _rank_value(r, by) if by else math.inf
        return (order.get(r.get("status"), 3), primary, _rank_value(r, "mmd2"), r["model"])

    rows.sort(key=key)
    n = 0
    for r in rows:
        r["rank"] = None
        if r.get("status") == "ok" and by is not None and by in r.get("metrics", {}):
            n += 1
            r["rank"] = n
    return by


def format_stat(stat: dict[str, Any] | None, key: str = "") -> str:
    """``mean ± std`` (or ``mean`` for one seed) with 4 significant digits; ``—`` when absent."""
    if stat is None:
        return "—"
    mean, std = stat["mean"], stat.get("std")
    if key in ("steps", "parameters", "modes_captured") and std in (None, 0.0):
        return f"{mean:.0f}"
    text = f"{mean:.4g}" if abs(mean) < 1e5 else f"{mean:.3g}"
    return text + (f" ± {std:.2g}" if std is not None else "")


def _cell(row: dict[str, Any], key: str) -> str:
    metrics = row.get("metrics", {})
    text = format_stat(metrics.get(key), key)
    if key in _QUANTITY and key in metrics:
        text += f" ({brief(result_kind(row), _QUANTITY[key])})"
    if key == "modes_captured" and key in metrics and row.get("modes_total"):
        text += f"/{row['modes_total']}"
    return text


def _anomaly_keys(rows: list[dict[str, Any]]) -> list[str]:
    keys = {k for r in rows for k in r.get("metrics", {}) if k.startswith("anomaly_")}
    return sorted(k for k in keys if k.endswith("_auroc"))


def to_markdown(table: dict[str, Any]) -> str:
    """One dataset's leaderboard (``{"data", "rank_by", "rows"}``) as a Markdown section."""
    rows = table["rows"]
    keys = [k for k, _ in COLUMNS if any(k in r.get("metrics", {}) for r in rows)]
    labels = dict(COLUMNS)
    anomaly = _anomaly_keys(rows)
    head = ["rank", "model", "family"] + [labels[k] for k in keys]
    head += [f"AUROC {k[len('anomaly_') : -len('_auroc')]}" for k in anomaly] + ["status"]
    lines = [f"## {table['data']}", ""]
    by = table.get("rank_by")
    if by:
        lines.append(
            f"Ranked by {'FID (lower is better)' if by == 'fid' else '|C2ST accuracy − 0.5|'}"
            ", a sample metric every family has; the NLL and bits/dim columns say whether each "
            "figure is exact, an upper bound (the model gives a lower bound on log p) or an "
            "estimate."
        )
        lines.append("")
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = []
    for r in rows:
        status = r.get("status", "")
        if status != "ok":
            notes.append(f"- {r['model']}: {status}: {r.get('reason', '')}")
        elif r.get("selected"):
            chosen = ", ".join(f"{k}={v}" for k, v in r["selected"].items())
            how = r.get("selection", {}).get("by", "")
            notes.append(f"- {r['model']}: chose {chosen} by {how}")
        cells = [str(r.get("rank") or "—"), r["model"], r.get("family", "")]
        cells += [_cell(r, k) for k in keys + anomaly]
        cells.append(status)
        lines.append("| " + " | ".join(cells) + " |")
    names = sorted({n for n in map(_figure_note, rows) if n})
    if names:
        lines += ["", "NLL figures: " + "; ".join(names) + "."]
    if notes:
        lines += [""] + notes
    return "\n".join(lines) + "\n"


def _pairs(options: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items())


def document_markdown(doc: dict[str, Any]) -> str:
    """The Markdown of a whole comparison (``dgm compare``'s ``leaderboard.json`` document):
    budget, command, settings that differ from the defaults, then one table per dataset."""
    budget = doc["budget"]
    what = (
        f"{budget['steps']} training steps"
        if "steps" in budget
        else f"{budget['minutes']} minutes of training"
    )
    head = [
        "# dgm compare leaderboard",
        "",
        f"Every model had the same budget ({what}) and data split; "
        f"{doc['seeds']} seed(s), figures are mean ± std over seeds.",
    ]
    if doc.get("command"):
        head += ["", f"Command: `{doc['command']}`"]
    overrides = [f"{m} configured with {_pairs(c)}" for m, c in doc.get("model_config", {}).items()]
    overrides += [f"{m} sampled with {_pairs(o)}" for m, o in doc.get("sample_options", {}).items()]
    if overrides:
        head += ["", "Settings other than the models' defaults: " + "; ".join(overrides) + "."]
    if not doc.get("complete"):
        head += ["", "**Incomplete**: the comparison is still running or was interrupted."]
    parts = ["\n".join(head) + "\n"] + [to_markdown(t) for t in doc["tables"]]
    parts.append(
        "*FID and KID: on images, in the features of a small classifier dgm trains on the "
        "dataset's labels (not Inception), so they compare dgm runs with each other, not with "
        "published figures; on vector data, in the raw values.\n"
    )
    return "\n".join(parts)
