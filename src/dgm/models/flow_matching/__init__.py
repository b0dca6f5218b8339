"""Flow matching and few-step generation: ``flow-matching`` (conditional flow matching with
independent or minibatch optimal-transport coupling, and a probability-flow likelihood),
``reflow`` (rectified flow's reflow of a flow-matching teacher) and ``consistency`` (consistency
training or distillation)."""

from dgm.models.flow_matching.model import FlowMatching, FlowMatchingConfig  # isort: skip
from dgm.models.flow_matching.consistency import Consistency, ConsistencyConfig
from dgm.models.flow_matching.reflow import Reflow, ReflowConfig

__all__ = [
    "Consistency",
    "ConsistencyConfig",
    "FlowMatching",
    "FlowMatchingConfig",
    "Reflow",
    "ReflowConfig",
]
