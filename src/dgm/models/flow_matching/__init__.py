"""Flow matching: ``flow-matching`` (conditional flow matching with independent or minibatch
optimal-transport coupling, and a probability-flow likelihood)."""

from dgm.models.flow_matching.model import FlowMatching, FlowMatchingConfig

__all__ = ["FlowMatching", "FlowMatchingConfig"]
