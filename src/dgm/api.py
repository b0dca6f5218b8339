"""The Python face of dgm: ``dgm.train(...)`` writes a run directory, ``dgm.load(DIR)`` reads it.

A run directory holds ``config.yaml`` (model, data, preprocessing, training options),
``checkpoints/`` (see :mod:`dgm.train.checkpoint`), ``metrics.jsonl``, and when training completes
``model.safetensors`` (the weights to use), ``summary.json`` and the plots. It is never left
half-written: each file is replaced atomically, and an interrupted run resumes from its last
checkpoint.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from dgm import __version__
from dgm.core.config import build_config, config_to_dict
from dgm.core.errors import CheckpointError, ConfigError, DataError, DgmError
from dgm.core.io import atomic_write_text, load_tensors, save_tensors
from dgm.core.model import Model
from dgm.core.spec import DataSpec
from dgm.data import Dataset, default_preprocessor, preprocessor_from_config
from dgm.data import load as load_dataset
from dgm.eval.likelihood import nll as nll_metric
from dgm.eval.summary import summarize
from dgm.models import get as get_model_class
from dgm.plots.run import write_plots
from dgm.train import distributed as ddp
from dgm.train.checkpoint import latest_checkpoint, read_checkpoint
from dgm.train.config import TrainConfig
from dgm.train.engine import Trainer

__all__ = ["train", "load", "load_run", "Run", "RUN_KEYS", "with_train_defaults"]

RUN_KEYS = ("model", "model_config", "data", "preprocess", "train", "spec", "dgm_version")
#: the training options that set how long a run is; the caller's replace all of the model's
RUN_LENGTH = frozenset({"steps", "epochs", "max_minutes"})


@dataclass
class Run:
    """A loaded run: the model (in eval mode), its preprocessing, its config and its dataset name."""

    path: Path
    model: Model
    preprocessor: Any
    config: dict[str, Any]
    raw_spec: DataSpec

    @property
    def data_name(self) -> str:
        return self.config["data"]["name"]


def _is_run(path: Path) -> bool:
    return (path / "config.yaml").is_file()


def read_run_config(path: Path) -> dict[str, Any]:
    cfg_path = path / "config.yaml"
    if not path.is_dir():
        raise CheckpointError(
            f"run directory {path} does not exist; give the --out of a dgm train run"
        )
    if not cfg_path.is_file():
        raise CheckpointError(f"{path} is not a dgm run directory: it has no config.yaml")
    try:
        cfg = yaml.safe_load(cfg_path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError):
        raise CheckpointError(
            f"{cfg_path} is not valid YAML; the run's config is corrupt"
        ) from None
    if not isinstance(cfg, dict) or not {"model", "model_config", "data", "train"} <= set(cfg):
        raise CheckpointError(f"{cfg_path} lacks model, model_config, data or train; it is corrupt")
    return cfg


def _resolve_dataset(data: Any, data_dir: str | Path | None) -> tuple[Dataset, dict[str, Any]]:
    if isinstance(data, Dataset):
        return data, {"name": data.name, "data_dir": None}
    if not isinstance(data, (str, Path)):
        raise DataError(
            f"data must be a dataset name, a file path or a Dataset, not {type(data).__name__}"
        )
    ds = load_dataset(str(data), data_dir=data_dir)
    name = str(data)
    if Path(name).suffix in (".npy", ".npz", ".csv"):
        name = str(Path(name).resolve())
    return ds, {"name": name, "data_dir": None if data_dir is None else str(data_dir)}


def _build(name: str, spec: DataSpec, model_config: dict[str, Any], labels: bool) -> Model:
    cls = get_model_class(name)
    cfg = build_config(cls.Config, model_config, what=f"model {name!r}")
    if getattr(cfg, "conditional", False):  # only models that take labels have this field
        if not labels or spec.num_classes is None:
            raise ConfigError(
                "conditional=true needs a dataset with class labels; this one has none"
            )
    return cls(spec, cfg)


def with_train_defaults(defaults: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """A model's preferred training options (``Model.train_defaults``) under the caller's.

    A run length the caller gives (``steps``, ``epochs`` or ``max_minutes``) replaces all of the
    model's; when a time budget alone then sets the length, the model's decaying ``schedule``
    decays over the budget (``schedule_clock="time"``) unless the caller chose a schedule.
    """
    defaults = dict(defaults)
    if RUN_LENGTH & set(options):
        for key in RUN_LENGTH:
            defaults.pop(key, None)
    merged = defaults | options
    if (
        "schedule" in defaults
        and not {"schedule", "schedule_clock"} & set(options)
        and merged.get("steps") is None
        and merged.get("epochs") is None
        and merged.get("max_minutes")
    ):
        merged["schedule_clock"] = "time"
    return merged


def train(
    model: str | Model,
    data: Any,
    out: str | Path = "runs/latest",
    *,
    model_config: dict[str, Any] | None = None,
    data_dir: str | Path | None = None,
    preprocess: dict[str, Any] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    **train_options: Any,
) -> Path:
    """Train ``model`` on ``data`` and write a complete run directory; return its path.

    Args:
        model: a registry name (``"made"``, ``"nsf"``, ...) or a built :class:`Model`.
        data: a dataset name (``dgm.data.names()``), a ``.npy/.npz/.csv`` path, or a Dataset.
        out: run directory. An existing run is an error unless ``resume`` or ``overwrite``.
        model_config: hyperparameters of the model (checked against its ``Config``).
        preprocess: a preprocessor config (``{"name": "binarize", ...}``); by default discrete
            data is dequantized for continuous models and passed as is to discrete ones.
        resume: continue the run in ``out`` from its last good checkpoint.
        train_options: fields of :class:`~dgm.train.config.TrainConfig` (steps, batch_size, lr, ...).

    >>> import dgm, tempfile
    >>> d = dgm.train("nsf", "8gaussians", tempfile.mkdtemp(), steps=5, model_config={"num_layers": 2})
    >>> sorted(p.name for p in d.iterdir())[:3]
    ['checkpoints', 'config.yaml', 'metrics.jsonl']
    """
    out = Path(out)
    rank, _ = ddp.setup(str(train_options.get("device", "cpu")))
    if resume:
        if not _is_run(out):
            raise CheckpointError(f"cannot resume: {out} holds no dgm run (no config.yaml)")
        saved = read_run_config(out)
        tcfg_dict = dict(saved["train"])
        if "steps" in train_options or "epochs" in train_options:
            tcfg_dict.update(steps=None, epochs=None)
        tcfg_dict.update(train_options)
        saved["train"] = config_to_dict(build_config(TrainConfig, tcfg_dict, what="training"))
        model_name, model_config = saved["model"], saved["model_config"]
        data, data_dir = saved["data"]["name"], saved["data"].get("data_dir")
        preprocess = saved["preprocess"]
        cfg_doc = saved
    else:
        if out.exists() and any(out.iterdir()):
            if not overwrite:
                what = "a dgm run" if _is_run(out) else "files"
                raise DgmError(
                    f"{out} already holds {what}; pass --resume to continue it, --overwrite to "
                    "replace it, or choose another --out"
                )
            if not _is_run(out):
                raise DgmError(f"refusing to overwrite {out}: it is not a dgm run directory")
            ddp.barrier()  # every rank has checked before rank 0 deletes
            if rank == 0:
                shutil.rmtree(out)
        cfg_doc = None
        model_name = model if isinstance(model, str) else model.name
        cls_ = type(model) if isinstance(model, Model) else get_model_class(model_name)
        train_options = with_train_defaults(cls_.train_defaults, train_options)

    tcfg = build_config(
        TrainConfig, cfg_doc["train"] if cfg_doc else train_options, what="training"
    )
    dataset, data_entry = _resolve_dataset(data, data_dir)
    if isinstance(model, Model) and not resume:
        cls = type(model)
        pre = (
            preprocessor_from_config(preprocess)
            if preprocess
            else default_preprocessor(dataset.spec, cls.data_kinds)
        )
        built = model
        model_config = config_to_dict(model.config)
    else:
        cls = get_model_class(model_name)
        pre = (
            preprocessor_from_config(preprocess)
            if preprocess
            else default_preprocessor(dataset.spec, cls.data_kinds)
        )
        torch.manual_seed(tcfg.seed)
        built = _build(
            model_name, pre.spec(dataset.spec), model_config or {}, dataset.train_labels is not None
        )
        model_config = config_to_dict(built.config)
    if built.spec != pre.spec(dataset.spec):
        raise DataError(
            f"model was built for {built.spec} but the data (after preprocessing) is "
            f"{pre.spec(dataset.spec)}; build it with dgm.data.load(...).spec"
        )
    if cfg_doc is None:
        cfg_doc = {
            "model": model_name,
            "model_config": model_config,
            "data": data_entry,
            "preprocess": pre.to_config(),
            "train": config_to_dict(tcfg),
            "spec": dataset.spec.to_dict(),
            "dgm_version": __version__,
        }
    ddp.barrier()  # every rank has checked `out` before rank 0 writes into it
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg_doc, sort_keys=False))

    trainer = Trainer(
        built,
        dataset.train,
        train_y=dataset.train_labels,
        val_x=dataset.val,
        val_y=dataset.val_labels,
        val_metric=nll_metric,
        preprocessor=pre,
        config=tcfg,
        out=out,
    )
    if resume:
        for warning in trainer.resume():
            print(f"dgm: warning: skipped a checkpoint: {warning}", file=sys.stderr, flush=True)
    info = trainer.fit()
    if rank != 0:
        return out
    built.load_state_dict(trainer.final_weights())
    save_tensors(built.state_dict(), out / "model.safetensors")
    summary = (
        summarize(built, dataset, pre, seed=tcfg.seed)
        | info
        | {"model": model_name, "data": data_entry["name"]}
    )
    write_plots(out, built, pre, dataset, seed=tcfg.seed)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return out


def load_run(path: str | Path, *, device: str = "cpu") -> Run:
    """Load a run directory: the model with its final (or newest checkpointed) weights."""
    path = Path(path)
    cfg = read_run_config(path)
    try:
        raw_spec = DataSpec.from_dict(cfg["spec"])
        pre = preprocessor_from_config(cfg["preprocess"])
        model = _build(cfg["model"], pre.spec(raw_spec), cfg["model_config"], True)
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{path / 'config.yaml'} is incomplete or corrupt ({e})") from None
    dtype = getattr(torch, cfg["train"].get("dtype", "float32"))
    final = path / "model.safetensors"
    if final.is_file():
        weights = load_tensors(final)
    else:
        ckpt, skipped = latest_checkpoint(path / "checkpoints")
        if ckpt is None:
            why = f" ({skipped[0]})" if skipped else ""
            raise CheckpointError(
                f"{path} has no trained weights yet{why}; train or resume it first"
            )
        files, _ = read_checkpoint(ckpt)
        weights = files.get("ema", files["model"])
    try:
        model.load_state_dict(weights)
    except RuntimeError:
        raise CheckpointError(
            f"the weights in {path} do not fit model {cfg['model']!r} as configured; "
            "the run is corrupt or from another version"
        ) from None
    model.to(device, dtype).eval()
    return Run(path=path, model=model, preprocessor=pre, config=cfg, raw_spec=raw_spec)


def load(path: str | Path, *, device: str = "cpu") -> Model:
    """Load the trained model of a run directory, in eval mode.

    The model's data preprocessing is attached as ``model.preprocessor`` (map raw data with
    ``model.preprocessor(x)``; map samples back with ``model.preprocessor.inverse(s)``).
    """
    run = load_run(path, device=device)
    run.model.preprocessor = run.preprocessor
    return run.model
