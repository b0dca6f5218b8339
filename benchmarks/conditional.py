"""Conditional accuracy of class-conditional models on the 8x8 digits or MNIST (issue 27).

Each model is trained with ``conditional=true`` for a wall-clock budget, then judged by
``dgm eval``'s conditional metric: the digits feature classifier (the one FID uses) classifies
``--num-samples`` samples split evenly over the ten labels; accuracy with its binomial standard
error, the per-class FID (mean over classes) and the pooled FID, all estimates. With
``--guidance W1 W2 ...`` a model that samples with classifier-free guidance also gets the curve of
accuracy and pooled FID over those weights (the same seed at each weight), kept in the JSON and
printed as a second table. With ``--sample-sets`` each set of sampling options (``default``: the
model's own samples; e.g. ``temperature=0.7`` for a flow, ``output=mean`` for a VAE, which are not
samples of ``p(x)``) is judged on the same trained model, one row each. An EBM that tilts one
Gaussian per class (``noise=classes``, its conditional default) gets a row for those Gaussians
alone (the network at zero, the same sampler): the reference its tilt is judged against. A
model that also classifies (the EBM's ``p(y | x)``) has its test accuracy in each row
(``model_test_accuracy``, with its standard error).

    OMP_NUM_THREADS=1 python benchmarks/conditional.py --models made gated-pixelcnn vae --minutes 3
    OMP_NUM_THREADS=1 python benchmarks/conditional.py --models flow-matching --minutes 15 \
        --guidance 0 0.5 1 2 4 --tag _fm_guided
    OMP_NUM_THREADS=1 DGM_DATA=../../shared/data python benchmarks/conditional.py --data mnist \
        --models flow-matching --minutes 30 --num-samples 500 --guidance 0 0.5
    OMP_NUM_THREADS=1 DGM_DATA=../../shared/data python benchmarks/conditional.py --data mnist \
        --models glow --minutes 30 --num-samples 500 --sample-sets default temperature=0.7
    OMP_NUM_THREADS=1 DGM_DATA=../../shared/data python benchmarks/conditional.py --data mnist \
        --models made --preprocess binarize-static --minutes 30 --num-samples 500

The results file is ``conditional_<data><tag>.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from pathlib import Path

import torch

import dgm.data
from _common import markdown_table, parse_sets, report
from dgm.api import load_run, train
from dgm.data.preprocess import Binarize
from dgm.eval.run import evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=["digits", "mnist"], default="digits")
    ap.add_argument("--models", nargs="+", default=["made", "gated-pixelcnn", "vae"])
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--num-samples", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tag", default="")
    ap.add_argument(
        "--guidance",
        nargs="*",
        type=float,
        default=[],
        help="guidance weights of the accuracy-FID curve (guided models)",
    )
    ap.add_argument(
        "--sample-sets",
        nargs="+",
        default=["default"],
        help="sampling options judged one after the other: 'default' or "
        "[MODEL.]KEY=VALUE[,[MODEL.]KEY=VALUE] (a set naming no key of a model is skipped for it)",
    )
    ap.add_argument(
        "--preprocess",
        choices=["binarize-static", "binarize"],
        default=None,
        help="binarize the images (MNIST: the autoregressive models' usual data); samples are "
        "judged mapped back to 0 and the top level",
    )
    ap.add_argument("--runs", default=None, help="keep the runs in RUNS/MODEL (default: discarded)")
    ap.add_argument(
        "--reuse", action="store_true", help="judge the runs already in --runs, do not train"
    )
    ap.add_argument("--set", action="append", default=[], help="[MODEL.]KEY=VALUE model option")
    ap.add_argument("--train-set", action="append", default=[], help="[MODEL.]KEY=VALUE")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dataset = dgm.data.load(args.data)
    rows = []
    if args.reuse and not args.runs:
        raise SystemExit("--reuse needs --runs, the directory of the runs to judge")
    for name in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(args.runs or tmp) / name
            model_cfg = {"conditional": True, **parse_sets(args.set, name)}
            train_cfg = parse_sets(args.train_set, name)
            pre = None
            if args.preprocess:
                mode = "static" if args.preprocess == "binarize-static" else "dynamic"
                pre = Binarize(mode=mode, levels=dataset.spec.levels).to_config()
            if not args.reuse:
                train(name, args.data, out, model_config=model_cfg, max_minutes=args.minutes,
                      progress=False, preprocess=pre, **train_cfg)  # fmt: skip
            summary = json.loads((out / "summary.json").read_text())
            run = load_run(out)
            guided = bool(args.guidance) and "guidance" in getattr(
                run.model.SampleOptions, "__dataclass_fields__", {}
            )
            for spec in args.sample_sets:
                given = {} if spec == "default" else parse_sets(spec.split(","), name)
                if spec != "default" and not given:
                    continue
                opts = run.model.sample_config(given) if given else None
                sample_options = {k: getattr(opts, k) for k in given}
                res = evaluate(run.model, dataset, run.preprocessor, metrics=["conditional"],
                               num_samples=args.num_samples, seed=0,
                               sample_options=sample_options or None,
                               guidance=args.guidance if guided else None)  # fmt: skip
                rows.append(row(name, args, summary, res, model_cfg, train_cfg, sample_options))
                print(rows[-1], flush=True)
            if getattr(run.model, "class_base", False):
                # the reference an EBM's tilt is judged against: its per-class Gaussians alone
                base = copy.deepcopy(run.model)
                for p in base.energy_net.parameters():
                    torch.nn.init.zeros_(p)
                res = evaluate(base, dataset, run.preprocessor, metrics=["conditional"],
                               num_samples=args.num_samples, seed=0)  # fmt: skip
                label = {"reference": "base alone (network at zero)"}
                rows.append(row(name, args, summary, res, model_cfg, train_cfg, label))
                print(rows[-1], flush=True)
    cols = ["model", "sample_options", "minutes", "steps", "accuracy", "accuracy_stderr",
            "fid_per_class_mean", "fid_pooled", "classifier_val_accuracy"]  # fmt: skip
    curve = [
        {"model": r["model"], **{k: round(v, 4) for k, v in p.items()}}
        for r in rows
        for p in r.get("guidance_curve") or []
    ]
    report(
        f"conditional_{args.data}{args.tag}",
        rows,
        cols,
        extra={"guidance": curve} if curve else None,
    )
    if curve:
        print()
        print(markdown_table(curve, ["model", "guidance", "accuracy", "accuracy_stderr", "fid"]))


def row(name, args, summary, res, model_cfg, train_cfg, sample_options) -> dict:
    """One result row: a model's conditional metrics under one set of sampling options."""
    return {
        "model": name,
        "sample_options": ",".join(f"{k}={v}" for k, v in sample_options.items()) or "default",
        "minutes": args.minutes,
        "steps": summary.get("steps"),
        "accuracy": round(res["cond_accuracy"], 4),
        "accuracy_stderr": round(res["cond_accuracy_stderr"], 4),
        "fid_per_class_mean": round(res["cond_fid_class_mean"], 2),
        "fid_pooled": round(res["cond_fid"], 2),
        "classifier_val_accuracy": res.get("features_val_accuracy"),
        "samples_per_class": res["cond_samples_per_class"],
        "accuracy_per_class": [round(a, 3) for a in res["cond_accuracy_per_class"]],
        "model_config": model_cfg,
        "train_config": train_cfg,
        "preprocess": args.preprocess,
        "guidance_curve": res.get("guidance_curve"),
        "model_test_accuracy": res.get("cond_model_test_accuracy"),
        "model_test_accuracy_stderr": res.get("cond_model_test_accuracy_stderr"),
    }


if __name__ == "__main__":
    main()
