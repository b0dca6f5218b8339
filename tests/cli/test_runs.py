"""A run directory as an interface: `--resume` continues exactly the run that is there (other
settings are an error that names the difference), and a run's config.yaml trains it again."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from safetensors.torch import load_file

from conftest import one_sentence_error
from conftest import run_cli as run
from dgm.cli.main import main

TINY = ["--set", "depth=2", "--set", "hidden=[16,16]", "--batch-size", "64", "--seed", "3"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "nsf"
    argv = ["train", "nsf", "--data", "8gaussians", "--out", out, "--steps", 8, "--no-progress",
            *TINY]  # fmt: skip
    assert main([str(a) for a in argv]) == 0
    return out


@pytest.mark.parametrize(
    "argv,difference",
    [
        (["nsf", "--set", "depth=3"], "model_config depth is 2 there, not 3"),
        (["nsf", "--set", "hidden=[16,32]"], "hidden is [16, 16] there, not [16, 32]"),
        (["made"], "its model is 'nsf', not 'made'"),
        (["--data", "rings"], "its data is '8gaussians', not 'rings'"),
        (["--lr", "0.01"], "training option lr is 0.001 there, not 0.01"),
        (["--batch-size", "32"], "batch_size is 64 there, not 32"),
        (["--train-set", "schedule=constant"], "schedule is 'cosine' there, not 'constant'"),
    ],
)
def test_resume_with_other_settings_names_the_difference(
    tiny_run, argv, difference, tmp_path, capsys
):
    before = (tiny_run / "config.yaml").read_text()
    code, _, err = run(capsys, "train", *argv, "--out", tiny_run, "--resume", "--steps", 12)
    err = one_sentence_error(code, err)
    assert difference in err and "--out" in err and "--overwrite" in err
    assert (tiny_run / "config.yaml").read_text() == before  # nothing written


def test_resume_accepts_the_same_settings_and_a_new_length(tmp_path, capsys):
    out = tmp_path / "r"
    argv = ["train", "nsf", "--data", "8gaussians", "--out", out, "--no-progress", *TINY]
    assert run(capsys, *argv, "--steps", 6)[0] == 0
    # the run's own settings (values written differently too), a new length, device, precision
    code, text, err = run(capsys, *argv, "--lr", "1e-3", "--set", "depth=2.0",
                          "--steps", 10, "--device", "cpu", "--resume")  # fmt: skip
    assert code == 0, err
    assert json.loads(text)["steps"] == 10
    code, text, err = run(capsys, "train", "--out", out, "--resume", "--max-minutes", 5,
                          "--precision", "bf16-mixed", "--steps", 12, "--no-progress")  # fmt: skip
    assert code == 0, err
    assert json.loads(text)["steps"] == 12


def test_a_runs_config_yaml_trains_the_same_weights(tiny_run, tmp_path, capsys):
    again = tmp_path / "again"
    code, _, err = run(capsys, "train", "--config", tiny_run / "config.yaml", "--out", again,
                       "--no-progress")  # fmt: skip
    assert code == 0, err
    assert (again / "model.safetensors").read_bytes() == (
        tiny_run / "model.safetensors"
    ).read_bytes()
    first, second = (
        load_file(tiny_run / "model.safetensors"),
        load_file(again / "model.safetensors"),
    )
    assert first.keys() == second.keys() and all(first[k].equal(second[k]) for k in first)
    written = yaml.safe_load((again / "config.yaml").read_text())
    original = yaml.safe_load((tiny_run / "config.yaml").read_text())
    assert written["model_config"] == original["model_config"]
    assert written["train"] | {"progress": True} == original["train"] | {"progress": True}
    # flags override the file
    code, text, err = run(capsys, "train", "--config", tiny_run / "config.yaml", "--out",
                          tmp_path / "longer", "--steps", 3, "--no-progress")  # fmt: skip
    assert code == 0, err
    assert json.loads(text)["steps"] == 3


def test_a_config_whose_spec_is_not_the_datas_is_an_error(tiny_run, tmp_path, capsys):
    doc = yaml.safe_load((tiny_run / "config.yaml").read_text())
    doc["spec"]["event_shape"] = [3]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc))
    code, _, err = run(capsys, "train", "--config", tmp_path / "c.yaml", "--out", tmp_path / "x")
    err = one_sentence_error(code, err)
    assert "of shape (3,)" in err and "of shape (2,)" in err and "spec" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "text,where",
    [
        ("model: nsf\ndata: 8gaussians\ntrain:\n  steps: 5\n lr: 3\n", "line 5, column 2"),
        ("model: nsf\nmodel_config: {depth: 2\n", "line 3, column 1"),
        ("model: nsf\ndata: rings: 2\n", "line 2, column 12"),
    ],
)
def test_yaml_errors_give_line_and_column(text, where, tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(text)
    code, _, err = run(capsys, "train", "--config", tmp_path / "c.yaml", "--out", tmp_path / "x")
    err = one_sentence_error(code, err)
    assert where in err and "c.yaml" in err


def test_a_corrupt_run_config_gives_line_and_column(tiny_run, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_run, broken)
    (broken / "config.yaml").write_text("model: nsf\nmodel_config: [1, 2\n")
    code, _, err = run(capsys, "sample", broken, "--out", tmp_path / "s.npy")
    err = one_sentence_error(code, err)
    assert "line 3, column 1" in err and "corrupt" in err
