"""The ``dgm`` sub-commands. Each takes parsed arguments and returns an exit code."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from dgm import __version__
from dgm.api import TrainedModel, load_run, read_run_config, train
from dgm.cli.conditional import check_run_labels, labels_path, read_labels
from dgm.cli.inputs import ArrayInput
from dgm.cli.options import parse_pairs
from dgm.core.config import yaml_problem
from dgm.core.errors import ConfigError, DgmError
from dgm.core.io import atomic_path, atomic_write_text
from dgm.core.spec import DataSpec
from dgm.data import Binarize, Dequantize, Identity, default_preprocessor
from dgm.data import load as load_dataset
from dgm.data import names as dataset_names
from dgm.eval.ais import estimate_log_z
from dgm.eval.likelihood import (
    ais_estimated,
    bits_per_dim,
    has_likelihood,
    likelihood_of,
    log_likelihood,
)
from dgm.eval.run import METRICS, evaluate, format_table
from dgm.models import entries
from dgm.plots import save_class_rows, save_samples
from dgm.train import distributed as ddp

__all__ = ["cmd_train", "cmd_sample", "cmd_score", "cmd_eval", "cmd_list"]

#: keys of a --config file: those of a run's config.yaml (so that `dgm train --config
#: runs/x/config.yaml` trains that run again), plus `data_dir`
CONFIG_KEYS = ("model", "data", "data_dir", "model_config", "preprocess", "train", "spec",
               "dgm_version")  # fmt: skip
# flag name on the command line -> TrainConfig field
TRAIN_FLAGS = (
    "steps", "epochs", "batch_size", "lr", "seed", "device", "dtype", "precision",
    "eval_every", "patience", "ema", "checkpoint_every", "max_minutes",
)  # fmt: skip


def _read_config_file(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        doc = yaml.safe_load(p.read_text())  # YAML is a superset of JSON
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"config file {path} is not valid YAML or JSON: {yaml_problem(e)}"
        ) from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping with keys {', '.join(CONFIG_KEYS)}"
        )
    unknown = [k for k in doc if k not in CONFIG_KEYS]
    if unknown:
        raise ConfigError(
            f"unknown key {unknown[0]!r} in {path}; valid keys are: {', '.join(CONFIG_KEYS)}"
        )
    for k in ("model_config", "train", "preprocess", "spec"):
        if doc.get(k) is not None and not isinstance(doc[k], dict):
            raise ConfigError(f"{k} in {path} must be a mapping of key: value")
    data = doc.get("data")
    if isinstance(data, dict):  # a run's config.yaml: {name: ..., data_dir: ...}
        if not isinstance(data.get("name"), str) or set(data) - {"name", "data_dir"}:
            raise ConfigError(
                f"data in {path} must be a dataset name or file, or a mapping with keys name "
                "and data_dir (as a run's config.yaml has)"
            )
        doc["data"] = data["name"]
        if doc.get("data_dir") is None:
            doc["data_dir"] = data.get("data_dir")
    elif data is not None and not isinstance(data, str):
        raise ConfigError(f"data in {path} must be a dataset name or file, not {data!r}")
    return doc


def _check_recorded_facts(doc: dict[str, Any], path: str, data: str, data_dir: Any) -> None:
    """A run's config.yaml records the spec of its data and the dgm version that wrote it: the
    spec must still be that of the data (else the data changed since, and the run's model_config
    may not fit it); another version is only noted (configs stay valid, numbers may differ)."""
    if doc.get("spec") is not None:
        recorded = DataSpec.from_dict(doc["spec"])
        actual = load_dataset(data, data_dir=data_dir).spec
        if recorded != actual:
            raise ConfigError(
                f"config file {path} records data {data!r} as {_spec_text(recorded)}, but it "
                f"now loads as {_spec_text(actual)}; point data at the run's data, or delete "
                "spec from the file to train on the data as it is"
            )
    version = doc.get("dgm_version")
    if version is not None and str(version) != __version__:
        print(
            f"dgm: note: {path} was written by dgm {version}, this is dgm {__version__}; its "
            "settings apply, but defaults and results may differ",
            file=sys.stderr,
        )


def _spec_text(spec: DataSpec) -> str:
    levels = f" with {spec.levels} levels" if spec.levels else ""
    classes = f", {spec.num_classes} classes" if spec.num_classes else ", no labels"
    return f"{spec.kind}{levels} of shape {tuple(spec.event_shape)}{classes}"


def _preprocess_config(name: str | None, raw_spec: DataSpec) -> dict | None:

    if name is None:
        return None
    if name == "identity":
        return Identity().to_config()
    if raw_spec.kind != "discrete":
        raise ConfigError(f"--preprocess {name} needs discrete data; this dataset is continuous")
    if name == "dequantize":
        return Dequantize(raw_spec.levels).to_config()
    mode = "static" if name == "binarize-static" else "dynamic"
    return Binarize(mode=mode, levels=raw_spec.levels).to_config()


def cmd_train(args: Any) -> int:

    doc = _read_config_file(args.config) if args.config else {}
    model = args.model or doc.get("model")
    data = args.data or doc.get("data")
    if not args.resume:  # a resumed run has its model and data
        if not model:
            raise ConfigError(
                "name a model to train, e.g. `dgm train made --data digits` (see `dgm list`)"
            )
        if not data:
            raise ConfigError(
                "give --data (a dataset name from `dgm list` or a .npy/.npz/.csv file)"
            )
    if not args.out:
        what = "to resume" if args.resume else "to write"
        raise ConfigError(f"give --out DIR, the run directory {what}")
    data_dir = args.data_dir or doc.get("data_dir")
    saved = read_run_config(Path(args.out)) if args.resume and _has_run(args.out) else None
    if args.config and args.data is None and data:
        _check_recorded_facts(doc, args.config, data, data_dir)
    model_config = dict(doc.get("model_config") or {}) | parse_pairs(args.set, "--set")
    train_opts = dict(doc.get("train") or {}) | parse_pairs(args.train_set, "--train-set")
    for key in TRAIN_FLAGS:
        value = getattr(args, key)
        if value is not None:
            train_opts[key] = value
    if args.steps is not None:
        train_opts.pop("epochs", None)
    if args.epochs is not None:
        train_opts.pop("steps", None)
    if args.no_progress:
        train_opts["progress"] = False
    preprocess = doc.get("preprocess")
    if args.preprocess:
        spec_of = data or (saved["data"]["name"] if saved else "")
        spec_dir = data_dir or (saved["data"].get("data_dir") if saved else None)
        preprocess = _preprocess_config(
            args.preprocess, load_dataset(str(spec_of), data_dir=spec_dir).spec
        )
    out = train(
        model or "",
        data or "",
        args.out,
        model_config=model_config or None,
        data_dir=data_dir,
        preprocess=preprocess,
        resume=args.resume,
        overwrite=args.overwrite,
        **train_opts,
    )
    return _report(out)


def _has_run(out: str) -> bool:
    return (Path(out) / "config.yaml").is_file()


def _report(out: Path) -> int:

    if ddp.is_main():  # under torchrun only rank 0 writes and reports
        print(json.dumps(json.loads((out / "summary.json").read_text()), indent=2))
    return 0


def cmd_sample(args: Any) -> int:

    out = Path(args.out)
    if out.suffix not in (".npy", ".png"):
        raise ConfigError(f"--out must end in .npy or .png, not {out.suffix or 'no suffix'!r}")
    y = read_labels(args.labels, args.n) if args.labels else None
    n = args.n if args.n is not None else (len(y) if y is not None else 64)
    if n < 1:
        raise ConfigError(f"-n must be at least 1, not {n}")
    run = load_run(args.run, device=args.device)
    tm = TrainedModel(run.model, run.preprocessor, run.raw_spec, run.class_counts)
    if args.label is not None:
        y = torch.full((n,), args.label, dtype=torch.long)
    check_run_labels(tm, y, "--labels" if args.labels else "--label")
    options = sample_options(run.model, args)
    torch.manual_seed(args.seed)
    drawn = y is None and tm.num_classes > 0
    s, y = tm.sample_with_labels(n, y, **options)
    s = s.to("cpu")
    bad = int((~torch.isfinite(s.reshape(n, -1))).any(1).sum()) if s.is_floating_point() else 0
    if bad:
        raise DgmError(
            f"the sampler diverged: {bad} of {n} samples hold NaN or infinite values, so nothing "
            f"was written; a smaller step size or another sampler may help (`dgm show "
            f"{tm.name}` lists the sampling options)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        with atomic_path(out, ".npy") as tmp:
            np.save(tmp, s.numpy())
    elif y is not None:
        save_class_rows(s, y, out, levels=run.raw_spec.levels, title=f"{tm.name} samples")
    else:
        save_samples(s, out, levels=run.raw_spec.levels)
    what = f"{n} samples"
    if y is not None:
        with atomic_path(labels_path(out), ".npy") as tmp:
            np.save(tmp, y.numpy())
        how = "drawn from the training class frequencies" if drawn else "as asked"
        what += f" and their labels ({how}, in {labels_path(out)})"
    print(f"wrote {what} to {out}", file=sys.stderr)
    return 0


def sample_options(model: Any, args: Any) -> dict[str, Any]:
    """Sampling options from ``--sampler`` and ``--set``, checked against ``model.SampleOptions``."""
    given = parse_pairs(getattr(args, "set", []) or [], "--set")
    if getattr(args, "sampler", None):
        given["sampler"] = args.sampler
    if getattr(args, "guidance", None) is not None:
        given["guidance"] = args.guidance
    return _checked_sample_options(model, given)


def eval_sample_options(model: Any, pairs: list[str]) -> dict[str, Any]:
    """``dgm eval``'s ``--set`` pairs, checked against ``model.SampleOptions`` (no ``--sampler``
    or single ``--guidance`` there: its ``--guidance`` is a list of weights for the curve)."""
    return _checked_sample_options(model, parse_pairs(pairs or [], "--set"))


def _checked_sample_options(model: Any, given: dict[str, Any]) -> dict[str, Any]:
    """``given`` checked and typed by ``model.sample_config`` (its one-sentence errors)."""
    if not given:
        return {}
    opts = model.sample_config(given)
    return {k: getattr(opts, k) for k in given}


def bound_options(model: Any, args: Any) -> dict[str, Any]:
    """Options for a model's likelihood bound from the command line (``--k``)."""
    if getattr(args, "k", None) is None:
        return {}
    if "k" not in model.bound_options:
        what = (
            "an exact likelihood"
            if model.exact_likelihood
            else f"the bound {model.likelihood_bound!r}"
        )
        raise ConfigError(
            f"--k applies to importance-weighted bounds; model {model.name!r} has {what}"
        )
    if args.k < 1:
        raise ConfigError(f"--k must be at least 1, not {args.k}")
    return {"k": args.k}


def cmd_score(args: Any) -> int:

    run = load_run(args.run, device=args.device)
    model = run.model
    if not has_likelihood(model):
        raise DgmError(
            f"model {model.name!r} has no likelihood, exact, bound or estimate, so it cannot score "
            "inputs; use `dgm eval` for sample-based metrics"
        )
    out = Path(args.out)
    if out.suffix != ".npy":
        raise ConfigError(f"--out must end in .npy, not {out.suffix or 'no suffix'!r}")
    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, not {args.batch_size}")
    inputs = ArrayInput(args.input, run.raw_spec)
    labels = read_labels(args.labels, len(inputs)) if args.labels else None
    check_run_labels(
        TrainedModel(model, run.preprocessor, run.raw_spec, run.class_counts), labels, "--labels"
    )
    options = bound_options(model, args)
    g = torch.Generator(device=model.device).manual_seed(args.seed)
    log_z = None
    if ais_estimated(model):  # one AIS estimate of log Z, shared by every score
        with model.inference():
            log_z = estimate_log_z(model, generator=g)
    lik = likelihood_of(model, run.preprocessor, bound_options=options, log_z=log_z)
    start = 0
    # Scores stream into a memory-mapped temporary file, renamed into place when complete.
    with atomic_path(out, suffix=".npy") as tmp:
        scores = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float64, shape=(len(inputs),))
        batch = args.batch_size or model.inference_batch()
        for x in inputs.batches(max(batch, 1000)):  # read in chunks, scored in batches
            y = None if labels is None else labels[start : start + len(x)]
            ll, _ = log_likelihood(
                model, x, y, preprocessor=run.preprocessor, batch_size=batch, generator=g,
                bound_options=options, log_z=log_z,
            )  # fmt: skip
            values = bits_per_dim(-ll, run.raw_spec.num_dims) if args.bits_per_dim else ll
            scores[start : start + len(x)] = values.numpy()
            start += len(x)
        scores.flush()
        del scores
    quantity = "bits/dim" if args.bits_per_dim else "log p"
    unit = "bits/dim (an NLL)" if args.bits_per_dim else "log-likelihood in nats"
    method = lik.method + (f" ({lik.detail})" if lik.detail else "")
    line = f"dgm: {len(inputs)} scores in {unit} from {method}: {lik.describe(quantity)}"
    if log_z is not None:
        line += f"; every score shares the error of log Z, ± {log_z.stderr:.2g} nats"
    print(f"{line}; written to {out}", file=sys.stderr)
    if log_z is not None and log_z.warning():
        print(f"dgm: warning: {log_z.warning()}", file=sys.stderr)
    return 0


def _metric_list(text: str | None) -> list[str] | None:

    if text is None:
        return None
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    if not names:
        raise ConfigError(f"--metrics takes a comma-separated list of: {','.join(METRICS)}")
    for m in names:
        if m not in METRICS:
            raise ConfigError(
                f"unknown metric {m!r} in --metrics; choose from: {','.join(METRICS)}"
            )
    return names


def _number_list(text: str | None, flag: str, example: str) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(w) for w in text.split(",") if w.strip()]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(w) for w in values):
        raise ConfigError(f"{flag} takes comma-separated numbers such as {example}, not {text!r}")
    return values


def cmd_eval(args: Any) -> int:

    metrics = _metric_list(args.metrics)
    if args.num_samples is not None and args.num_samples < 2:
        raise ConfigError(f"--num-samples must be at least 2, not {args.num_samples}")
    run = load_run(args.run, device=args.device)
    data_dir = args.data_dir or run.config["data"].get("data_dir")
    dataset = load_dataset(run.config["data"]["name"], data_dir=data_dir)
    res = evaluate(
        run.model,
        dataset,
        run.preprocessor,
        metrics=metrics,
        seed=args.seed,
        grid_size=args.grid_size,
        bound_options=bound_options(run.model, args),
        num_samples=args.num_samples,
        classifier=args.classifier,
        data_dir=data_dir,
        sample_options=eval_sample_options(run.model, args.set),
        guidance=_number_list(args.guidance, "--guidance", "0,1,2,4"),
        temperature=_number_list(args.temperature, "--temperature", "1,0.8,0.6"),
        progress=not args.no_progress,
    )
    text = json.dumps(res, indent=2)
    atomic_write_text(Path(args.run) / "eval.json", text + "\n")
    print(format_table(res), file=sys.stderr)
    print(text)
    return 0


#: the data ``dgm list`` describes each model's likelihood on: continuous 2-D points and 8x8 images
#: with 17 levels (``digits``), each through the preprocessing the model gets by default
LIST_DATA = (
    ("2-D points", DataSpec((2,))),
    ("8x8 images", DataSpec((1, 8, 8), "discrete", levels=17)),
)


def likelihood_words(cls: Any, raw: DataSpec) -> str:
    """What a default instance of model class ``cls`` gives as a likelihood on data ``raw``
    (in the words of :func:`dgm.core.likelihood.describe`), or why it does not apply."""
    try:
        pre = default_preprocessor(raw, cls.data_kinds)
        model = cls(pre.spec(raw), cls.Config())
    except DgmError:
        return "not applicable"
    lik = likelihood_of(model, pre)
    if lik.kind == "none":
        return "no likelihood (judged by its samples)"
    method = lik.method + (f" ({lik.detail})" if lik.detail else "")
    return f"{method}: {lik.describe('log p')}"


def cmd_list(args: Any) -> int:

    print("models:")
    for cls in entries():
        print(f"  {cls.name:<16} {cls.family:<15} {cls.description}")
        for what, raw in LIST_DATA:
            print(f"  {'':<16} on {what}: {likelihood_words(cls, raw)}")
    print("datasets:")
    for name, desc in dataset_names():
        print(f"  {name:<16} {desc}")
    return 0
