"""The command line: the happy path end to end, and one clear sentence with exit 2 for bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

import dgm
from conftest import run_cli as run
from dgm.cli.main import main

TINY_NSF = ["--set", "depth=2", "--set", "hidden=[16,16]"]


@pytest.fixture(scope="module")
def nsf_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "nsf"
    code = main(["train", "nsf", "--data", "8gaussians", "--out", str(out), "--steps", "60",
                 "--batch-size", "128", "--no-progress", *TINY_NSF])  # fmt: skip
    assert code == 0
    return out


@pytest.fixture(scope="module")
def made_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "made"
    code = main(["train", "made", "--data", "digits", "--out", str(out), "--steps", "40",
                 "--set", "hidden=[32]", "--no-progress"])  # fmt: skip
    assert code == 0
    return out


def test_train_writes_a_complete_run(nsf_run):
    for name in ("config.yaml", "model.safetensors", "metrics.jsonl", "summary.json",
                 "samples.png", "density.png"):  # fmt: skip
        assert (nsf_run / name).is_file(), name
    summary = json.loads((nsf_run / "summary.json").read_text())
    assert summary["likelihood"] == "log_prob: exact"
    for split in ("train", "val", "test"):
        assert np.isfinite(summary[f"{split}_nll"]) and np.isfinite(summary[f"{split}_bpd"])
    assert not list(nsf_run.rglob("*.tmp*"))


def test_sample_score_eval(nsf_run, tmp_path, capsys):
    code, _, _ = run(capsys, "sample", nsf_run, "-n", 50, "--out", tmp_path / "s.npy")
    assert code == 0
    s = np.load(tmp_path / "s.npy")
    assert s.shape == (50, 2) and np.isfinite(s).all()
    assert run(capsys, "sample", nsf_run, "-n", 16, "--out", tmp_path / "s.png")[0] == 0
    assert (tmp_path / "s.png").stat().st_size > 1000
    code, _, err = run(capsys, "score", nsf_run, tmp_path / "s.npy", "--out", tmp_path / "ll.npy")
    assert code == 0 and "log_prob" in err
    ll = np.load(tmp_path / "ll.npy")
    assert ll.shape == (50,) and np.isfinite(ll).all()
    code, out, _ = run(capsys, "eval", nsf_run)
    assert code == 0
    res = json.loads(out)
    assert res == json.loads((nsf_run / "eval.json").read_text())
    assert res["kl"] > 0 and 0.9 < res["grid_integral"] < 1.1


def test_sampling_options_are_checked(nsf_run, tmp_path, capsys):
    code, _, err = run(
        capsys, "sample", nsf_run, "-n", 4, "--sampler", "fast", "--out", tmp_path / "s.npy"
    )
    assert code == 2 and "unknown key 'sampler'" in err and "Traceback" not in err
    assert "valid keys are: temperature" in err
    assert not (tmp_path / "s.npy").exists()


def test_made_takes_the_naive_and_fast_samplers_and_a_temperature(made_run, tmp_path, capsys):
    draws = []
    for sampler in ("fast", "naive"):
        out = tmp_path / f"{sampler}.npy"
        code, _, err = run(capsys, "sample", made_run, "-n", 5, "--sampler", sampler,
                           "--set", "temperature=0.5", "--set", "top_k=3", "--out", out)  # fmt: skip
        assert code == 0, err
        draws.append(np.load(out))
    np.testing.assert_array_equal(*draws)


def test_discrete_model_end_to_end(made_run, tmp_path, capsys):
    summary = json.loads((made_run / "summary.json").read_text())
    assert summary["likelihood"] == "log_prob: exact"
    assert summary["test_nll"] < 64 * np.log(17)  # better than uniform over 17 levels
    code, _, _ = run(capsys, "sample", made_run, "-n", 8, "--out", tmp_path / "d.npy")
    d = np.load(tmp_path / "d.npy")
    assert code == 0 and d.shape == (8, 1, 8, 8) and set(np.unique(d)) <= set(range(17))
    code, _, _ = run(capsys, "score", made_run, tmp_path / "d.npy", "--out", tmp_path / "b.npy",
                     "--bits-per-dim")  # fmt: skip
    assert code == 0 and (np.load(tmp_path / "b.npy") > 0).all()


def test_resume_extends_a_run(tmp_path, capsys):
    out = tmp_path / "r"
    args = ["train", "nsf", "--data", "8gaussians", "--out", out, "--batch-size", "64",
            "--no-progress", *TINY_NSF]  # fmt: skip
    assert run(capsys, *args, "--steps", 10)[0] == 0
    code, _, err = run(capsys, *args, "--steps", 10)
    assert code == 2 and "--resume" in err
    code, out_text, _ = run(capsys, "train", "nsf", "--out", out, "--data", "8gaussians",
                            "--resume", "--steps", 20, "--no-progress")  # fmt: skip
    assert code == 0 and json.loads(out_text)["steps"] == 20


@pytest.mark.parametrize(
    "argv,message",
    [
        (
            ["train", "nosuchmodel", "--data", "8gaussians", "--out", "{tmp}/x"],
            "unknown model 'nosuchmodel'",
        ),
        (["train", "nsf", "--data", "nosuchdata", "--out", "{tmp}/x"], "nosuchdata"),
        (
            ["train", "nsf", "--data", "8gaussians", "--out", "{tmp}/x", "--set", "bins"],
            "KEY=VALUE",
        ),
        (
            ["train", "nsf", "--data", "8gaussians", "--out", "{tmp}/x", "--set", "binz=3"],
            "valid keys are",
        ),
        (
            ["train", "nsf", "--data", "8gaussians", "--out", "{tmp}/x", "--set", "bins=many"],
            "bins must be an integer",
        ),
        (
            ["train", "nsf", "--data", "8gaussians", "--out", "{tmp}/x", "--batch-size", "0"],
            "batch_size must be at least 1",
        ),
        (
            [
                "train",
                "nsf",
                "--data",
                "8gaussians",
                "--out",
                "{tmp}/x",
                "--config",
                "{tmp}/bad.yaml",
            ],
            "unknown key 'modle'",
        ),
        (["train", "made", "--data", "8gaussians", "--out", "{tmp}/x"], "discrete"),
        (
            ["train", "nsf", "--data", "8gaussians", "--out", "{tmp}/x", "--set", "num_layers=3"],
            "'num_layers' is now 'depth' for model 'nsf'",
        ),
        (["train", "nsf", "--data", "8gaussians"], "--out"),
        (
            ["train", "nsf", "--data", "8gaussians", "--out", "{tmp}/x", "--steps", "x"],
            "invalid int",
        ),
        (["sample", "{tmp}/missing", "--out", "{tmp}/s.npy"], "does not exist"),
        (["eval", "{tmp}"], "not a dgm run directory"),
        (["score", "{run}", "{tmp}/nan.npy", "--out", "{tmp}/o.npy"], "NaN"),
        (["score", "{run}", "{tmp}/wide.npy", "--out", "{tmp}/o.npy"], "shape (5, 3)"),
        (["score", "{run}", "{tmp}/missing.npy", "--out", "{tmp}/o.npy"], "does not exist"),
        (["sample", "{run}", "--out", "{tmp}/s.txt"], ".npy or .png"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(argv, message, nsf_run, tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("modle: nsf\n")
    np.save(tmp_path / "nan.npy", np.array([[0.0, np.nan]]))
    np.save(tmp_path / "wide.npy", np.zeros((5, 3)))
    argv = [a.format(tmp=tmp_path, run=nsf_run) for a in argv]
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith("dgm: error: ") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_run_saved_with_old_option_names_still_loads(nsf_run, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(nsf_run, old)
    doc = yaml.safe_load((old / "config.yaml").read_text())
    doc["model_config"]["num_layers"] = doc["model_config"].pop("depth")  # as written before
    (old / "config.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    model = dgm.load(old)
    assert model.config.depth == 2 and not hasattr(model.config, "num_layers")
    code, _, err = run(capsys, "sample", old, "-n", 3, "--out", tmp_path / "s.npy")
    assert code == 0, err
    assert np.load(tmp_path / "s.npy").shape == (3, 2)


def test_corrupt_weights_are_reported(nsf_run, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(nsf_run, broken)
    w = broken / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    code, _, err = run(capsys, "sample", broken, "--out", tmp_path / "s.npy")
    assert code == 2 and "corrupt" in err


def test_subprocess_exit_code_and_no_traceback(tmp_path):
    """The installed entry point, as a user runs it."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dgm",
            "train",
            "nsf",
            "--data",
            "8gaussians",
            "--out",
            str(tmp_path / "x"),
            "--set",
            "nope=1",
        ],  # fmt: skip
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.startswith("dgm: error: unknown key 'nope'") and "Traceback" not in proc.stderr
    )
    assert not (tmp_path / "x").exists()  # nothing half-written


def test_list_shows_models_and_datasets(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    for name in ("made", "nsf", "8gaussians", "digits", "binarized-mnist"):
        assert name in out


def test_vae_run_writes_latent_plots_and_scores_with_a_named_bound(tmp_path, capsys):
    out = tmp_path / "vae"
    code, _, _ = run(capsys, "train", "vae", "--data", "digits", "--out", out, "--steps", 20,
                     "--no-progress", "--set", "hidden=[32]", "--set", "latent_dim=2",
                     "--set", "eval_k=5")  # fmt: skip
    assert code == 0
    for name in ("reconstructions.png", "latent.png", "samples.png"):
        assert (out / name).stat().st_size > 1000, name
    x = tmp_path / "x.npy"
    assert run(capsys, "sample", out, "-n", 4, "--out", x)[0] == 0
    code, _, err = run(capsys, "score", out, x, "--out", tmp_path / "s.npy", "--k", 7)
    assert code == 0 and "iwae_bound(k=7): a lower bound on log p" in err
    code, _, err = run(capsys, "score", out, x, "--out", tmp_path / "s.npy", "--k", 0)
    assert code == 2 and "--k must be at least 1" in err


def test_k_is_refused_for_exact_models(nsf_run, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((3, 2)))
    code, _, err = run(
        capsys, "score", nsf_run, tmp_path / "x.npy", "--out", tmp_path / "o.npy", "--k", 5
    )
    assert code == 2 and "exact likelihood" in err


def test_a_reader_that_stops_early_is_not_an_error():
    # `dgm list | head -0`: the reader closes the pipe before dgm writes (dgm has not even
    # finished starting); exit 0, nothing on stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "dgm", "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, err
    assert b"Broken pipe" not in err and b"Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_an_absent_device_is_one_sentence_and_leaves_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "nsf", "--data", "8gaussians", "--out", str(out), "--steps", "2",
                 "--device", "cuda", "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("dgm: error:") and len(err.strip().splitlines()) == 1
    assert "cuda" in err and "--device cpu" in err
    assert not out.exists()


def test_a_preprocessing_of_the_wrong_kind_for_the_model_names_the_way_out(tmp_path, capsys):
    # binarize makes discrete data, which a flow cannot take; dequantize makes continuous data,
    # which MADE cannot take: one sentence naming the model's own default, exit 2, nothing written
    for model, pre, default in (("glow", "binarize", "dequantize"), ("made", "dequantize",
                                                                     "identity")):  # fmt: skip
        out = tmp_path / model
        code, _, err = run(capsys, "train", model, "--data", "digits", "--preprocess", pre,
                           "--steps", "1", "--out", out)  # fmt: skip
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        assert f"--preprocess {pre} gives" in err and f"its default here is {default}" in err
        assert not out.exists()
