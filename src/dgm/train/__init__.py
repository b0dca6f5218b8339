"""The engine that trains every family, and its checkpoints."""

from dgm.train.config import TrainConfig
from dgm.train.engine import Trainer

__all__ = ["TrainConfig", "Trainer"]
