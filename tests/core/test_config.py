"""Typed configs: overrides from the command line are parsed, checked and named when wrong."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal

import pytest

from dgm.core.config import build_config, config_to_dict, renamed_keys, translate_renamed
from dgm.core.errors import ConfigError
from dgm.models import get as get_model
from dgm.models import names as model_names


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


@dataclass
class Renamed:
    depth: int = 2
    width: int = 8

    renamed: ClassVar[dict[str, str]] = {"num_layers": "depth", "hidden_channels": "width"}


def test_an_old_key_is_one_sentence_naming_the_new_one():
    with pytest.raises(ConfigError, match=r"^'num_layers' is now 'depth' for model 'x'$"):
        build_config(Renamed, {"num_layers": 3}, what="model 'x'")
    assert build_config(Renamed, {"depth": 3}).depth == 3


def test_saved_configs_with_old_keys_are_translated():
    old = {"num_layers": 3, "hidden_channels": 4}
    assert translate_renamed(Renamed, old) == {"depth": 3, "width": 4}
    assert build_config(Renamed, translate_renamed(Renamed, old)) == Renamed(depth=3, width=4)
    # both spellings (a hand-edited file): the new one wins
    assert translate_renamed(Renamed, {"num_layers": 3, "depth": 5}) == {"depth": 5}


@pytest.mark.parametrize("name", model_names())
def test_every_models_renamed_keys_point_at_its_fields(name):
    cls = get_model(name).Config
    fields = {f.name for f in dataclasses.fields(cls)}
    for old, new in renamed_keys(cls).items():
        assert old not in fields and new in fields
        with pytest.raises(ConfigError, match=f"'{old}' is now '{new}'"):
            build_config(cls, {old: getattr(cls(), new)})
