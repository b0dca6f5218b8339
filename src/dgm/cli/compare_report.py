"""``dgm compare`` and ``dgm report``: their arguments and command functions."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from dgm.core.errors import ConfigError

__all__ = ["add_parsers", "cmd_compare", "cmd_report"]


def add_parsers(sub: Any) -> None:
    """Add the ``compare`` and ``report`` sub-commands to ``dgm``'s sub-parsers."""
    from dgm.compare import PRESETS

    c = sub.add_parser(
        "compare",
        help="train several models with equal budgets, evaluate and rank them, write a report",
    )
    c.add_argument("models", nargs="*", metavar="MODEL", help="registry names (see `dgm list`)")
    c.add_argument(
        "--data", action="append", default=[], help="dataset name or file (repeat for several)"
    )
    c.add_argument("--out", help="comparison directory (default for a preset: compare-PRESET)")
    g = c.add_mutually_exclusive_group()
    g.add_argument("--steps", type=int, help="training steps of every run")
    g.add_argument("--budget-minutes", type=float, help="training minutes of every run")
    c.add_argument("--seeds", type=int, help="seeds per model; figures are mean ± std (default 1)")
    c.add_argument(
        "--grid", action="append", default=[], metavar="KEY=V1,V2",
        help="values to try (a hyperparameter or training option); chosen by validation NLL",
    )  # fmt: skip
    c.add_argument("--cv", type=int, default=0, metavar="K", help="choose by K-fold CV instead")
    c.add_argument("--preset", choices=sorted(PRESETS), help="a ready-made comparison")
    c.add_argument(
        "--train-set", action="append", default=[], metavar="KEY=VALUE",
        help="training option for every run (e.g. batch_size=256)",
    )  # fmt: skip
    c.add_argument("--num-samples", type=int, help="samples for the sample-based metrics")
    c.add_argument("--no-report", action="store_true", help="skip report.html")
    c.add_argument(
        "--data-dir", help="folder with MNIST files (default: $DGM_DATA or ../shared/data)"
    )

    r = sub.add_parser("report", help="one self-contained HTML report of runs or a compare DIR")
    r.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories or compare DIRs")
    r.add_argument("--out", required=True, help="report.html to write")
    r.add_argument("--title", default="dgm report")


def _command_line(args: argparse.Namespace) -> str:
    """The command, rebuilt from its parsed arguments (for the leaderboard's header)."""
    words = ["dgm", "compare", *args.models]
    for flag in ("data", "grid", "train_set"):
        for value in getattr(args, flag):
            words += [f"--{flag.replace('_', '-')}", value]
    for flag in ("out", "steps", "budget_minutes", "seeds", "preset", "num_samples", "data_dir"):
        value = getattr(args, flag)
        if value is not None:
            words += [f"--{flag.replace('_', '-')}", str(value)]
    if args.cv:
        words += ["--cv", str(args.cv)]
    return shlex.join(words)


def cmd_compare(args: argparse.Namespace) -> int:
    from dgm.cli.commands import _pairs
    from dgm.compare import PRESETS, compare

    preset = PRESETS[args.preset] if args.preset else None
    models = list(args.models) or (list(preset.models) if preset else [])
    data = list(args.data) or (list(preset.data) if preset else [])
    if not models:
        raise ConfigError("name the models to compare (e.g. `dgm compare nsf realnvp --data "
                          "8gaussians --out DIR --steps 500`) or give --preset")  # fmt: skip
    if not data:
        raise ConfigError("give --data (a dataset name from `dgm list` or a file) or --preset")
    out = args.out or (f"compare-{args.preset}" if preset else None)
    if not out:
        raise ConfigError("give --out DIR, the directory for the runs and the leaderboard")
    steps, minutes = args.steps, args.budget_minutes
    if steps is None and minutes is None and preset is not None:
        steps, minutes = preset.steps, preset.budget_minutes
    train = (dict(preset.train) if preset else {}) | _pairs(args.train_set, "--train-set")
    eval_options = dict(preset.eval) if preset else {}
    if args.num_samples is not None:
        if args.num_samples < 2:
            raise ConfigError(f"--num-samples must be at least 2, not {args.num_samples}")
        eval_options["num_samples"] = args.num_samples
    from dgm.compare import parse_grid

    doc = compare(
        models,
        data,
        out,
        steps=steps,
        budget_minutes=minutes,
        seeds=args.seeds if args.seeds is not None else (preset.seeds if preset else 1),
        grid=parse_grid(args.grid),
        cv=args.cv,
        train_options=train,
        model_configs=dict(preset.model_config) if preset else {},
        sample_options=dict(preset.sample_options) if preset else {},
        eval_options=eval_options,
        data_dir=args.data_dir,
        missing_ok=preset is not None,
        report=not args.no_report,
        command=_command_line(args),
    )
    print((Path(out) / "leaderboard.md").read_text())
    written = "leaderboard.json, leaderboard.md" + ("" if args.no_report else ", report.html")
    print(f"dgm compare: wrote {written} in {out}", file=sys.stderr)
    return 1 if doc.get("failed") else 0


def cmd_report(args: argparse.Namespace) -> int:
    from dgm.plots.report import gather, write_report

    out = Path(args.out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"--out must end in .html, not {out.suffix or 'no suffix'!r}")
    runs, board = gather(args.runs)
    if not runs and board is None:
        raise ConfigError("no runs to report")
    write_report(runs, out, leaderboard=board, title=args.title)
    print(f"dgm report: {len(runs)} run(s) written to {out}", file=sys.stderr)
    return 0
