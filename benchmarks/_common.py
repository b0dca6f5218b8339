"""Helpers shared by the benchmark scripts.

* the machine a figure was measured on (``machine``, ``loadavg``): the 2 cores here are shared, so
  every result records the load;
* ``key=value`` options (``--set`` / ``--train-set``), optionally for one model
  (``MODEL.key=value``): ``parse_sets``, ``with_overrides``; the values stay strings, dgm parses
  them against the typed config (``dgm.core.config.build_config``): a script never guesses a type;
* the engine's log of a run (``read_log``, ``step_rates``);
* summaries: ``median``, ``mean_sem``;
* results: ``report`` prints JSON and a Markdown table and saves the JSON (with the command that
  made it and the table's columns) under ``benchmarks/results/``; the Markdown table is not stored
  twice, ``python benchmarks/_common.py table results/NAME.json`` regenerates it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dgm.core.io import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"

__all__ = [
    "RESULTS",
    "cpu",
    "loadavg",
    "machine",
    "markdown_table",
    "mean_sem",
    "median",
    "parse_sets",
    "read_log",
    "report",
    "step_rates",
    "with_overrides",
]


# ------------------------------------------------------------------------------ the machine
def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, e.g. ``"4.1 3.9 3.5"`` (``"n/a"`` off Linux)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def cpu() -> dict[str, Any]:
    """The processor's model name and whether it has AVX-512 and AMX (figures from hosts with and
    without them do not compare); empty off Linux."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return {"model": fields.get("model name", "n/a"), "avx512": "avx512f" in flags,
            "amx": "amx_tile" in flags}  # fmt: skip


def machine() -> dict[str, Any]:
    return {
        "cpu": cpu(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "loadavg": loadavg(),
    }


# ------------------------------------------------------------------------- key=value options
def parse_sets(pairs: Sequence[str], model: str | None = None) -> dict[str, str]:
    """``KEY=VALUE`` strings as a dict; ``MODEL.KEY=VALUE`` is kept only when ``model`` is MODEL.

    Values stay strings: dgm parses them against the typed config they are meant for.
    """
    out = {}
    for kv in pairs:
        if "=" not in kv:
            raise SystemExit(f"expected [MODEL.]KEY=VALUE, not {kv!r}")
        key, value = kv.split("=", 1)
        owner, _, key = key.rpartition(".")
        if not owner or owner == model:
            out[key] = value
    return out


def with_overrides(
    base: dict[str, Any], pairs: Sequence[str], model: str | None = None
) -> dict[str, Any]:
    """``base`` updated with ``parse_sets(pairs, model)``."""
    return dict(base) | parse_sets(pairs, model)


# ---------------------------------------------------------------------------- the engine's log
def read_log(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl`` (training intervals, validations), in order."""
    text = (Path(run_dir) / "metrics.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def step_rates(log: list[dict[str, Any]]) -> list[float]:
    """The steps per second of every logged training interval."""
    return [r["steps_per_s"] for r in log if r.get("steps_per_s")]


# -------------------------------------------------------------------------------- summaries
def median(values: Sequence[float]) -> float:
    return statistics.median(values) if len(values) else float("nan")


def mean_sem(values: Sequence[float] | torch.Tensor) -> tuple[float, float]:
    """Mean and its standard error ``s / sqrt(n)`` (sample standard deviation; NaN for n < 2)."""
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    if v.numel() < 2:
        return (float(v.mean()) if v.numel() else float("nan")), float("nan")
    return float(v.mean()), float(v.std() / math.sqrt(v.numel()))


# ---------------------------------------------------------------------------------- results
def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def command() -> str:
    """The command line that runs this benchmark, from ``benchmarks/``."""
    script = Path(sys.argv[0]).name
    return " ".join(["python", script, *sys.argv[1:]])


def report(
    name: str, rows: list[dict[str, Any]], columns: list[str], extra: dict | None = None
) -> Path:
    """Print JSON and a Markdown table; save the JSON as ``benchmarks/results/<name>.json``.

    The JSON records the command, the machine and the table's columns, so the table can be
    regenerated from it (``python _common.py table FILE.json``).
    """
    RESULTS.mkdir(exist_ok=True)
    head = {"benchmark": name, "columns": columns, "command": command(), "machine": machine()}
    doc = head | {"rows": rows} | (extra or {})
    text = json.dumps(doc, indent=2)
    print(text)
    print()
    print(markdown_table(rows, columns))
    path = RESULTS / f"{name}.json"
    atomic_write_text(path, text + "\n")
    return path


def table(path: str | Path) -> str:
    """The Markdown table of a results JSON (its ``columns``, else every key of its rows)."""
    doc = json.loads(Path(path).read_text())
    rows = doc.get("rows", [])
    columns = doc.get("columns") or list(dict.fromkeys(k for r in rows for k in r))
    return markdown_table(rows, columns)


def main() -> None:
    ap = argparse.ArgumentParser(description="Print the Markdown table of benchmark results.")
    ap.add_argument("what", choices=["table"])
    ap.add_argument("files", nargs="+", type=Path, help="results JSON files")
    args = ap.parse_args()
    for f in args.files:
        print(f"{f.name}\n\n{table(f)}\n")


if __name__ == "__main__":
    main()
