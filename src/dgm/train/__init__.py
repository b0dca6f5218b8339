"""The engine that trains every family, and its checkpoints.

``dgm.train(...)`` (the function of :mod:`dgm.api`) writes a whole run directory with it; this
package is the loop below that.
"""

from dgm.train.config import TrainConfig
from dgm.train.engine import Trainer

__all__ = ["TrainConfig", "Trainer"]
