"""Argument parsing and error handling for ``dgm``.

Every user error is one sentence on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from dgm import __version__
from dgm.cli import malloc
from dgm.core.errors import DgmError

__all__ = ["main", "build_parser"]


class UsageError(DgmError):
    """A bad command-line argument."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # noqa: D401 - argparse hook
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir", help="folder with MNIST files (default: $DGM_DATA or ../shared/data)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dgm", description="Deep generative models behind one contract.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    t = sub.add_parser("train", help="train a model and write a run directory")
    t.add_argument("model", nargs="?", help="registry name, e.g. made, nsf (see `dgm list`)")
    t.add_argument("--data", help="dataset name or a .npy/.npz/.csv file")
    t.add_argument("--out", help="run directory to write")
    g = t.add_mutually_exclusive_group()
    g.add_argument("--steps", type=int)
    g.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--seed", type=int)
    t.add_argument("--device", help="cpu (default) or cuda")
    t.add_argument(
        "--dtype", help="float32 (default) or float64: the dtype of the weights, data and maths"
    )
    t.add_argument(
        "--precision",
        choices=["full", "bf16-mixed", "auto"],
        help="bf16-mixed: the training forward pass in bfloat16 (torch.autocast), float32 "
        "weights; full (default): all in --dtype; auto: bf16-mixed on a CPU with AMX or "
        "AVX-512 bfloat16 instructions or a bfloat16 GPU, full elsewhere",
    )
    t.add_argument("--eval-every", type=int, help="validation NLL every N steps")
    t.add_argument("--patience", type=int, help="early stopping after N evaluations without gain")
    t.add_argument("--ema", type=float, help="EMA decay of the weights, e.g. 0.999")
    t.add_argument(
        "--max-minutes",
        type=float,
        help="the run's budget in minutes: training stops after 80%% of it (without "
        "--steps/--epochs it trains until then), the summary and figures fit in the rest",
    )
    t.add_argument("--checkpoint-every", type=int)
    t.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="model hyperparameter"
    )
    t.add_argument(
        "--train-set", action="append", default=[], metavar="KEY=VALUE", help="training option"
    )
    t.add_argument(
        "--preprocess",
        choices=["identity", "dequantize", "binarize", "binarize-static"],
        help="how raw data reaches the model (default: dequantize discrete data for continuous models)",
    )
    t.add_argument("--config", help="YAML or JSON file with model, data, model_config, train, ...")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    t.add_argument(
        "--no-progress", action="store_true", help="no progress bar or progress lines on stderr"
    )
    t.add_argument(
        "--tensorboard", action="store_true", help="also log to TensorBoard (DIR/tensorboard)"
    )
    _add_common(t)

    s = sub.add_parser("sample", help="draw samples from a trained run")
    s.add_argument("run", help="run directory")
    s.add_argument(
        "-n", type=int, help="number of samples (default 64, or one per label of --labels)"
    )
    s.add_argument("--out", required=True, help="FILE.npy or FILE.png")
    s.add_argument("--sampler", help="sampler of the model, e.g. fast|naive, ddim|ancestral")
    lab = s.add_mutually_exclusive_group()
    lab.add_argument("--label", type=int, help="class of every sample (a conditional model)")
    lab.add_argument("--labels", metavar="FILE.npy", help="one class label per sample")
    s.add_argument(
        "--guidance", type=float, metavar="W", help="guidance weight (the sampling option guidance)"
    )
    s.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="sampling option"
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="cpu")

    sc = sub.add_parser("score", help="log-likelihood of each row of a file (the anomaly score)")
    sc.add_argument("run", help="run directory")
    sc.add_argument("input", help="INPUT.npy (or .csv) with one example per row")
    sc.add_argument("--out", required=True, help="OUT.npy for the scores")
    sc.add_argument("--labels", metavar="Y.npy", help="class of each row: scores are log p(x | y)")
    sc.add_argument("--bits-per-dim", action="store_true", help="report bits/dim (NLL) instead")
    sc.add_argument("--k", type=int, help="importance samples for models with an IWAE bound")
    sc.add_argument(
        "--batch-size", type=int,
        help="examples per forward pass (default: by their size, 41 MNIST images, 1000 points)",
    )  # fmt: skip
    sc.add_argument("--seed", type=int, default=0)
    sc.add_argument("--device", default="cpu")

    e = sub.add_parser(
        "eval",
        help="every metric that applies (NLL, KL, C2ST, MMD, FID, modes, anomaly) -> eval.json",
    )
    e.add_argument("run", help="run directory")
    e.add_argument(
        "--metrics",
        metavar="LIST",
        help="comma-separated subset of c2st,mmd,fid,kid,prd,modes,kl,nll,anomaly,conditional "
        "(default: all that apply; asking for one that does not apply is an error)",
    )
    e.add_argument(
        "--num-samples", type=int, help="model samples for sample-based metrics (default 2000)"
    )
    e.add_argument(
        "--classifier", choices=["mlp", "logistic", "knn"], default="mlp", help="C2ST classifier"
    )
    e.add_argument(
        "--guidance", metavar="W1,W2,...",
        help="guidance weights: conditional accuracy and FID at each (a guided conditional model)",
    )  # fmt: skip
    e.add_argument(
        "--temperature", metavar="T1,T2,...",
        help="sampling temperatures: conditional accuracy and FID at each (a conditional flow)",
    )  # fmt: skip
    e.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="sampling option for every sample-based metric (e.g. temperature=0.6, steps=50)",
    )  # fmt: skip
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--grid-size", type=int, default=300)
    e.add_argument("--k", type=int, help="importance samples for models with an IWAE bound")
    e.add_argument("--device", default="cpu")
    e.add_argument(
        "--no-progress", action="store_true", help="no progress bar or progress lines on stderr"
    )
    _add_common(e)

    li = sub.add_parser("list", help="models and datasets, one line each (with MODEL: dgm show)")
    li.add_argument("model", nargs="?", help="a model: every option of it, as `dgm show MODEL`")
    sh = sub.add_parser(
        "show", help="every option of a model: default, type and meaning; its samplers' options"
    )
    sh.add_argument("model", help="registry name (see `dgm list`)")

    cp = sub.add_parser(
        "complete", help="fill in the missing entries of partly observed data (inpainting)"
    )
    cp.add_argument(
        "run", help="run directory of a model that completes (made, pixelcnn, ddpm, ...)"
    )
    cp.add_argument("input", help="IMAGES.npy: raw data, one example per row")
    cp.add_argument(
        "--mask", required=True, metavar="MASK.npy",
        help="1 = observed, 0 = to fill in; the shape of IMAGES.npy or of one example",
    )  # fmt: skip
    cp.add_argument("--out", required=True, help="OUT.npy for the completed data")
    cp.add_argument("--labels", metavar="Y.npy", help="class of each row (a conditional model)")
    cp.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="sampling option"
    )
    cp.add_argument("--seed", type=int, default=0)
    cp.add_argument("--device", default="cpu")

    co = sub.add_parser("compress", help="lossless coding of discrete data with an AR model")
    co.add_argument("run", help="run directory of an autoregressive model (pixelcnn, rnn, ...)")
    co.add_argument("input", help="INPUT.npy with raw integer data, one example per row")
    co.add_argument("out", help="OUT.bin to write")
    de = sub.add_parser("decompress", help="restore data written by `dgm compress`")
    de.add_argument("run", help="the run directory that compressed the file")
    de.add_argument("input", help="the .bin file from `dgm compress`")
    de.add_argument("out", help="RESTORED.npy to write")

    _add_compare_report(sub)
    return parser


def _add_compare_report(sub: argparse._SubParsersAction) -> None:
    """The ``compare`` and ``report`` sub-commands (run by :mod:`dgm.cli.compare_report`)."""
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
    g.add_argument(
        "--max-minutes", type=float, metavar="M",
        help="minutes of every run (80%% training, then its summary and figures)",
    )  # fmt: skip
    c.add_argument("--seeds", type=int, help="seeds per model; figures are mean ± std (default 1)")
    c.add_argument(
        "--grid", action="append", default=[], metavar="KEY=V1,V2",
        help="values to try (a hyperparameter or training option); chosen by validation NLL",
    )  # fmt: skip
    c.add_argument("--cv", type=int, default=0, metavar="K", help="choose by K-fold CV instead")
    c.add_argument("--preset", metavar="NAME", help="a ready-made comparison (dgm.compare.PRESETS)")
    c.add_argument(
        "--train-set", action="append", default=[], metavar="KEY=VALUE",
        help="training option for every run (e.g. batch_size=256)",
    )  # fmt: skip
    c.add_argument("--num-samples", type=int, help="samples for the sample-based metrics")
    c.add_argument("--no-report", action="store_true", help="skip report.html")
    c.add_argument(
        "--executor", choices=("local", "ray"), default="local",
        help="where the runs happen: one after the other here (default), or as Ray tasks",
    )  # fmt: skip
    c.add_argument(
        "--address", metavar="ADDR",
        help="Ray cluster to use (auto: the running one; default: start a local Ray)",
    )  # fmt: skip
    c.add_argument("--jobs", type=int, metavar="N", help="at most N runs at a time (Ray)")
    c.add_argument(
        "--cpus-per-run", type=float, default=1, metavar="C",
        help="CPUs (and torch threads) of each Ray task (default 1)",
    )  # fmt: skip
    c.add_argument(
        "--no-progress", action="store_true", help="no progress bar or progress lines on stderr"
    )
    _add_common(c)

    r = sub.add_parser("report", help="one self-contained HTML report of runs or a compare DIR")
    r.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories or compare DIRs")
    r.add_argument("--out", required=True, help="report.html to write")
    r.add_argument("--title", default="dgm report")
    r.add_argument(
        "--no-progress", action="store_true", help="no progress bar or progress lines on stderr"
    )


# each command's module is imported when that command runs: `dgm --help` and `dgm --version`
# load neither torch nor matplotlib
_COMMAND_MODULES = {"compress": "coding", "decompress": "coding", "compare": "compare_report",
                    "complete": "conditional",
                    "report": "compare_report", "show": "show"}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    malloc.tune()  # feature maps reused, not page-faulted in anew every batch (dgm.cli.malloc)
    try:
        args = build_parser().parse_args(argv)
        if args.version:
            print(__version__)
            return 0
        if args.command is None:
            build_parser().print_help()
            return 0
        if args.command == "list" and args.model:  # dgm list MODEL is dgm show MODEL
            args.command = "show"
        if getattr(args, "tensorboard", False):  # dgm train --tensorboard: a training option
            args.train_set.append("tensorboard=true")
        module = importlib.import_module(
            f"dgm.cli.{_COMMAND_MODULES.get(args.command, 'commands')}"
        )
        return getattr(module, f"cmd_{args.command}")(args)
    except DgmError as e:
        print(f"dgm: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (`dgm list | head -1`): what it read is all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("dgm: interrupted; a training run continues with --resume", file=sys.stderr)
        return 130
    except OSError as e:
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        print(f"dgm: error: cannot access{where}: {e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
