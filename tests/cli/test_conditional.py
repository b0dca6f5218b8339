"""One way to ask a conditional model: `dgm sample --label/--labels`, labels drawn from the
training class frequencies when none are given (and written beside the samples), `--guidance`,
`dgm score --labels`, and the Python face `dgm.load(DIR).sample(n, y=...)`/`log_prob(x, y)`."""

from __future__ import annotations

import base64
import json
import re
import shutil

import numpy as np
import pytest
import torch

import dgm
from conftest import one_sentence_error
from conftest import run_cli as run
from dgm.cli.main import main
from dgm.core.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--set", "hidden=[16]", "--steps", "3", "--no-progress", "--data", "digits"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cond")
    for name, extra in (("cond", ["--set", "conditional=true"]), ("plain", [])):
        assert main(["train", "made", "--out", str(root / name), *TINY, *extra]) == 0
    return root


def test_a_labelled_run_keeps_its_class_counts(runs):
    counts = json.loads((runs / "cond" / "classes.json").read_text())["class_counts"]
    y = dgm.data.load("digits").train_labels
    assert counts == torch.bincount(y, minlength=10).tolist()


def test_label_asks_for_one_class_and_is_written_beside_the_samples(runs, tmp_path, capsys):
    out = tmp_path / "s.npy"
    code, _, err = run(capsys, "sample", runs / "cond", "-n", 7, "--label", 3, "--out", out)
    assert code == 0, err
    assert np.load(out).shape == (7, 1, 8, 8)
    assert np.load(tmp_path / "s_labels.npy").tolist() == [3] * 7


def test_labels_file_gives_one_label_per_sample(runs, tmp_path, capsys):
    np.save(tmp_path / "y.npy", np.array([0, 9, 4]))
    out = tmp_path / "s.png"
    code, _, err = run(
        capsys, "sample", runs / "cond", "--labels", tmp_path / "y.npy", "--out", out
    )
    assert code == 0, err
    assert out.is_file() and np.load(tmp_path / "s_labels.npy").tolist() == [0, 9, 4]


def test_no_label_draws_the_training_class_frequencies(runs, tmp_path, capsys):
    out = tmp_path / "s.npy"
    code, _, err = run(capsys, "sample", runs / "cond", "-n", 400, "--out", out)
    assert code == 0 and "training class frequencies" in err
    y = np.load(tmp_path / "s_labels.npy")
    assert y.shape == (400,) and set(y.tolist()) <= set(range(10)) and len(set(y.tolist())) >= 8


@pytest.mark.parametrize(
    "which,argv,words",
    [
        ("cond", ["--label", "10"], "label 10 is not a class of this run; its classes are 0..9"),
        ("cond", ["--label", "-1"], "label -1 is not a class"),
        ("plain", ["--label", "3"], "--label needs a conditional model"),
        ("cond", ["--guidance", "2"], "guidance needs an unconditional branch"),
        ("cond", ["-n", "4", "--labels", "Y"], "has 3 labels for 4 rows"),
    ],
)
def test_bad_labels_are_one_sentence(runs, tmp_path, capsys, which, argv, words):
    np.save(tmp_path / "y.npy", np.array([0, 1, 2]))
    argv = [str(tmp_path / "y.npy") if a == "Y" else a for a in argv]
    code, _, err = run(capsys, "sample", runs / which, *argv, "--out", tmp_path / "s.npy")
    assert words in one_sentence_error(code, err)
    assert not (tmp_path / "s.npy").exists()


def test_score_with_labels_is_log_p_x_given_y(runs, tmp_path, capsys):
    x = dgm.data.load("digits").test[:5].numpy()
    y = np.array([1, 2, 3, 4, 5])
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    code, _, err = run(
        capsys, "score", runs / "cond", tmp_path / "x.npy", "--labels", tmp_path / "y.npy",
        "--out", tmp_path / "s.npy",
    )  # fmt: skip
    assert code == 0, err
    model = dgm.load(runs / "cond")
    expected = model.log_prob(torch.as_tensor(x), torch.as_tensor(y)).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), expected, rtol=1e-6)
    np.save(tmp_path / "y.npy", np.array([1, 2, 3, 4, 11]))
    code, _, err = run(
        capsys, "score", runs / "plain", tmp_path / "x.npy", "--labels", tmp_path / "y.npy",
        "--out", tmp_path / "s.npy",
    )  # fmt: skip
    assert "--labels needs a conditional model" in one_sentence_error(code, err)


def test_python_face_samples_and_scores_with_labels(runs):
    model = dgm.load(runs / "cond")
    assert model.num_classes == 10
    torch.manual_seed(0)
    x, y = model.sample_with_labels(6, y=[0, 1, 2, 3, 4, 5])
    assert x.shape == (6, 1, 8, 8) and y.tolist() == [0, 1, 2, 3, 4, 5]
    assert model.sample(3, y=7).shape == (3, 1, 8, 8)
    # the same seed and labels give the same samples whether the labels are given or drawn
    torch.manual_seed(1)
    drawn_x, drawn_y = model.sample_with_labels(5)
    torch.manual_seed(1)
    model.draw_labels(5)
    np.testing.assert_array_equal(model.sample(5, y=drawn_y).numpy(), drawn_x.numpy())
    lp = model.log_prob(x, y)
    assert lp.shape == (6,) and torch.isfinite(lp).all()
    assert not torch.equal(lp, model.log_prob(x, (y + 1) % 10))  # the label matters
    with pytest.raises(DataError, match="must lie in 0..9"):
        model.sample(2, y=[0, 10])
    with pytest.raises(DataError, match="unconditional"):
        dgm.load(runs / "plain").sample(2, y=[0, 1])


def test_class_prior_is_the_training_frequencies(runs):
    model = dgm.load(runs / "cond")
    counts = json.loads((runs / "cond" / "classes.json").read_text())["class_counts"]
    expected = torch.tensor(counts, dtype=torch.float64) / sum(counts)
    torch.testing.assert_close(model.class_prior(), expected)


def test_complete_fills_the_missing_entries_and_keeps_the_observed(runs, tmp_path, capsys):
    x = dgm.data.load("digits").test[:4].numpy()
    mask = np.zeros((1, 8, 8), dtype=np.int64)
    mask[:, :4] = 1  # the top half: a prefix of the raster order, any mask for made
    mask[:, 6, 2] = 1
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "m.npy", mask)
    np.save(tmp_path / "y.npy", np.array([0, 1, 2, 3]))
    argv = ["complete", runs / "cond", tmp_path / "x.npy", "--mask", tmp_path / "m.npy",
            "--labels", tmp_path / "y.npy", "--out", tmp_path / "out.npy"]  # fmt: skip
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    out = np.load(tmp_path / "out.npy")
    keep = np.broadcast_to(mask, x.shape).astype(bool)
    assert out.shape == x.shape and (out[keep] == x[keep]).all()
    assert ((out >= 0) & (out <= 16) & (out == np.round(out))).all()
    code, _, err = run(capsys, *argv, "--set", "particles=4", "--set", "temperature=0.5")
    assert code == 0, err
    code, _, err = run(capsys, *argv, "--set", "resample=4")
    assert "unknown key 'resample'" in one_sentence_error(code, err)
    np.save(tmp_path / "y.npy", np.array([0, 1, 2, 30]))
    code, _, err = run(capsys, *argv)
    assert "label 30 is not a class" in one_sentence_error(code, err)


def test_complete_with_a_bad_mask_is_one_sentence(runs, tmp_path, capsys):
    np.save(tmp_path / "x.npy", dgm.data.load("digits").test[:2].numpy())
    np.save(tmp_path / "m.npy", np.full((3, 3), 1))
    code, _, err = run(
        capsys, "complete", runs / "plain", tmp_path / "x.npy", "--mask", tmp_path / "m.npy",
        "--out", tmp_path / "out.npy",
    )  # fmt: skip
    assert "--mask" in one_sentence_error(code, err) and "(1, 8, 8)" in err


def test_a_model_that_cannot_complete_says_so(tmp_path, capsys):
    out = tmp_path / "nsf"
    assert main(["train", "nsf", "--data", "8gaussians", "--out", str(out), "--steps", "2",
                 "--no-progress", "--set", "depth=1", "--set", "hidden=[8]"]) == 0  # fmt: skip
    np.save(tmp_path / "x.npy", np.zeros((2, 2)))
    np.save(tmp_path / "m.npy", np.array([1, 0]))
    code, _, err = run(
        capsys, "complete", out, tmp_path / "x.npy", "--mask", tmp_path / "m.npy",
        "--out", tmp_path / "out.npy",
    )  # fmt: skip
    assert "model 'nsf' cannot complete" in one_sentence_error(code, err)


def test_eval_reports_conditional_accuracy(runs, tmp_path, capsys):
    code, out, err = run(
        capsys, "eval", runs / "cond", "--metrics", "conditional", "--num-samples", 40,
        "--no-progress", "--data-dir", tmp_path,
    )  # fmt: skip
    assert code == 0, err
    res = json.loads(out)
    assert 0 <= res["cond_accuracy"] <= 1 and res["cond_samples_per_class"] == 4
    assert len(res["cond_fid_per_class"]) == 10 and "conditional accuracy" in err
    code, _, err = run(capsys, "eval", runs / "cond", "--guidance", "0,1", "--no-progress")
    assert "guidance needs an unconditional branch" in one_sentence_error(code, err)
    code, _, err = run(capsys, "eval", runs / "plain", "--metrics", "conditional")
    assert "unconditional" in one_sentence_error(code, err)


def test_eval_draws_the_temperature_curve_and_takes_sampling_options(runs, tmp_path, capsys):
    base = ["eval", runs / "cond", "--metrics", "conditional", "--num-samples", 40,
            "--no-progress", "--data-dir", tmp_path]  # fmt: skip
    code, out, err = run(capsys, *base, "--temperature", "1,0.25")
    assert code == 0, err
    curve = json.loads(out)["temperature_curve"]
    assert [p["temperature"] for p in curve] == [1.0, 0.25] and "temperature T=0.25" in err
    code, out, err = run(capsys, *base, "--set", "temperature=0.25")
    assert code == 0, err
    res = json.loads(out)
    assert res["sample_options"] == {"temperature": 0.25} and "temperature=0.25" in err
    # the same seed and option: the curve's point is the run at that temperature
    assert res["cond_accuracy"] == curve[1]["accuracy"] and res["cond_fid"] == curve[1]["fid"]
    assert curve[0]["fid"] != curve[1]["fid"]  # the option reached the sampler
    saved = json.loads((runs / "cond" / "eval.json").read_text())
    assert saved["sample_options"] == {"temperature": 0.25}
    code, _, err = run(capsys, *base, "--temperature", "1,hot")
    assert "--temperature takes comma-separated numbers" in one_sentence_error(code, err)
    code, _, err = run(capsys, *base, "--set", "heat=2")
    assert "unknown key 'heat'" in one_sentence_error(code, err)
    code, _, err = run(capsys, "eval", runs / "plain", "--temperature", "1,0.5")
    assert "unconditional" in one_sentence_error(code, err)


@pytest.mark.parametrize(
    "key, values, caption, point",
    [
        ("guidance", (0, 1, 4), "over guidance weights w", "w=4"),
        ("temperature", (1, 0.7, 0.5), "over temperatures T", "T=0.7"),
    ],
)
def test_report_draws_the_curve(runs, tmp_path, capsys, key, values, caption, point):
    run_dir = tmp_path / "cond"
    shutil.copytree(runs / "cond", run_dir)
    curve = [{key: v, "accuracy": a, "accuracy_stderr": 0.01, "fid": f}
             for v, a, f in zip(values, (0.8, 0.9, 0.97), (3.0, 2.5, 6.0))]  # fmt: skip
    ev = {"cond_accuracy": 0.8, f"{key}_curve": curve}
    (run_dir / "eval.json").write_text(json.dumps(ev))
    code, _, err = run(capsys, "report", run_dir, "--out", tmp_path / "r.html")
    assert code == 0, err
    html = (tmp_path / "r.html").read_text()
    assert f"conditional accuracy (± standard error) against FID* {caption}" in html
    svgs = [
        base64.b64decode(u).decode()
        for u in re.findall(r"data:image/svg\+xml;base64,([^'\"]+)", html)
    ]
    assert any(point in svg for svg in svgs)  # the values label the points of the curve
