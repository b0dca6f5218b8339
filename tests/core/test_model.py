"""The contract's own documentation runs, and the Protocols sort the registered models as their
members say."""

from __future__ import annotations

import argparse
import doctest
import re

import pytest
import torch

import dgm.core.model
import dgm.core.protocols
from dgm.cli.commands import sample_options
from dgm.core.errors import ConfigError, DataError
from dgm.core.protocols import (
    ConditionalModel,
    FastAutoregressive,
    LatentVariableModel,
    LikelihoodEstimator,
)
from dgm.core.spec import DataSpec
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


@pytest.mark.parametrize(
    "name,given,message",
    [
        ("score-sde", {"sampler": "sde", "method": "rk4"},
         "sampler 'sde' of model 'score-sde' does not take 'method'; it takes steps, guidance"),
        ("ddpm", {"sampler": "ancestral", "eta": 0.5},
         "sampler 'ancestral' of model 'ddpm' does not take 'eta'; it takes guidance"),
        ("ebm", {"sampler": "langevin", "n_leapfrog": 3},
         "sampler 'langevin' of model 'ebm' does not take 'n_leapfrog'; it takes steps, step_size"),
        ("ddpm", {"sampler": "ddim", "steps_each": 3}, "unknown key 'steps_each'"),
    ],
)  # fmt: skip
def test_an_option_the_chosen_sampler_does_not_take_is_an_error(name, given, message):
    model = build(name)
    with pytest.raises(ConfigError, match=re.escape(message)):
        model.sample_config(given)
    with pytest.raises(ConfigError, match=re.escape(message)):  # the command line says the same
        sample_options(model, argparse.Namespace(sampler=given.pop("sampler"), set=[
            f"{k}={v}" for k, v in given.items()]))  # fmt: skip


def test_options_the_sampler_takes_pass():
    assert build("score-sde").sample_config({"sampler": "ode", "method": "rk4"}).method == "rk4"
    assert build("ddpm").sample_config({"eta": 0.5}).eta == 0.5  # the default sampler is ddim
    plain = type("Plain", (type(build("vae")),), {"SampleOptions": None})  # a model without any
    with pytest.raises(ConfigError, match="takes no sampling options, but got sampler"):
        plain(DataSpec((2,))).sample_config({"sampler": "fast"})


def test_the_python_api_checks_the_sampler_options_too():
    with pytest.raises(
        ConfigError, match="sampler 'ancestral' of model 'ddpm' does not take 'eta'"
    ):
        build("ddpm").sample(2, sampler="ancestral", eta=0.5)
    with pytest.raises(
        ConfigError, match="sampler 'sde' of model 'score-sde' does not take 'method'"
    ):
        build("score-sde").sample(2, sampler="sde", method="rk4")
    with pytest.raises(
        ConfigError, match="sampler 'hmc' of model 'ebm' does not take 'bogus'|unknown"
    ):
        build("ebm").sample(2, sampler="hmc", bogus=1)


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "kind,values,message",
    [
        ("continuous", [0.0, NAN], "NaN or infinite"),
        ("continuous", [INF, 0.0], "NaN or infinite"),
        ("continuous", [-INF, 1.0], "NaN or infinite"),
        ("discrete", [0.0, NAN], "NaN or infinite"),
        ("discrete", [0.0, -1.0], "integers 0..3.*found -1.0"),
        ("discrete", [4.0, 0.0], "integers 0..3.*found 4.0"),
        ("discrete", [1.0, 2.5], "integers 0..3.*found 2.5"),
        ("discrete", [2, 7], "integers 0..3.*found 7"),  # an integer tensor
    ],
)  # fmt: skip
def test_check_input_names_what_is_wrong(kind, values, message):
    """The input check (run by every ``loss`` and ``log_prob``) reduces the batch once in the
    common case; every kind of bad value still gets its sentence."""
    spec = DataSpec((2,), "discrete", levels=4) if kind == "discrete" else DataSpec((2,))
    model = build("made" if kind == "discrete" else "maf", spec)
    bad = torch.tensor([[0, 1], values]).to(torch.tensor(values).dtype)  # (2, 2)
    with pytest.raises(DataError, match=message):
        model.check_input(bad)


@pytest.mark.parametrize(
    "spec,x",
    [
        (DataSpec((2,), "discrete", levels=4), torch.tensor([[0.0, 3.0], [1.0, 2.0]])),
        (DataSpec((2,), "discrete", levels=4), torch.tensor([[0, 3], [1, 2]])),
        (DataSpec((2,), "discrete", levels=2), torch.tensor([[True, False]])),
        (DataSpec((2,)), torch.tensor([[-1e30, 3.5]])),
        (DataSpec((2,)), torch.zeros(0, 2)),
    ],
)  # fmt: skip
def test_check_input_passes_good_values(spec, x):
    model = build("made" if spec.kind == "discrete" else "maf", spec)
    assert model.check_input(x) is x
