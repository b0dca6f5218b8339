"""The Python face (``dgm.train``, ``dgm.load``), the same five lines for every registered model:
train on a tensor, load, sample raw data without grad, score it with ``log_prob`` or the named
bound."""

from __future__ import annotations

import inspect
import json
import pydoc

import numpy as np
import pytest
import torch
import yaml

import dgm
from dgm.api import TrainedModel, train_defaults_for, with_train_defaults
from dgm.core.config import build_config
from dgm.core.errors import DataError, DgmError
from dgm.core.spec import DataSpec
from dgm.data import Identity, from_arrays
from dgm.models import build, entries, get, names
from dgm.train.config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

N = 40  # examples: 32 / 4 / 4 after the 80 / 10 / 10 split


def arrays_for(cls) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Raw data of the kind of the model's example spec (discrete vectors are binary: only 0/1
    vectors read as discrete), with labels when the spec has classes."""
    spec = cls.example.spec
    g = torch.Generator().manual_seed(0)
    if spec.kind == "continuous":
        x = torch.randn(N, *spec.event_shape, generator=g)
        levels = None
    else:
        levels = spec.levels if spec.is_image else 2
        x = torch.randint(0, levels, (N, *spec.event_shape), generator=g).float()
        x.view(N, -1)[0, 0] = levels - 1  # the top level occurs: levels = max + 1
    y = torch.arange(N) % spec.num_classes if spec.num_classes else None
    return x, y


@pytest.mark.parametrize("cls", entries(), ids=lambda c: c.name)
def test_the_same_five_lines_for_every_model(cls, tmp_path):
    x, y = arrays_for(cls)
    data = x if y is None else (x, y)
    cfg = dict(cls.example.config)
    run = dgm.train(cls.name, data, tmp_path / "run", steps=2, progress=False, model_config=cfg)
    m = dgm.load(run)
    s = m.sample(4)
    assert isinstance(m, TrainedModel)
    assert s.shape == (4, *cls.example.spec.event_shape) and s.dtype == m.dtype
    assert s.requires_grad is False and torch.isfinite(s).all()
    if x.max() == x.max().round() and (x == x.round()).all():  # discrete raw data: its levels
        assert (s == s.round()).all() and s.min() >= 0 and s.max() <= x.max()
    if m.exact_likelihood:
        ll = m.log_prob(s)
    elif m.likelihood_bound:
        ll = getattr(m, m.likelihood_bound)(s)
    else:
        with pytest.raises(DgmError, match="no exact likelihood"):
            m.log_prob(s)
        return
    assert ll.shape == (4,) and ll.dtype == m.dtype and torch.isfinite(ll).all()
    assert ll.requires_grad is False


def test_glow_on_digits_samples_and_scores_raw_levels(tmp_path):
    """Glow's logit front end wants [0, 1]; through its dequantizer it takes raw levels 0..16
    (was: "rescale it"), and its samples are levels with no autograd graph (were model-space
    values with requires_grad=True)."""
    digits = dgm.data.load("digits")
    cfg = {"levels": 1, "depth": 1, "width": 4}
    run = dgm.train("glow", digits.train[:60].numpy(), tmp_path / "g", steps=2, progress=False,
                    model_config=cfg)  # fmt: skip
    m = dgm.load(run)
    s = m.sample(5)
    assert not s.requires_grad and s.shape == (5, 1, 8, 8)
    assert set(s.unique().tolist()) <= set(range(17))
    ll = m.log_prob(digits.test[:3])
    assert ll.shape == (3,) and torch.isfinite(ll).all()
    # the preprocessing's log-determinant, -D log 17, is part of it
    with m.inference():
        xm, _ = m.preprocessor(digits.test[:3])
        model_space = m.model.log_prob(xm)
    assert (ll - model_space).abs().min() > 64 * np.log(17) - 64 * 1.0  # not the raw density
    values, info = m.log_likelihood(digits.test[:3])
    assert info.kind == "bound" and info.discrete and info.method == "log_prob"
    assert "dequantization bound" in str(info)


def test_the_bound_has_its_own_name(tmp_path):
    x = torch.randint(0, 2, (N, 6)).float()
    run = dgm.train("vae", x, tmp_path / "v", steps=2, progress=False,
                    model_config={"latent_dim": 2, "hidden": [8], "eval_k": 2})  # fmt: skip
    m = dgm.load(run)
    assert m.likelihood_bound == "iwae_bound" and "iwae_bound" in dir(m)
    assert m.iwae_bound(x[:3], k=2).shape == (3,)
    with pytest.raises(DgmError, match="iwae_bound"):
        m.log_prob(x[:3])
    with pytest.raises(AttributeError, match=r"\.model"):
        m.elbo  # noqa: B018 - not its bound: the model space method lives on .model


def test_train_takes_arrays_with_labels_and_a_run_reloads_them(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)
    y = np.arange(50) % 3
    run = dgm.train("nsf", (x, y), tmp_path / "r", steps=2, progress=False,
                    model_config={"depth": 1, "hidden": [8]})  # fmt: skip
    ds = dgm.data.load(str(run / "data.npz"))
    assert ds.spec.num_classes == 3 and ds.train.shape == (40, 2)
    assert torch.equal(ds.test, from_arrays(x, y).test)
    dgm.train("nsf", None, run, resume=True, steps=3, progress=False)  # data from data.npz


def test_bad_data_is_one_sentence(tmp_path):
    with pytest.raises(DataError, match="tensor or array"):
        dgm.train("nsf", [[0.0, 1.0]], tmp_path / "a", steps=1)
    with pytest.raises(DataError, match="one integer label per row"):
        dgm.train("nsf", (torch.randn(10, 2), torch.zeros(9)), tmp_path / "b", steps=1)
    with pytest.raises(DataError, match="NaN"):
        dgm.train("nsf", torch.full((10, 2), float("nan")), tmp_path / "c", steps=1)
    assert not (tmp_path / "b").exists()


def test_help_shows_the_real_train_and_load():
    sig = inspect.signature(dgm.train)
    assert list(sig.parameters)[:3] == ["model", "data", "out"]
    assert "tensor" in inspect.getdoc(dgm.train).lower()
    assert "Train ``model``" in pydoc.render_doc(dgm.train)
    assert {"train", "load"} <= set(dir(dgm))
    assert "TrainedModel" in pydoc.render_doc(dgm.load)


# ---- a model's own training options (train_defaults) under the caller's


@pytest.fixture(scope="module")
def gaussians():
    return dgm.data.load("8gaussians")


def run_with_defaults(monkeypatch, data, tmp_path, defaults, **options):
    nsf = get("nsf")
    monkeypatch.setattr(nsf, "train_defaults", defaults)
    out = dgm.train(
        "nsf", data, tmp_path / "run", model_config=dict(nsf.example.config),
        batch_size=32, progress=False, **options,
    )  # fmt: skip
    train = yaml.safe_load((out / "config.yaml").read_text())["train"]
    return train, json.loads((out / "summary.json").read_text())


def test_the_models_own_step_count_is_used_when_the_caller_gives_none(
    monkeypatch, gaussians, tmp_path
):
    train, summary = run_with_defaults(monkeypatch, gaussians, tmp_path, {"steps": 3, "lr": 2e-3})
    assert train["steps"] == 3 and summary["steps"] == 3
    assert train["lr"] == 2e-3


def test_the_callers_steps_replace_the_models(monkeypatch, gaussians, tmp_path):
    train, summary = run_with_defaults(
        monkeypatch, gaussians, tmp_path, {"steps": 3, "lr": 2e-3}, steps=2
    )
    assert train["steps"] == 2 and summary["steps"] == 2
    assert train["lr"] == 2e-3  # the other defaults stay


def test_the_callers_epochs_replace_the_models_steps(monkeypatch, gaussians, tmp_path):
    # (the time budget only keeps the epoch short)
    train, _ = run_with_defaults(
        monkeypatch, gaussians, tmp_path, {"steps": 3}, epochs=1, max_minutes=0.001
    )
    assert train["steps"] is None and train["epochs"] == 1


def test_a_time_budget_replaces_the_models_steps_and_its_schedule_decays_over_it(
    monkeypatch, gaussians, tmp_path
):
    defaults = {"steps": 3, "schedule": "cosine"}
    train, _ = run_with_defaults(monkeypatch, gaussians, tmp_path, defaults, max_minutes=0.001)
    assert train["steps"] is None and train["max_minutes"] == 0.001
    assert train["schedule"] == "cosine" and train["schedule_clock"] == "time"


@pytest.mark.parametrize("name", names())
def test_every_models_train_defaults_make_a_valid_run_alone_with_steps_or_a_time_budget(name):
    defaults = get(name).train_defaults
    for options, steps in (
        ({}, defaults.get("steps")),
        ({"steps": 7}, 7),
        ({"max_minutes": 1.0}, None),
    ):
        cfg = build_config(TrainConfig, with_train_defaults(defaults, options), what="training")
        assert cfg.steps == steps
        assert cfg.total_steps(100) is not None or cfg.max_minutes == 1.0


MNIST_SPEC = DataSpec((1, 28, 28), kind="discrete", levels=256)


@pytest.mark.parametrize("name", names())
def test_every_models_large_image_defaults_make_a_valid_run(name):
    """On MNIST-sized images a model's own recipe (``large_image_train_defaults``) is a valid
    training config that ends by itself, and the caller's run length still replaces it."""
    cls = get(name)
    defaults = train_defaults_for(cls, MNIST_SPEC)
    cfg = build_config(TrainConfig, with_train_defaults(defaults, {}), what="training")
    steps = build_config(TrainConfig, with_train_defaults(defaults, {"steps": 5}), what="training")
    assert steps.steps == 5 and not steps.max_minutes
    assert cfg.steps is not None or cfg.epochs is not None or cfg.max_minutes is not None
    if cls.large_image_train_defaults:
        assert cfg.max_minutes == cls.large_image_train_defaults["max_minutes"]
        assert cfg.steps is None  # the budget replaced the vectors' step count
        if cfg.schedule != "constant":
            assert cfg.schedule_clock == "time"  # the decay follows the budget
    assert train_defaults_for(cls, DataSpec((2,))) == cls.train_defaults
    assert train_defaults_for(cls, DataSpec((1, 8, 8), kind="discrete", levels=17)) == (
        cls.train_defaults
    )


def test_diffusion_on_mnist_sized_images_trains_with_the_benchmark_recipe(tmp_path):
    """``dgm.train`` picks the defaults for the data it loaded: batches of 64, EMA and the
    16-channel U-Net on 28x28 images; the caller's steps replace the 30-minute budget."""
    x = torch.randint(0, 256, (40, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    out = dgm.train("ddpm", x.numpy().astype(np.uint8), tmp_path / "ddpm", steps=1,
                    progress=False, checkpoint_every=0)  # fmt: skip
    doc = yaml.safe_load((out / "config.yaml").read_text())
    assert doc["train"]["batch_size"] == 64 and doc["train"]["ema"] == 0.999
    assert doc["train"]["steps"] == 1 and not doc["train"]["max_minutes"]
    model = dgm.load(out).model
    first = next(m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.out_channels == 16


def test_a_trained_model_scores_large_inputs_in_batches():
    """``Run.log_prob`` and ``Run.log_likelihood`` stream their input in the model's inference
    batches (41 MNIST-sized images for a convolutional model), with the values of one pass over
    everything."""
    spec = DataSpec((1, 28, 28), "discrete", levels=2)
    model = build("pixelcnn", spec, width=4, depth=1, head=4)
    run = TrainedModel(model, Identity(), spec)
    sizes: list[int] = []
    original = model.log_prob

    def counting(x, y=None):
        sizes.append(int(x.shape[0]))
        return original(x)

    model.log_prob = counting  # type: ignore[method-assign]
    x = torch.randint(0, 2, (100, 1, 28, 28), generator=torch.Generator().manual_seed(0)).float()
    values = run.log_prob(x)
    assert sizes == [41, 41, 18]
    sizes.clear()
    lik, _ = run.log_likelihood(x)
    assert sizes == [41, 41, 18]
    model.log_prob = original  # type: ignore[method-assign]
    with model.inference():
        whole = model.log_prob(x)
    torch.testing.assert_close(values, whole.to(values.dtype), rtol=0, atol=1e-4)
    torch.testing.assert_close(lik, values)


def test_sampling_draws_diffusion_images_in_inference_batches():
    """``Run.sample`` draws a diffusion model's images in calls of its inference batch (41 MNIST
    images; a solver step over 400 at once was 1.6x slower) and other models' in calls of up
    to 1000, with the labels split alike."""
    spec = DataSpec((1, 28, 28), num_classes=3)
    cfg = {"timesteps": 12, "unet_width": 8, "time_dim": 8, "unet_mults": (1,)}
    model = build("ddpm", spec, conditional=True, **cfg)
    assert model.conditional and model.sample_batch() == 41
    assert build("made", DataSpec((1, 28, 28), "discrete", levels=2)).sample_batch() == 1000
    calls: list[tuple[int, list[int]]] = []

    def counting(n, y=None, **options):
        calls.append((n, y.tolist()))
        return torch.zeros(n, 1, 28, 28)

    model.sample = counting  # type: ignore[method-assign]
    run = TrainedModel(model, Identity(), spec, [1, 1, 1])
    y = torch.arange(100) % 3
    x, labels = run.sample_with_labels(100, y)
    assert [n for n, _ in calls] == [41, 41, 18] and x.shape == (100, 1, 28, 28)
    assert sum((ys for _, ys in calls), []) == y.tolist() and torch.equal(labels, y)
