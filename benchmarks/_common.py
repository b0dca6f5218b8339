"""Helpers shared by the benchmark scripts: results as JSON and as a Markdown table."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def with_overrides(base: dict[str, Any], pairs: list[str]) -> dict[str, Any]:
    """``base`` updated with ``key=value`` strings from ``--set`` (values are parsed by dgm)."""
    out = dict(base)
    for kv in pairs:
        key, value = kv.split("=", 1)
        out[key] = value
    return out


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def report(
    name: str, rows: list[dict[str, Any]], columns: list[str], extra: dict | None = None
) -> None:
    """Print JSON and a Markdown table, and save both under benchmarks/results/."""
    RESULTS.mkdir(exist_ok=True)
    doc = {"benchmark": name, "machine": machine(), "rows": rows} | (extra or {})
    text = json.dumps(doc, indent=2)
    table = markdown_table(rows, columns)
    print(text)
    print()
    print(table)
    (RESULTS / f"{name}.json").write_text(text + "\n")
    (RESULTS / f"{name}.md").write_text(table + "\n")
