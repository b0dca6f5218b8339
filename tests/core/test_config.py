"""Typed configs: overrides from the command line are parsed, checked and named when wrong."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from dgm.core.config import build_config, config_to_dict
from dgm.core.errors import ConfigError


@dataclass
class Cfg:
    hidden: tuple[int, ...] = (64, 64)
    lr: float = 1e-3
    steps: int = 10
    kind: Literal["a", "b"] = "a"
    flag: bool = False
    seed: int | None = None


def test_strings_are_parsed_into_the_annotated_types():
    c = build_config(
        Cfg, {"hidden": "[32, 16]", "lr": "3e-4", "steps": "5", "flag": "true", "seed": "7"}
    )
    assert c == Cfg(hidden=(32, 16), lr=3e-4, steps=5, flag=True, seed=7)
    assert config_to_dict(c)["hidden"] == [32, 16]


def test_single_int_becomes_a_tuple():
    assert build_config(Cfg, {"hidden": 128}).hidden == (128,)


def test_unknown_key_names_valid_keys_and_the_closest():
    with pytest.raises(
        ConfigError,
        match=r"unknown key 'hiden'.*did you mean 'hidden'.*valid keys are: flag, hidden",
    ):
        build_config(Cfg, {"hiden": 3})


@pytest.mark.parametrize(
    "key,value,msg",
    [
        ("steps", "ten", "steps must be an integer"),
        ("steps", 2.5, "steps must be an integer"),
        ("lr", "fast", "lr must be a number"),
        ("kind", "c", "kind must be one of 'a', 'b'"),
        ("flag", "maybe", "flag must be true or false"),
        ("hidden", "[1, x]", "hidden must be"),
    ],
)
def test_wrong_types_are_one_sentence(key, value, msg):
    with pytest.raises(ConfigError, match=msg):
        build_config(Cfg, {key: value})
