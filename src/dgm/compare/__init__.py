"""Comparison and reporting: train several models with equal budgets, rank them, write a report.

* :mod:`~dgm.compare.presets`: ready-made comparisons (:data:`PRESETS`) and the registered
  models by family (:data:`FAMILIES`)
* :mod:`~dgm.compare.runner`: :func:`compare`, every model x dataset x seed, resumable
* :mod:`~dgm.compare.executors`: where the runs happen: in this process, or as tasks of a Ray
  cluster (``executor="ray"``)
* :mod:`~dgm.compare.grid`: model selection by validation score or K-fold cross-validation
* :mod:`~dgm.compare.leaderboard`: mean ± std over seeds, ranking, Markdown
* :mod:`~dgm.compare.report`: the self-contained HTML report of runs (:func:`write_report`),
  whose HTML :mod:`~dgm.compare.page` writes

This floor sits above :mod:`dgm.api`: it trains and loads runs through it.
"""

from dgm.compare.grid import parse_grid, split_values
from dgm.compare.leaderboard import (
    aggregate,
    document_markdown,
    likelihood_kind,
    rank_rows,
    to_markdown,
)
from dgm.compare.presets import FAMILIES, PRESETS, Preset, all_models
from dgm.compare.report import gather, read_records, write_report
from dgm.compare.runner import compare, write_leaderboard

__all__ = [
    "FAMILIES",
    "PRESETS",
    "Preset",
    "aggregate",
    "all_models",
    "compare",
    "document_markdown",
    "gather",
    "likelihood_kind",
    "parse_grid",
    "rank_rows",
    "read_records",
    "split_values",
    "to_markdown",
    "write_leaderboard",
    "write_report",
]
