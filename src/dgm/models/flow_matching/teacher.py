"""The teacher of a few-step model: a trained ``flow-matching`` (or ``reflow``) run, read safely.

A student names its teacher by the run directory of a ``dgm train`` run (its ``teacher`` option).
The run's ``config.yaml`` (YAML, safe-loaded) names the model and its hyperparameters, and its
final weights ``model.safetensors`` are loaded into a model built on the student's data spec;
nothing is unpickled. The teacher was trained on the same data and preprocessing as the
student (a different event shape is one :class:`~dgm.core.errors.CheckpointError`), and it works
in the same standardised model space: the student copies the teacher's ``shift`` and ``scale``.

With no teacher run (``teacher=""``) :func:`example_teacher` builds an **untrained**
``flow-matching`` model from its registry example config, with a fixed seed, so that a student
can be built, trained one step and checked by the conformance suite without a run on disk; its
pairs are noise, so a student trained on them learns nothing useful.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from dgm.core.config import build_config, translate_renamed
from dgm.core.errors import CheckpointError, ConfigError
from dgm.core.io import load_tensors
from dgm.core.registry import get
from dgm.core.spec import DataSpec
from dgm.models.flow_matching.model import FlowMatching

__all__ = ["load_teacher", "example_teacher"]


def load_teacher(path: str | Path, spec: DataSpec) -> FlowMatching:
    """The flow-matching model of the run directory ``path``, built for data ``spec``, in eval
    mode with its final weights (float32 on the CPU; move it with ``.to``)."""
    path = Path(path)
    cfg_path = path / "config.yaml"
    if not cfg_path.is_file():
        raise CheckpointError(
            f"teacher {str(path)!r} is not a dgm run directory (no config.yaml); give the --out "
            "of a finished `dgm train flow-matching` run"
        )
    try:
        cfg = yaml.safe_load(cfg_path.read_text())
        name, model_cfg = cfg["model"], cfg["model_config"]
    except (yaml.YAMLError, UnicodeDecodeError, KeyError, TypeError):
        raise CheckpointError(
            f"{cfg_path} is not a dgm run config; the teacher run is corrupt"
        ) from None
    cls = get(name)
    if not issubclass(cls, FlowMatching):
        raise ConfigError(
            f"teacher {str(path)!r} is a {name!r} run; the teacher must be a flow-matching or "
            "reflow run"
        )
    shape = tuple((cfg.get("spec") or {}).get("event_shape") or ())
    if shape and shape != tuple(spec.event_shape):
        raise CheckpointError(
            f"teacher {str(path)!r} was trained on data of shape {shape}, but the student's data "
            f"has shape {tuple(spec.event_shape)}; train both on the same data"
        )
    config = build_config(cls.Config, translate_renamed(cls.Config, dict(model_cfg)))
    teacher = cls(spec, config)
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(
            f"teacher {str(path)!r} has no final weights (model.safetensors); let its training "
            "finish first"
        )
    try:
        teacher.load_state_dict(load_tensors(weights))
    except RuntimeError:
        raise CheckpointError(
            f"the weights in {weights} do not fit model {name!r} as configured; the run is corrupt"
        ) from None
    return teacher.eval()


def example_teacher(spec: DataSpec, seed: int = 0) -> FlowMatching:
    """An untrained ``flow-matching`` model from its example config, seeded (see the module
    docstring: for tests and the conformance suite only)."""
    config = build_config(FlowMatching.Config, dict(FlowMatching.example.config))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        teacher = FlowMatching(spec, config)
    return teacher.eval()
