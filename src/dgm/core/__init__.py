"""The contract: base model, data spec, typed configs, errors, the registry."""

from dgm.core.config import build_config, config_to_dict
from dgm.core.errors import CheckpointError, ConfigError, DataError, DgmError
from dgm.core.model import Batch, Model, unpack
from dgm.core.registry import register
from dgm.core.spec import DataSpec

__all__ = [
    "Batch",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DataSpec",
    "DgmError",
    "Model",
    "build_config",
    "config_to_dict",
    "register",
    "unpack",
]
