"""Typed configs: overrides from the command line are parsed, checked and named when wrong."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import pytest
import yaml

import dgm
from dgm.api import load_run
from dgm.core.config import build_config, config_to_dict, renamed_keys, translate_renamed
from dgm.core.errors import ConfigError
from dgm.core.spec import DataSpec
from dgm.models import get as get_model
from dgm.models import names as model_names
from dgm.models.flows.class_prior import ClassPrior


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


@dataclass
class Added:
    depth: int = 2
    gain: float | None = None  # new: None picks 1, where earlier versions behaved as 0

    added: ClassVar[dict[str, Any]] = {"gain": 0.0}


def test_saved_configs_without_an_added_key_keep_the_earlier_behaviour():
    assert translate_renamed(Added, {"depth": 3}) == {"depth": 3, "gain": 0.0}
    assert translate_renamed(Added, {"depth": 3, "gain": None}) == {"depth": 3, "gain": None}
    assert build_config(Added, {"depth": 3}).gain is None  # a new run takes the new default


def test_a_conditional_gan_saved_before_the_auxiliary_classifier_loads_as_it_was(tmp_path):
    """A run of the version before ``aux_classifier`` (whose conditional GANs had no class head)
    lists every key but that one: it loads with the head off, as it was trained."""
    out = tmp_path / "run"
    dgm.train("gan", "digits", out, steps=1, batch_size=16, progress=False, checkpoint_every=0,
              model_config={"conditional": True, "width": 4, "aux_classifier": 0.0})  # fmt: skip
    cfg_path = out / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    del cfg["model_config"]["aux_classifier"]  # as the earlier version wrote it
    cfg_path.write_text(yaml.safe_dump(cfg))
    model = load_run(out).model  # strict weights: a class head here would find no weights
    assert model.config.aux_classifier == 0.0 and model.discriminator.class_head is None
    assert get_model("gan").Config().aux_classifier is None  # new runs: on when conditional


def test_a_conditional_glow_saved_before_the_class_prior_loads_as_it_was(tmp_path):
    """A conditional glow of the version before ``class_prior`` loads without it (strict
    weights), and the new default turns it on for conditional runs only."""
    out = tmp_path / "run"
    dgm.train("glow", "digits", out, steps=1, batch_size=16, progress=False, checkpoint_every=0,
              model_config={"conditional": True, "width": 4, "depth": 1, "levels": 1,
                            "class_prior": False})  # fmt: skip
    cfg_path = out / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    del cfg["model_config"]["class_prior"]  # as the earlier version wrote it
    cfg_path.write_text(yaml.safe_dump(cfg))
    model = load_run(out).model  # strict weights: a class prior here would find no weights
    assert model.config.class_prior is False
    assert not any(isinstance(m, ClassPrior) for m in model.modules())
    assert build_config(get_model("glow").Config, {"conditional": True}).class_prior is True
    assert build_config(get_model("glow").Config, {}).class_prior is False
    with pytest.raises(ConfigError, match="class_prior=True needs a conditional glow"):
        build_config(get_model("glow").Config, {"class_prior": True})


def test_a_masked_diffusion_unet_saved_before_the_wide_head_loads_as_it_was(tmp_path):
    """A masked-diffusion U-Net of the version before ``wide_head`` (whose U-Net ended in as
    many maps as its input has channels) loads with that layout (strict weights)."""
    out = tmp_path / "run"
    dgm.train("masked-diffusion", "digits", out, steps=1, batch_size=16, progress=False,
              checkpoint_every=0, model_config={"network": "unet", "width": 8, "mults": [1],
                                                "wide_head": False})  # fmt: skip
    cfg_path = out / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    del cfg["model_config"]["wide_head"]  # as the earlier version wrote it
    cfg_path.write_text(yaml.safe_dump(cfg))
    model = load_run(out).model  # strict weights: a wide head here would not fit them
    assert model.config.wide_head is False and model.net.head.in_channels == 18  # 17 levels + 1
    assert get_model("masked-diffusion").Config().wide_head is True
    wide = get_model("masked-diffusion")(model.spec, build_config(model.Config, {
        "network": "unet", "width": 8, "mults": [1]}))  # fmt: skip
    assert wide.net.head.in_channels == 8


def test_a_vae_of_mnist_saved_before_the_prior_option_loads_with_n01():
    """A vae of MNIST-sized images of the version before ``prior`` (``N(0, I)`` only) lists every
    key but that one: it is read back with the standard prior and no pseudo-inputs (strict
    weights), while a new run there takes the VampPrior."""
    cls = get_model("vae")
    spec = DataSpec((1, 28, 28), "discrete", levels=2)
    earlier = cls(spec, build_config(cls.Config, {"hidden": [8], "prior": "standard"}))
    values = config_to_dict(earlier.config)
    del values["prior"]  # as the earlier version wrote it
    model = cls(spec, build_config(cls.Config, translate_renamed(cls.Config, values)))
    model.load_state_dict(earlier.state_dict())  # strict: pseudo-inputs would find no weights
    assert model.prior == "standard" and not hasattr(model, "pseudo_inputs")
    assert cls(spec, build_config(cls.Config, {"hidden": [8]})).prior == "vamp"


@pytest.mark.parametrize("name", model_names())
def test_every_models_renamed_keys_point_at_its_fields(name):
    cls = get_model(name).Config
    fields = {f.name for f in dataclasses.fields(cls)}
    for old, new in renamed_keys(cls).items():
        assert old not in fields and new in fields
        with pytest.raises(ConfigError, match=f"'{old}' is now '{new}'"):
            build_config(cls, {old: getattr(cls(), new)})
