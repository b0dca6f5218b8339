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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor, nn

from dgm import __version__
from dgm.core.config import build_config, config_to_dict, translate_renamed, yaml_problem
from dgm.core.errors import CheckpointError, ConfigError, DataError, DgmError
from dgm.core.io import atomic_path, atomic_write_text, load_tensors, save_tensors
from dgm.core.likelihood import Likelihood
from dgm.core.model import Model, check_labels
from dgm.core.progress import Deadline, Progress
from dgm.core.protocols import Completer, ConditionalModel
from dgm.core.spec import DataSpec
from dgm.data import (
    Dataset,
    Preprocessor,
    default_preprocessor,
    from_arrays,
    preprocessor_from_config,
)
from dgm.data import load as load_dataset
from dgm.data.dataset import SPLITS
from dgm.eval.likelihood import nll as nll_metric
from dgm.eval.summary import summarize
from dgm.models import get as get_model_class
from dgm.plots.run import write_plots
from dgm.train import distributed as ddp
from dgm.train.checkpoint import latest_checkpoint, read_checkpoint
from dgm.train.config import TRAINING_SHARE, TrainConfig
from dgm.train.engine import Trainer

__all__ = [
    "train", "load", "load_run", "Run", "RUN_KEYS", "RESUMABLE", "TrainedModel",
    "with_train_defaults", "train_defaults_for", "CLASSES_FILE",
]  # fmt: skip

RUN_KEYS = ("model", "model_config", "data", "preprocess", "train", "spec", "dgm_version")
#: the training options that set how long a run is; the caller's replace all of the model's
RUN_LENGTH = frozenset({"steps", "epochs", "max_minutes"})

#: the clock of a run's time budget (tests give a fake one)
_clock: Callable[[], float] = time.perf_counter

#: training options a resumed run may change: how long it trains, where and in what precision,
#: and what it logs and keeps; the others (batch size, learning rate, schedule, seed, ...) define
#: the optimisation that the checkpoints continue, so changing them is an error
RESUMABLE = frozenset(
    {"steps", "epochs", "max_minutes", "device", "precision", "progress", "tensorboard",
     "log_every", "checkpoint_every", "keep_checkpoints", "max_bad_steps", "compile"}
)  # fmt: skip


@dataclass
class Run:
    """A loaded run: the model (in eval mode), its preprocessing, its config and its dataset name;
    ``class_counts`` the number of training examples of each class (``None`` without labels)."""

    path: Path
    model: Model
    preprocessor: Any
    config: dict[str, Any]
    raw_spec: DataSpec
    class_counts: list[int] | None = None

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
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"{cfg_path} is not valid YAML ({yaml_problem(e)}); the run's config is corrupt"
        ) from None
    if not isinstance(cfg, dict) or not {"model", "model_config", "data", "train"} <= set(cfg):
        raise CheckpointError(f"{cfg_path} lacks model, model_config, data or train; it is corrupt")
    if isinstance(cfg["model_config"], dict) and isinstance(cfg["model"], str):
        try:
            cls = get_model_class(cfg["model"])
        except ConfigError:
            return cfg  # an unknown model is reported where the model is built
        # a run written before a key was renamed keeps its old names: read them as the new ones
        cfg["model_config"] = translate_renamed(cls.Config, cfg["model_config"])
    return cfg


def _check_preprocess_kind(cls: type[Model], pre: Preprocessor, raw_spec: DataSpec) -> None:
    """One sentence when the preprocessing gives data of a kind the model does not take (e.g.
    ``--preprocess binarize`` for a flow), naming the way out."""
    kind = pre.spec(raw_spec).kind
    if kind in cls.data_kinds:
        return
    kinds = " or ".join(sorted(cls.data_kinds))
    try:
        default = default_preprocessor(raw_spec, cls.data_kinds).name
        fallback = f"leave --preprocess out (its default here is {default})"
    except DgmError:
        fallback = "choose another preprocessing"
    raise ConfigError(
        f"--preprocess {pre.name} gives {kind} data, but model {cls.name!r} takes {kinds} data; "
        f"{fallback} or choose a model that takes {kind} data"
    )


#: where a run on labelled data keeps its training class counts ``{"class_counts": [...]}``: a
#: conditional model asked for samples without labels draws them from these frequencies
CLASSES_FILE = "classes.json"


def _class_counts(labels: Tensor | None, num_classes: int | None) -> list[int] | None:
    if labels is None or not num_classes:
        return None
    return torch.bincount(labels.long().flatten(), minlength=num_classes).tolist()


def read_class_counts(path: Path) -> list[int] | None:
    """The training class counts saved in run ``path`` (``None`` if the run has none)."""
    f = path / CLASSES_FILE
    if not f.is_file():
        return None
    try:
        counts = json.loads(f.read_text())["class_counts"]
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"{f} is not valid JSON with class_counts; it is corrupt") from None
    if not isinstance(counts, list) or not all(isinstance(c, int) and c >= 0 for c in counts):
        raise CheckpointError(f"{f} must list one count >= 0 per class; it is corrupt")
    return counts


#: where a run trained on in-memory arrays keeps them, so that ``dgm eval``/``--resume`` reload them
ARRAYS_FILE = "data.npz"


def _resolve_dataset(
    data: Any, data_dir: str | Path | None, out: Path
) -> tuple[Dataset, dict[str, Any]]:
    """The dataset ``train`` was given, and the ``data`` entry of ``config.yaml`` that reloads it.

    In-memory data (a tensor or array, or a pair ``(x, y)`` with labels) is split like a ``.npy``
    file (:func:`dgm.data.from_arrays`) and named after ``out/data.npz``, where :func:`train`
    saves the splits (see :func:`_save_arrays`)."""
    if isinstance(data, Dataset):
        return data, {"name": data.name, "data_dir": None}
    arrays = (torch.Tensor, np.ndarray)
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], arrays):
        x, y = data
    elif isinstance(data, arrays):
        x, y = data, None
    elif isinstance(data, (str, Path)):
        ds = load_dataset(str(data), data_dir=data_dir)
        name = str(data)
        if Path(name).suffix in (".npy", ".npz", ".csv"):
            name = str(Path(name).resolve())
        return ds, {"name": name, "data_dir": None if data_dir is None else str(data_dir)}
    else:
        raise DataError(
            "data must be a dataset name, a .npy/.npz/.csv path, a Dataset, a tensor or array "
            f"(N, D) or (N, C, H, W), or a pair (x, labels), not {type(data).__name__}"
        )
    name = str((out / ARRAYS_FILE).resolve())
    return from_arrays(x, y, name=name), {"name": name, "data_dir": None}


def _save_arrays(ds: Dataset, path: Path) -> None:
    """Save the splits of ``ds`` as an ``.npz`` that :func:`dgm.data.load` reads back to the
    same splits and spec (float32 values, int64 labels; no pickles)."""
    arrays = {s: ds.split(s)[0].numpy() for s in SPLITS}
    arrays |= {f"{s}_labels": ds.split(s)[1].numpy() for s in SPLITS if ds.split(s)[1] is not None}
    with atomic_path(path, ".npz") as tmp:
        np.savez(tmp, **arrays)


def _changed(base: dict[str, Any], new: dict[str, Any], keys: Any) -> str | None:
    """``"key is A there, not B"`` for the first of ``keys`` whose value differs, else None."""
    for k in keys:
        if base.get(k) != new.get(k):
            return f"{k} is {base.get(k)!r} there, not {new.get(k)!r}"
    return None


def _resume_difference(
    saved: dict[str, Any],
    model: str | Model,
    data: Any,
    model_config: dict[str, Any] | None,
    preprocess: dict[str, Any] | None,
    train_options: dict[str, Any],
) -> str | None:
    """What the caller asks for that differs from the saved run (None: nothing). Values are
    compared after checking them against their typed configs, so ``lr=0.001`` and ``"1e-3"`` agree."""
    name = model.name if isinstance(model, Model) else model
    if name and name != saved["model"]:
        return f"its model is {saved['model']!r}, not {name!r}"
    cls = get_model_class(saved["model"])
    given = config_to_dict(model.config) if isinstance(model, Model) else (model_config or {})
    if given:
        what = f"model {saved['model']!r}"
        base = config_to_dict(build_config(cls.Config, saved["model_config"], what=what))
        new = config_to_dict(build_config(cls.Config, saved["model_config"] | given, what=what))
        diff = _changed(base, new, given)
        if diff:
            return f"its model_config {diff}"
    if isinstance(data, Dataset):
        data = data.name
    if data:
        data = str(data)
        if Path(data).suffix in (".npy", ".npz", ".csv"):
            data = str(Path(data).resolve())
        if data != saved["data"]["name"]:
            return f"its data is {saved['data']['name']!r}, not {data!r}"
    if preprocess is not None:
        given_pre = preprocessor_from_config(preprocess).to_config()
        if given_pre != saved["preprocess"]:
            return f"its preprocess is {saved['preprocess']!r}, not {given_pre!r}"
    fixed = {k: v for k, v in train_options.items() if k not in RESUMABLE}
    if fixed:
        base = config_to_dict(build_config(TrainConfig, saved["train"], what="training"))
        new = config_to_dict(build_config(TrainConfig, base | fixed, what="training"))
        diff = _changed(base, new, fixed)
        if diff:
            return (
                f"its training option {diff} (a resumed run may change only "
                f"{', '.join(sorted(RESUMABLE))})"
            )
    return None


def _build(name: str, spec: DataSpec, model_config: dict[str, Any], labels: bool) -> Model:
    cls = get_model_class(name)
    cfg = build_config(cls.Config, model_config, what=f"model {name!r}")
    if getattr(cfg, "conditional", False):  # only models that take labels have this field
        if not labels or spec.num_classes is None:
            raise ConfigError(
                "conditional=true needs a dataset with class labels; this one has none"
            )
    return cls(spec, cfg)


def train_defaults_for(cls: type[Model], spec: DataSpec) -> dict[str, Any]:
    """The training options model class ``cls`` prefers for data of ``spec``: its
    ``train_defaults``, and on images larger than 16 pixels a side (MNIST) its
    ``large_image_train_defaults`` over them (a run length there replaces theirs)."""
    defaults = dict(cls.train_defaults)
    large = cls.large_image_train_defaults
    if large and spec.is_large_image:
        if RUN_LENGTH & set(large):
            defaults = {k: v for k, v in defaults.items() if k not in RUN_LENGTH}
        defaults |= large
    return defaults


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
    data: str | Path | Dataset | Tensor | np.ndarray | tuple[Tensor | np.ndarray, Any],
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
        model: a registry name (``"made"``, ``"nsf"``, ...; ``dgm list``) or a built
            :class:`Model`.
        data: a dataset name (``dgm.data.names()``), a ``.npy/.npz/.csv`` path, a
            :class:`~dgm.data.Dataset`, or data in memory: a ``torch.Tensor`` or numpy array of
            shape ``(N, D)``, ``(N, H, W)`` or ``(N, C, H, W)``, or a pair ``(x, labels)`` with
            integer labels ``(N,)``. In-memory data is read like a ``.npy`` file
            (:func:`dgm.data.from_arrays`: split 80/10/10, integer images ``0..255`` discrete,
            0/1 vectors binary, else continuous) and saved as ``out/data.npz`` so that
            ``dgm eval`` and ``resume`` find it.
        out: run directory. An existing run is an error unless ``resume`` or ``overwrite``.
        model_config: hyperparameters of the model (checked against its ``Config``).
        data_dir: where named image datasets (MNIST) are found.
        preprocess: a preprocessor config (``{"name": "binarize", ...}``); by default discrete
            data is dequantized for continuous models and passed as is to discrete ones.
        resume: continue the run in ``out`` from its last good checkpoint. The model, its
            config, the data, the preprocessing and the training options outside
            :data:`RESUMABLE` are the run's; asking for other values is a :class:`ConfigError`
            that names the first difference (empty ``model``/``data`` mean "the run's").
        overwrite: replace the run in ``out``.
        train_options: fields of :class:`~dgm.train.config.TrainConfig` (steps, batch_size, lr, ...).

    Returns:
        the run directory; :func:`load` reads the trained model from it.

    >>> import dgm, tempfile, torch
    >>> x = torch.randn(200, 2)
    >>> d = dgm.train("nsf", x, tempfile.mkdtemp(), steps=5, model_config={"depth": 2})
    >>> sorted(p.name for p in d.iterdir())[:4]
    ['checkpoints', 'config.yaml', 'data.npz', 'density.png']
    """
    out = Path(out)
    clock = _clock
    started = clock()
    rank, _ = ddp.setup(str(train_options.get("device", "cpu")))
    if resume:
        if not _is_run(out):
            raise CheckpointError(f"cannot resume: {out} holds no dgm run (no config.yaml)")
        saved = read_run_config(out)
        diff = _resume_difference(saved, model, data, model_config, preprocess, train_options)
        if diff:
            raise ConfigError(
                f"--resume continues {out} as it was configured, but {diff}; to train with "
                "other settings, choose a new --out or pass --overwrite to replace the run"
            )
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
        asked = dict(train_options)
        train_options = with_train_defaults(cls_.train_defaults, asked)  # checked before loading

    tcfg = build_config(
        TrainConfig, cfg_doc["train"] if cfg_doc else train_options, what="training"
    )
    # start-up lines: loading a dataset and building a large model take seconds to minutes
    show = bool(tcfg.progress) and rank == 0
    source = data if isinstance(data, (str, Path)) else type(data).__name__
    with Progress(f"loading data {source}", enabled=show, after=3.0):
        dataset, data_entry = _resolve_dataset(data, data_dir, out)
    if cfg_doc is None:  # the model's defaults for these data (e.g. a budget on large images)
        train_options = with_train_defaults(train_defaults_for(cls_, dataset.spec), asked)
        tcfg = build_config(TrainConfig, train_options, what="training")
    if isinstance(model, Model) and not resume:
        cls = type(model)
        pre = (
            preprocessor_from_config(preprocess)
            if preprocess
            else default_preprocessor(dataset.spec, cls.data_kinds)
        )
        _check_preprocess_kind(cls, pre, dataset.spec)
        built = model
        model_config = config_to_dict(model.config)
    else:
        cls = get_model_class(model_name)
        pre = (
            preprocessor_from_config(preprocess)
            if preprocess
            else default_preprocessor(dataset.spec, cls.data_kinds)
        )
        _check_preprocess_kind(cls, pre, dataset.spec)
        torch.manual_seed(tcfg.seed)
        with Progress(f"building {model_name}", enabled=show, after=3.0):
            built = _build(
                model_name,
                pre.spec(dataset.spec),
                model_config or {},
                dataset.train_labels is not None,
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
        if data_entry["name"] == str((out / ARRAYS_FILE).resolve()) and not resume:
            _save_arrays(dataset, out / ARRAYS_FILE)  # before config.yaml: a run reloads its data
        atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg_doc, sort_keys=False))
        counts = _class_counts(dataset.train_labels, dataset.spec.num_classes)
        if counts is not None and not (out / CLASSES_FILE).is_file():
            atomic_write_text(out / CLASSES_FILE, json.dumps({"class_counts": counts}) + "\n")

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
        clock=clock,
    )
    if resume:
        for warning in trainer.resume():
            print(f"dgm: warning: skipped a checkpoint: {warning}", file=sys.stderr, flush=True)
    info = trainer.fit()
    if rank == 0:
        built.load_state_dict(trainer.final_weights())
        save_tensors(built.state_dict(), out / "model.safetensors")
        deadline = _end_of_run_deadline(tcfg, clock, started, trainer.seconds_before)
        summary = _finish(out, built, pre, dataset, tcfg, deadline)
        summary |= info | {"model": model_name, "data": data_entry["name"]}
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    ddp.teardown()  # the other ranks wait for rank 0's summary before the group goes
    return out


def _end_of_run_deadline(
    tcfg: TrainConfig, clock: Callable[[], float], started: float, seconds_before: float
) -> Deadline:
    """When a ``max_minutes`` budget ends this session: ``max_minutes`` after it started, less
    the training time of earlier sessions, but never sooner than the budget's share kept for the
    end of the run (``1 - TRAINING_SHARE``) from now (validation time is not training time, so
    training may end late)."""
    if not tcfg.max_minutes:
        return Deadline(None, clock)
    budget = 60.0 * tcfg.max_minutes
    return Deadline(
        max(started + budget - seconds_before, clock() + (1.0 - TRAINING_SHARE) * budget), clock
    )


def _finish(
    out: Path, model: Model, pre: Any, dataset: Dataset, tcfg: TrainConfig, deadline: Deadline
) -> dict[str, Any]:
    """The end of a run: its summary (the NLL of a fixed subset of each split, in the first half
    of the time left) and its figures (before ``deadline``), with progress on stderr."""
    summary = summarize(
        model, dataset, pre, seed=tcfg.seed, deadline=deadline.share(0.5), progress=tcfg.progress
    )
    skipped: list[str] = []
    write_plots(
        out, model, pre, dataset, seed=tcfg.seed, deadline=deadline, progress=tcfg.progress,
        skipped=skipped,
    )  # fmt: skip
    if skipped:
        summary["cut_for_time"] = summary.get("cut_for_time", []) + [
            f"{name} (not drawn)" for name in skipped
        ]
    if summary.get("cut_for_time") and tcfg.progress:
        print(
            f"dgm: the time budget (--max-minutes {tcfg.max_minutes:g}) cut the end of the run: "
            f"{'; '.join(summary['cut_for_time'])}; `dgm eval {out}` scores the run in full",
            file=sys.stderr,
            flush=True,
        )
    return summary


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
    return Run(
        path=path, model=model, preprocessor=pre, config=cfg, raw_spec=raw_spec,
        class_counts=read_class_counts(path),
    )  # fmt: skip


class TrainedModel(nn.Module):
    """A trained model seen from its raw data: what :func:`load` returns, the same for every family.

    dgm trains a model on *preprocessed* data (``model.spec``): discrete data is dequantized for
    a continuous model (``x -> (x + u) / L``), binarized on request, else passed unchanged
    (:mod:`dgm.data.preprocess`). A ``TrainedModel`` puts that preprocessing back, so that
    everything it takes and returns is raw data as the dataset holds it (``spec``):

    * ``sample(n)``: raw data ``(n, *spec.event_shape)``, drawn under ``model.inference()``
      (no autograd graph: ``requires_grad`` is False) and mapped back by
      ``preprocessor.inverse`` (dequantized samples return to the integer levels).
    * ``log_prob(x)`` for models with an exact likelihood (``exact_likelihood``), else the bound
      under its own name (``likelihood_bound``: ``elbo(x)`` for ddpm, ``iwae_bound(x, k=...)``
      for vae/iwae, ``dequantization_bound(x)`` for flows with variational dequantization):
      ``log p_model(pre(x)) + log_det`` in nats, ``(B,)``, the change of variables of the
      preprocessing included, as in ``dgm eval``. It is exact when the preprocessing is the
      identity; when discrete data is dequantized it is one draw of the dequantization lower
      bound on ``log P(x)`` (Theis et al. 2016) and ``likelihood_note`` says so.
    * ``log_likelihood(x) -> (values, name)``: whichever of the two the model has, named.
    * Labels, for a conditional model (``num_classes > 0``): ``sample(n, y=3)`` or ``y`` of shape
      ``(n,)``; ``sample(n)`` draws them from the training class frequencies
      (``sample_with_labels`` returns them); ``log_prob(x, y)`` is ``log p(x | y)``. A label
      outside ``0..num_classes-1``, or any label for an unconditional model, is a ``DataError``.
    * ``complete(x, mask, y=None)``: the unobserved entries (``mask`` False) drawn given the
      observed ones, for models that can (:class:`~dgm.core.protocols.Completer`).

    The model itself, in model space and under the caller's grad mode (what the engine trains),
    is ``.model``; the preprocessing is ``.preprocessor``.
    """

    def __init__(
        self,
        model: Model,
        preprocessor: Any,
        raw_spec: DataSpec,
        class_counts: list[int] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.preprocessor = preprocessor
        self.spec = raw_spec
        self.class_counts = class_counts
        self.train(model.training)  # the wrapper's own flag follows the model's (eval when loaded)

    # what generic code reads, passed through from the model
    name = property(lambda self: self.model.name)
    family = property(lambda self: self.model.family)
    config = property(lambda self: self.model.config)
    exact_likelihood = property(lambda self: self.model.exact_likelihood)
    likelihood_bound = property(lambda self: self.model.likelihood_bound)
    bound_options = property(lambda self: self.model.bound_options)
    conditional = property(lambda self: self.model.conditional)
    dtype = property(lambda self: self.model.dtype)
    device = property(lambda self: self.model.device)
    event_shape = property(lambda self: self.spec.event_shape)
    num_dims = property(lambda self: self.spec.num_dims)

    @property
    def likelihood_note(self) -> str | None:
        """What a likelihood of raw data is beyond the model's own (``"dequantization bound"``),
        ``None`` when the preprocessing keeps it exact."""
        return self.preprocessor.likelihood_note

    def inference(self) -> Any:
        """The model's context for sampling and scoring (see :meth:`Model.inference`)."""
        return self.model.inference()

    def _raw(self, x: Any) -> Tensor:
        if not isinstance(x, (Tensor, np.ndarray)):
            raise DataError(f"x must be a torch.Tensor or numpy array, not {type(x).__name__}")
        return torch.as_tensor(x).to(self.model.device, self.model.dtype)

    @property
    def num_classes(self) -> int:
        """The number of classes of a conditional model (0 for an unconditional one)."""
        if isinstance(self.model, ConditionalModel) and self.model.conditional:
            return int(self.model.num_classes)
        return 0

    def class_prior(self) -> Tensor:
        """Probabilities ``(K,)`` of the classes: the training class frequencies saved with the
        run, uniform when the run has none (a model built outside :func:`train`)."""
        k = self.num_classes
        if not k:
            raise DataError(f"model {self.name!r} is unconditional; it has no classes")
        counts = self.class_counts
        if counts is None or len(counts) != k or sum(counts) == 0:
            return torch.full((k,), 1.0 / k, dtype=torch.float64)
        c = torch.tensor(counts, dtype=torch.float64)
        return c / c.sum()

    def draw_labels(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` labels ``(n,)`` drawn from :meth:`class_prior`."""
        return torch.multinomial(self.class_prior(), n, replacement=True, generator=generator)

    def _labels(self, y: Any, n: int) -> dict[str, Any]:
        """Labels checked against the model (one sentence if given to an unconditional model or
        outside ``0..num_classes-1``); none given: none passed on."""
        if y is None:
            return {}
        if not isinstance(y, Tensor):
            y = np.asarray(y)
            if y.dtype.kind not in "biuf":
                raise DataError(f"labels y must be integers, not {y.dtype} values")
        return {"y": check_labels(self.model, torch.as_tensor(y), n)}

    def sample(self, n: int, y: Any = None, **options: Any) -> Tensor:
        """``n`` samples in raw data space, ``(n, *spec.event_shape)``, without grad; ``options``
        are the model's sampling options (``SampleOptions``: e.g. ``guidance`` where the model
        takes it), ``y`` labels ``(n,)`` (or one label for all) of a conditional model; a
        conditional model given none draws them from the training class frequencies
        (:meth:`sample_with_labels` returns them)."""
        return self.sample_with_labels(n, y, **options)[0]

    def sample_with_labels(self, n: int, y: Any = None, **options: Any) -> tuple[Tensor, Any]:
        """``(samples, labels)``: as :meth:`sample`, with the labels ``(n,)`` the samples were
        drawn for (``None`` for an unconditional model)."""
        if y is None and self.num_classes:
            y = self.draw_labels(n)
        labels = self._labels(y, n)
        b, parts = self.model.sample_batch(), []
        with self.model.inference():
            for start in range(0, max(n, 1), b):  # one call for n = 0 as for any n
                k = min(b, n - start)
                part = {key: v[start : start + k] for key, v in labels.items()}
                s = self.model.sample(k, **part, **options)  # (k, *event) model space
                parts.append(self.preprocessor.inverse(s).detach())  # (k, *event) raw
        y = labels.get("y")
        return torch.cat(parts), None if y is None else y.detach().to("cpu").clone()

    def require_completer(self) -> None:
        """One :class:`DgmError` unless the model can complete partly observed data."""
        if not isinstance(self.model, Completer):
            raise DgmError(
                f"model {self.name!r} cannot complete partly observed data; the autoregressive "
                "models (given a prefix of their ordering), made and ddpm can"
            )

    def complete(self, x: Any, mask: Any, y: Any = None, **options: Any) -> Tensor:
        """Complete partly observed raw data: ``x`` ``(B, *event)`` and a boolean ``mask`` of the
        same shape (or of the event shape, for every row; True: observed). Returns raw data whose
        observed entries equal ``x``'s and whose others are drawn by the model's
        :class:`~dgm.core.protocols.Completer` given them (in model space, after the run's
        preprocessing). A model without that ability is one :class:`DgmError`."""
        self.require_completer()
        x = self._raw(x)
        if x.dim() == len(self.spec.event_shape):
            x = x.unsqueeze(0)
        mask = torch.as_tensor(mask, device=x.device)
        if mask.dtype != torch.bool:
            if ((mask != 0) & (mask != 1)).any():
                raise DataError("the mask must hold 0 (missing) and 1 (observed) only")
            mask = mask != 0
        if tuple(mask.shape) == tuple(self.spec.event_shape):
            mask = mask.expand_as(x)
        if tuple(x.shape[1:]) != tuple(self.spec.event_shape) or mask.shape != x.shape:
            raise DataError(
                f"completion takes x of shape (B, {', '.join(map(str, self.spec.event_shape))}) "
                f"and a mask of that shape or of the event shape, not {tuple(x.shape)} and "
                f"{tuple(mask.shape)}"
            )
        labels = self._labels(y, x.shape[0])
        with self.model.inference():
            xm, _ = self.preprocessor(x)  # (B, *event) model space
            out = self.model.complete(xm, mask, **labels, **options)
            raw = self.preprocessor.inverse(out)  # (B, *event) raw
        return torch.where(mask, x, raw.to(x.dtype)).detach().clone()

    def _batches(self, x: Tensor, y: Any) -> Iterator[tuple[Tensor, dict[str, Any]]]:
        """``x`` and its checked labels in batches of the model's inference batch (a forward
        pass over many images at once is slower: :data:`dgm.core.spec.INFERENCE_VALUES`)."""
        labels = self._labels(y, x.shape[0])
        b = self.model.inference_batch()
        for s in range(0, max(x.shape[0], 1), b):
            yield x[s : s + b], {k: v[s : s + b] for k, v in labels.items()}

    def _score(self, method: str, x: Any, y: Any, **options: Any) -> Tensor:
        x = self._raw(x)  # (B, *event) raw
        out = []
        with self.model.inference():
            for xb, labels in self._batches(x, y):
                xm, log_det = self.preprocessor(xb)  # (b, *event) model space, (b,)
                values = getattr(self.model, method)(xm, **labels, **options)  # (b,)
                out.append((values + log_det.to(values.dtype)).detach())
        return torch.cat(out)

    def log_prob(self, x: Any, y: Any = None) -> Tensor:
        """``log p(x)`` of raw ``x`` in nats, ``(B,)`` (see the class docstring); with labels
        ``y`` of a conditional model, ``log p(x | y)``."""
        if not self.model.exact_likelihood:
            bound = self.model.likelihood_bound
            raise DgmError(
                f"model {self.name!r} has no exact likelihood; "
                + (f"use its lower bound {bound}(x)" if bound else "judge it by its samples")
            )
        return self._score("log_prob", x, y)

    def log_likelihood(
        self, x: Any, y: Any = None, **bound_options: Any
    ) -> tuple[Tensor, Likelihood]:
        """``(values (B,), info)``: ``log_prob`` or the named bound of raw ``x``; ``info`` (a
        :class:`~dgm.core.likelihood.Likelihood`) says which, as a dequantization bound when the
        preprocessing makes it one."""
        x = self._raw(x)
        out = []
        with self.model.inference():
            for xb, labels in self._batches(x, y):
                xm, log_det = self.preprocessor(xb)
                values, info = self.model.log_likelihood(xm, **labels, **bound_options)
                out.append((values + log_det.to(values.dtype)).detach())
        if self.likelihood_note:
            info = info.dequantized()
        return torch.cat(out), info

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)  # parameters and submodules (``model``)
        except AttributeError:
            pass
        bound = self._modules["model"].likelihood_bound
        if bound is not None and name == bound:
            return lambda x, y=None, **options: self._score(bound, x, y, **options)
        raise AttributeError(
            f"{type(self).__name__} has no attribute {name!r}; the model in model space is `.model`"
        )

    def __dir__(self) -> list[str]:
        bound = self.model.likelihood_bound
        return sorted(set(super().__dir__()) | ({bound} if bound else set()))


def load(path: str | Path, *, device: str = "cpu") -> TrainedModel:
    """Load the trained model of a run directory, in eval mode, seen from raw data.

    Returns a :class:`TrainedModel`: ``sample(n)`` returns raw data without grad, ``log_prob(x)``
    (or the named bound, ``likelihood_bound``) takes raw data and includes the preprocessing's
    log-determinant; ``.model`` is the model itself (model space) and ``.preprocessor`` the map
    between the two.
    """
    run = load_run(path, device=device)
    return TrainedModel(run.model, run.preprocessor, run.raw_spec, run.class_counts)
