"""``dgm compare`` and ``dgm report``: their command functions (the arguments are in
:mod:`dgm.cli.main`). Both are thin: they call the public functions of :mod:`dgm.compare`."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from dgm.cli.options import parse_pairs
from dgm.compare import PRESETS, compare, gather, parse_grid, write_report
from dgm.core.errors import ConfigError

__all__ = ["cmd_compare", "cmd_report", "command_line"]


def command_line(args: argparse.Namespace) -> str:
    """The command, rebuilt from its parsed arguments (for the leaderboard's header)."""
    words = ["dgm", "compare", *args.models]
    for flag in ("data", "grid", "train_set"):
        for value in getattr(args, flag):
            words += [f"--{flag.replace('_', '-')}", value]
    for flag in ("out", "steps", "max_minutes", "seeds", "preset", "num_samples", "data_dir"):
        value = getattr(args, flag)
        if value is not None:
            words += [f"--{flag.replace('_', '-')}", str(value)]
    if args.cv:
        words += ["--cv", str(args.cv)]
    if args.executor != "local":
        words += ["--executor", args.executor]
        for flag in ("address", "jobs"):
            if getattr(args, flag) is not None:
                words += [f"--{flag}", str(getattr(args, flag))]
    return shlex.join(words)


def cmd_compare(args: argparse.Namespace) -> int:
    if args.preset is not None and args.preset not in PRESETS:
        raise ConfigError(f"unknown preset {args.preset!r}; presets: {', '.join(sorted(PRESETS))}")
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
    steps, minutes = args.steps, args.max_minutes
    if steps is None and minutes is None and preset is not None:
        steps, minutes = preset.steps, preset.max_minutes
    train = (dict(preset.train) if preset else {}) | parse_pairs(args.train_set, "--train-set")
    eval_options = dict(preset.eval) if preset else {}
    if args.num_samples is not None:
        if args.num_samples < 2:
            raise ConfigError(f"--num-samples must be at least 2, not {args.num_samples}")
        eval_options["num_samples"] = args.num_samples
    doc = compare(
        models,
        data,
        out,
        steps=steps,
        max_minutes=minutes,
        seeds=args.seeds if args.seeds is not None else (preset.seeds if preset else 1),
        grid=parse_grid(args.grid),
        cv=args.cv,
        train_options=train,
        model_configs=dict(preset.model_config) if preset else {},
        sample_options=dict(preset.sample_options) if preset else {},
        eval_options=eval_options,
        data_dir=args.data_dir,
        report=not args.no_report,
        command=command_line(args),
        progress=not args.no_progress,
        executor=args.executor,
        address=args.address,
        jobs=args.jobs,
        cpus_per_run=args.cpus_per_run,
    )
    print((Path(out) / "leaderboard.md").read_text())
    written = "leaderboard.json, leaderboard.md" + ("" if args.no_report else ", report.html")
    print(f"dgm compare: wrote {written} in {out}", file=sys.stderr)
    return 1 if doc.get("failed") else 0


def cmd_report(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"--out must end in .html, not {out.suffix or 'no suffix'!r}")
    runs, board = gather(args.runs)
    if not runs and board is None:
        raise ConfigError("no runs to report")
    write_report(runs, out, leaderboard=board, title=args.title, progress=not args.no_progress)
    print(f"dgm report: {len(runs)} run(s) written to {out}", file=sys.stderr)
    return 0
