"""``dgm show MODEL``: every option of every model, with its type, default and meaning."""

from __future__ import annotations

import dataclasses

import pytest

from dgm.cli.main import main
from dgm.cli.show import show_text
from dgm.core.config import describe_fields, sampler_table
from dgm.models import entries, names


@pytest.mark.parametrize("name", names())
def test_every_key_of_every_model_has_a_meaning(name):
    cls = next(c for c in entries() if c.name == name)
    for options in (cls.Config, cls.SampleOptions):
        if options is None:
            continue
        undocumented = [f.name for f in describe_fields(options) if not f.meaning]
        assert not undocumented, f"{name} {options.__name__}: no meaning for {undocumented}"


@pytest.mark.parametrize("name", names())
def test_show_lists_every_key_with_its_default(name):
    cls = next(c for c in entries() if c.name == name)
    text = show_text(name, width=100)
    lines = text.splitlines()
    for f in describe_fields(cls.Config):
        row = next((ln for ln in lines if ln.startswith(f"  {f.name} ") and "default " in ln), None)
        assert row is not None, f"{f.name} missing from dgm show {name}"
    for k in cls.train_defaults:
        assert f"  {k} = " in text
    if cls.SampleOptions is not None:
        for sampler, takes in sampler_table(cls.SampleOptions).items():
            if sampler is not None:
                assert f"--sampler {sampler} takes: {', '.join(takes) or 'no options'}" in text
        for f in dataclasses.fields(cls.SampleOptions):
            assert f"  {f.name}" in text or f.name == "sampler"


def test_show_and_list_model_print_the_same(capsys):
    assert main(["show", "score-sde"]) == 0
    shown = capsys.readouterr().out
    assert main(["list", "score-sde"]) == 0
    assert capsys.readouterr().out == shown
    assert "--sampler sde takes: steps, guidance\n" in shown
    assert "--sampler ode takes: steps, method, guidance\n" in shown


def test_an_unknown_model_is_one_sentence(capsys):
    assert main(["show", "nfs"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'nfs' (did you mean 'nsf'?)" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("name", ["made", "ddpm", "masked-diffusion", "pixelcnn"])
def test_show_lists_what_dgm_complete_takes(name):
    text = show_text(name, width=100)
    block = text.split("completion options (dgm complete")[1]
    assert "(undocumented)" not in block
    own = {"made": "particles", "ddpm": "resample"}.get(name)
    if own:
        assert f"  {own}  int  default" in block
    else:
        assert "no options of its own" in block
    assert "completion options" not in show_text("nsf")
