"""The contract's own documentation runs, and the Protocols sort the registered models as their
members say."""

from __future__ import annotations

import doctest

import pytest

import dgm.core.model
import dgm.core.protocols
from dgm.core.protocols import (
    ConditionalModel,
    FastAutoregressive,
    LatentVariableModel,
    LikelihoodEstimator,
)
from dgm.models import build, entries


@pytest.mark.parametrize("module", [dgm.core.model, dgm.core.protocols])
def test_docstring_examples_run(module):
    failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert tried > 0 and failures == 0


def example(cls):
    return build(cls.name, cls.example.spec, **cls.example.config)


def test_each_protocol_holds_for_exactly_the_models_that_offer_it():
    held = {
        protocol.__name__: sorted(c.name for c in entries() if isinstance(example(c), protocol))
        for protocol in (LatentVariableModel, FastAutoregressive, LikelihoodEstimator)
    }
    assert held == {
        "LatentVariableModel": ["iwae", "vae"],
        "FastAutoregressive": ["gated-pixelcnn", "pixelcnn", "rnn", "transformer"],
        "LikelihoodEstimator": ["ebm"],
    }


def test_conditional_models_are_those_with_a_conditional_option():
    for cls in entries():
        takes_labels = "conditional" in cls.Config.__dataclass_fields__
        assert isinstance(example(cls), ConditionalModel) == takes_labels, cls.name
