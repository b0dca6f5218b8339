"""GANs: the four losses against their closed forms, WGAN-GP's penalty against finite differences,
the optimal-discriminator identity, packing, training with the engine's EMA, exact resume,
and the likelihood-free paths of ``dgm score`` / ``dgm eval``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import Tensor

import dgm
from dgm.api import with_train_defaults
from dgm.cli.main import main
from dgm.core.errors import ConfigError, DataError
from dgm.core.io import load_tensors
from dgm.core.spec import DataSpec
from dgm.models.gan import GAN, GANConfig
from dgm.models.gan.losses import (
    LOSSES,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    r1_penalty,
)
from dgm.models.gan.networks import MLPDiscriminator, pack_samples
from dgm.train.config import TrainConfig
from dgm.train.engine import Trainer

D64 = torch.float64
TINY = {"hidden": [16, 16], "latent_dim": 4}


# ---------------------------------------------------------------------------------- losses
def closed_forms(r: Tensor, f: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
    """(discriminator, generator) losses written from the papers' formulas, no softplus."""
    s_r, s_f = torch.sigmoid(r), torch.sigmoid(f)
    d_logistic = -(torch.log(s_r).mean() + torch.log(1 - s_f).mean())
    return {
        "minimax": (d_logistic, torch.log(1 - s_f).mean()),
        "non-saturating": (d_logistic, -torch.log(s_f).mean()),
        "wgan-gp": (f.mean() - r.mean(), -f.mean()),
        "hinge": (
            torch.clamp(1 - r, min=0).mean() + torch.clamp(1 + f, min=0).mean(),
            -f.mean(),
        ),
    }


@pytest.mark.parametrize("kind", LOSSES)
def test_each_loss_matches_its_closed_form_for_both_players(kind):
    g = torch.Generator().manual_seed(0)
    r = 3 * torch.randn(64, generator=g, dtype=D64)
    f = 3 * torch.randn(48, generator=g, dtype=D64)
    d_ref, g_ref = closed_forms(r, f)[kind]
    torch.testing.assert_close(discriminator_loss(r, f, kind), d_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(generator_loss(f, kind), g_ref, rtol=1e-12, atol=1e-12)


def test_minimax_generator_gradient_saturates_and_non_saturating_does_not():
    """d/df log(1 - s(f)) = -s(f) -> 0 when D rejects the fake (f -> -inf);
    d/df -log s(f) = -(1 - s(f)) -> -1 there (Goodfellow et al., 2014, section 3)."""
    f = torch.tensor([-8.0, 0.0, 8.0], dtype=D64, requires_grad=True)
    (g_mm,) = torch.autograd.grad(generator_loss(f, "minimax") * 3, f)
    (g_ns,) = torch.autograd.grad(generator_loss(f, "non-saturating") * 3, f)
    torch.testing.assert_close(g_mm, -torch.sigmoid(f.detach()))
    torch.testing.assert_close(g_ns, -(1 - torch.sigmoid(f.detach())))
    assert abs(g_mm[0]) < 1e-3 and abs(g_ns[0]) > 0.999


def test_unknown_loss_is_one_clear_error():
    with pytest.raises(ConfigError, match="non-saturating"):
        dgm.models.build("gan", DataSpec((2,)), loss="wasserstein")
    with pytest.raises(ConfigError, match="hinge"):
        discriminator_loss(torch.zeros(2), torch.zeros(2), "lsgan")


def fd_gradient_norms(critic, x: Tensor, pack: int, h: float = 1e-6) -> list[float]:
    """|grad D| of each packed input of ``x (B, D)`` by central finite differences."""
    norms = []
    with torch.no_grad():
        for group in range(x.shape[0] // pack):
            sq = 0.0
            for i in range(group * pack, (group + 1) * pack):
                for j in range(x.shape[1]):
                    up, down = x.clone(), x.clone()
                    up[i, j] += h
                    down[i, j] -= h
                    sq += float((critic(up)[group] - critic(down)[group]) / (2 * h)) ** 2
            norms.append(math.sqrt(sq))
    return norms


@pytest.mark.parametrize("pack", [1, 2])
def test_gradient_penalties_match_finite_differences(pack):
    torch.manual_seed(0)
    critic = MLPDiscriminator(3, (8, 8), pack=pack).to(D64)
    real = torch.randn(4, 3, dtype=D64)
    fake = torch.randn(4, 3, dtype=D64) + 1.0
    eps = torch.tensor([0.1, 0.5, 0.7, 1.0], dtype=D64)
    # WGAN-GP: E[(|grad D(x_hat)| - 1)^2] at x_hat = eps real + (1 - eps) fake
    gp = float(gradient_penalty(critic, real, fake, pack=pack, eps=eps).detach())
    x_hat = eps[:, None] * real + (1 - eps[:, None]) * fake  # (4, 3)
    norms = fd_gradient_norms(critic, x_hat, pack)
    expected = sum((n - 1) ** 2 for n in norms) / len(norms)
    assert abs(gp - expected) < 1e-7 * max(1.0, expected)
    assert expected > 1e-3  # not trivially zero
    # R1: E[|grad D(x_real)|^2]
    r1 = float(r1_penalty(critic, real, pack=pack).detach())
    expected = sum(n**2 for n in fd_gradient_norms(critic, real, pack)) / (4 // pack)
    assert abs(r1 - expected) < 1e-7 * max(1.0, expected) and expected > 1e-3


def test_discriminator_loss_with_r1_reuses_the_real_forward_pass_exactly():
    torch.manual_seed(0)
    model = GAN(DataSpec((2,)), GAN.Config(hidden=(8, 8), pack=2, r1_weight=0.3)).double()
    real, fake = torch.randn(8, 2, dtype=D64), torch.randn(8, 2, dtype=D64)
    loss, terms = model._d_loss(real, fake)
    d = model.discriminator
    expected = discriminator_loss(d(real), d(fake), "non-saturating") + 0.15 * r1_penalty(
        d, real, pack=2
    )
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(loss, list(d.parameters()))
    for g, e in zip(grads, torch.autograd.grad(expected, list(d.parameters()))):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)
    assert not real.requires_grad  # the caller's tensor is untouched
    # lazy R1: the scale multiplies the penalty; 0 skips it
    base, terms0 = model._d_loss(real, fake, 0.0)
    lazy, _ = model._d_loss(real, fake, 4.0)
    assert "r1" not in terms0 and "r1" in terms
    torch.testing.assert_close(lazy - base, 4.0 * (loss - base), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("d_steps", "r1_every"), [(4, 4), (3, 2), (1, 3)])
def test_lazy_r1_runs_on_every_kth_discriminator_update_with_weight_k(d_steps, r1_every):
    model = GAN(DataSpec((2,)), GAN.Config(hidden=(8,), d_steps=d_steps, r1_every=r1_every))
    scales: list[float] = []
    d_loss = model._d_loss

    def spy(real, fake, r1_scale=1.0, y=None):
        scales.append(r1_scale)
        return d_loss(real, fake, r1_scale, y)

    model._d_loss = spy  # type: ignore[method-assign]
    model.on_train_start(torch.randn(16, 2))
    for step in range(6):
        out = model.training_step(torch.randn(16, 2), step, lambda loss, group: None)
        updates = range(step * d_steps, (step + 1) * d_steps)
        assert ("r1" in out) == any(u % r1_every == 0 for u in updates)  # logged when computed
    expected = [float(r1_every) if u % r1_every == 0 else 0.0 for u in range(6 * d_steps)]
    assert scales == expected
    assert sum(scales) == pytest.approx(len(scales) * 1.0, abs=r1_every)  # same mean weight


# ---------------------------------------------------------------------------------- networks
def test_packing_concatenates_consecutive_samples():
    x = torch.arange(24.0).reshape(6, 2, 2)  # (6, C=2, 2)
    p = pack_samples(x, 3)  # (2, 6, 2)
    assert p.shape == (2, 6, 2)
    torch.testing.assert_close(p[1], torch.cat([x[3], x[4], x[5]]))
    with pytest.raises(DataError, match="multiple"):
        pack_samples(x[:5], 3)


def test_truncated_noise_is_the_normal_conditioned_on_the_interval():
    gan = GAN(DataSpec((2,)), GANConfig(**TINY)).double()
    torch.manual_seed(0)
    z = gan._noise(200_000, truncation=1.0).flatten()
    assert float(z.abs().max()) <= 1.0
    # N(0, 1) given |z| <= 1: variance 1 - 2 phi(1) / (2 Phi(1) - 1), CDF a rescaled Phi
    phi, Phi = math.exp(-0.5) / math.sqrt(2 * math.pi), 0.5 * (1 + math.erf(1 / math.sqrt(2)))
    var = 1 - 2 * phi / (2 * Phi - 1)
    assert abs(float(z.var()) - var) < 0.005 and abs(float(z.mean())) < 0.005
    for q in (-0.5, 0.0, 0.7):
        want = (0.5 * (1 + math.erf(q / math.sqrt(2))) - (1 - Phi)) / (2 * Phi - 1)
        assert abs(float((z <= q).double().mean()) - want) < 0.005
    torch.manual_seed(1)
    a = gan.sample(5)
    torch.manual_seed(1)
    assert torch.equal(a, gan.sample(5, truncation=0.0))  # 0: the generator's own samples
    assert gan.sample_config({"truncation": "0.5"}).truncation == 0.5
    for bad in (-1.0, float("inf"), True):
        with pytest.raises(ConfigError, match="truncation"):
            gan.sample(2, truncation=bad)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 10, 6)])
def test_conv_networks_give_image_samples_and_one_logit_per_pack(shape):
    m = GAN(DataSpec(shape), GANConfig(width=4, latent_dim=4, pack=2))
    assert m.arch == "conv"
    s = m.sample(6)
    assert s.shape == (6, *shape) and ((s > 0) & (s < 1)).all()
    assert m.discriminator(s).shape == (3,)


def test_architecture_and_pack_errors_are_clear():
    with pytest.raises(ConfigError, match="conv"):
        dgm.models.build("gan", DataSpec((2,)), architecture="conv")
    m = GAN(DataSpec((2,)), GANConfig(**TINY, pack=4))
    with pytest.raises(DataError, match="pack=4"):
        m.loss(torch.randn(3, 2))


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [("pack", 0, "pack must be at least 1"), ("hidden", (16, 0), "hidden sizes"),
     ("r1_weight", -1.0, "r1_weight must be >= 0"),
     ("beta1", 1.5, r"beta1 must be in \[0, 1\)")],
)  # fmt: skip
def test_bad_config_values_are_one_config_error(key, value, says):
    with pytest.raises(ConfigError, match=says) as info:
        GANConfig(**{key: value})
    assert "\n" not in str(info.value)


def test_spectral_norm_bounds_each_discriminator_layer():
    torch.manual_seed(0)
    m = GAN(DataSpec((2,)), GANConfig(hidden=(32, 32), spectral_norm=True, pack=1))
    m.train()
    for _ in range(30):  # power iterations run on training forwards
        m.discriminator(torch.randn(8, 2))
    m.eval()
    for layer in m.discriminator.net:
        if isinstance(layer, torch.nn.Linear):
            sigma = torch.linalg.matrix_norm(layer.weight.detach(), ord=2)
            assert abs(float(sigma) - 1.0) < 0.05


# ---------------------------------------------------------------------------------- training
def test_d_steps_discriminator_updates_per_generator_update():
    m = GAN(DataSpec((2,)), GANConfig(**TINY, d_steps=3))
    calls: list[str] = []
    opts = {g["name"]: torch.optim.Adam(g["params"], lr=1e-3) for g in m.param_groups()}

    def stepper(loss, group):
        calls.append(group)
        opts[group].zero_grad()
        loss.backward()
        opts[group].step()

    out = m.training_step(torch.randn(32, 2), 0, stepper)
    assert calls == ["discriminator"] * 3 + ["generator"]
    assert {"d_loss", "g_loss", "d_real", "d_fake"} <= set(out)
    # the generator step leaves no gradient on the discriminator and re-enables its grads
    assert all(p.requires_grad for p in m.discriminator.parameters())


@pytest.mark.parametrize("conditional", [False, True])
def test_training_step_equals_the_two_pass_loop_on_the_same_draws(conditional):
    """The step judges real and fake in one discriminator pass and steps the generator on the
    last discriminator update's fakes: the same losses and updates, in float64, as separate
    passes on real and fake and a generator loss on those same fakes."""
    spec = DataSpec((2,), num_classes=3) if conditional else DataSpec((2,))
    cfg = GANConfig(**TINY, d_steps=2, pack=2, r1_weight=0.0, conditional=conditional)
    torch.manual_seed(0)
    m = GAN(spec, cfg).double()
    ref = GAN(spec, cfg).double()
    ref.load_state_dict(m.state_dict())
    x = torch.randn(16, 2, dtype=D64)
    y = torch.randint(0, 3, (16,)) if conditional else None
    batch = (x, y) if conditional else x
    m.on_train_start(x)
    ref.on_train_start(x)

    def sgd(model: GAN, log: list):
        def stepper(loss, group):
            log.append((group, loss.detach()))
            params = [p for g in model.param_groups() if g["name"] == group for p in g["params"]]
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, g in zip(params, grads):
                    p -= 0.1 * g

        return stepper

    got: list = []
    torch.manual_seed(1)
    m.training_step(batch, 1, sgd(m, got))
    # the reference: the loop the step replaced, on the same noise (drawn in the same order)
    expected: list = []
    step = sgd(ref, expected)
    torch.manual_seed(1)
    real, yr = ref._real(batch)
    d = ref.discriminator
    for _ in range(cfg.d_steps):
        fake = ref._generate(ref._noise(len(real)), yr)  # the last keeps its graph
        d_loss = discriminator_loss(d(real, yr), d(fake.detach(), yr), cfg.loss)
        if conditional:
            d_loss = d_loss + ref.aux_weight * torch.nn.functional.cross_entropy(
                d.forward_with_classes(real, yr)[1], yr
            )
        step(d_loss, "discriminator")
    g_loss, _ = ref._g_loss(fake, yr)
    step(g_loss, "generator")
    assert [g for g, _ in got] == [g for g, _ in expected]
    for (_, a), (_, b) in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for (k, a), b in zip(m.state_dict().items(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=k)


def test_a_gan_without_a_run_length_trains_the_12000_steps_of_the_mode_benchmark():
    # ring8 8/8 and grid25 25/25 modes on every seed took 12000 steps (gan_modes_*.json); the
    # engine's 1000 do not; a run length the caller gives replaces them
    defaults = dgm.models.get("gan").train_defaults
    assert with_train_defaults(defaults, {})["steps"] == 12000
    assert with_train_defaults(defaults, {"steps": 50})["steps"] == 50
    assert "steps" not in with_train_defaults(defaults, {"max_minutes": 2.0})


def test_a_gan_trains_with_the_engine_ema_by_default(tmp_path):
    # the GAN asks the engine for its weight average (train_defaults); the caller can drop it
    assert dgm.models.get("gan").train_defaults["ema"] == 0.999
    m = GAN(DataSpec((2,)), GANConfig(**TINY))
    t = Trainer(m, torch.randn(64, 2), config=TrainConfig(steps=1, ema=0.999, progress=False),
                out=tmp_path)  # fmt: skip
    assert t.ema is not None and t.ema.decay == 0.999


@pytest.mark.slow
def test_trained_discriminator_approaches_the_optimal_discriminator(one_thread):
    """For a frozen generator, argmin of the logistic loss is D*(x) = p_data / (p_data + p_model)
    (Goodfellow et al., 2014, Proposition 1). p_data = N(0, 1), p_model = N(1, 0.8^2)."""
    torch.manual_seed(0)
    n = 4000
    real = torch.randn(n, 1)
    fake = 1.0 + 0.8 * torch.randn(n, 1)  # fixed samples of the frozen generator
    m = GAN(DataSpec((1,)), GANConfig(hidden=(16, 16), pack=1))
    opt = torch.optim.Adam(m.discriminator.parameters(), lr=1e-2)
    for _ in range(300):
        loss = discriminator_loss(m.discriminator(real), m.discriminator(fake), "non-saturating")
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = torch.linspace(-1.5, 2.5, 41)[:, None]
    with torch.no_grad():
        d = torch.sigmoid(m.discriminator(x))  # (41,)

    def normal(x, mu, sd):
        return torch.exp(-0.5 * ((x - mu) / sd) ** 2) / sd

    p, q = normal(x[:, 0], 0.0, 1.0), normal(x[:, 0], 1.0, 0.8)
    optimum = p / (p + q)
    err = (d - optimum).abs().max()
    assert err < 0.05, f"max |D - D*| = {err:.3f}"
    # and it is not the trivial answer: D* spans a wide range on this grid
    assert optimum.max() - optimum.min() > 0.6


def test_gan_optimizers_get_the_model_betas(tmp_path):
    m = GAN(DataSpec((2,)), GANConfig(**TINY, beta1=0.0, beta2=0.9))
    t = Trainer(m, torch.randn(64, 2), config=TrainConfig(steps=1, progress=False), out=tmp_path)
    assert set(t.optimizers) == {"discriminator", "generator"}
    for opt in t.optimizers.values():
        assert opt.param_groups[0]["betas"] == (0.0, 0.9)


def test_learning_rate_schedule_follows_engine_steps_not_discriminator_steps(tmp_path):
    # d_steps = 4 discriminator updates per engine step: both players' linear decay must still
    # reach the same point of the run, not the discriminator's four times as fast
    m = GAN(DataSpec((2,)), GANConfig(**TINY, d_steps=4))
    cfg = TrainConfig(steps=8, schedule="linear", lr=1e-3, progress=False, checkpoint_every=0)
    t = Trainer(m, torch.randn(256, 2), config=cfg, out=tmp_path)
    t.fit()
    lrs = {g: opt.param_groups[0]["lr"] for g, opt in t.optimizers.items()}
    assert lrs["discriminator"] == pytest.approx(lrs["generator"])
    assert {g: s.last_epoch for g, s in t.schedulers.items()} == {
        "discriminator": 8,
        "generator": 8,
    }


@pytest.fixture(scope="module")
def ring_runs(tmp_path_factory):
    """One uninterrupted 16-step run, and one stopped at step 10 then resumed to step 16.
    Validation every 4 steps: the stopped run also validates at its end (step 10), which must not
    disturb the random stream."""
    root = tmp_path_factory.mktemp("gan")
    common = dict(
        model_config=dict(TINY, loss="wgan-gp", spectral_norm=True),
        batch_size=32,
        eval_every=4,
        eval_size=64,
        checkpoint_every=0,
        log_every=2,
        progress=False,
    )
    full = dgm.train("gan", "ring8", root / "full", steps=16, **common)
    part = dgm.train("gan", "ring8", root / "part", steps=10, **common)
    dgm.train("gan", "ring8", part, resume=True, steps=16)
    return full, part


def test_resume_is_bit_identical_to_an_uninterrupted_run(ring_runs):
    full, part = ring_runs
    a = load_tensors(full / "model.safetensors")
    b = load_tensors(part / "model.safetensors")
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ckpt = sorted((part / "checkpoints").glob("step-*"))[-1]
    names = {p.name for p in ckpt.iterdir()}
    assert "ema.safetensors" in names  # the engine's EMA, asked for by the GAN's defaults
    # the saved weights (what sampling and dgm eval use) are the averaged ones
    ema = load_tensors(ckpt / "ema.safetensors")
    assert all(torch.equal(ema[k], b[k]) for k in b)
    live = load_tensors(ckpt / "model.safetensors")
    assert any(not torch.equal(live[k], b[k]) for k in b if k.startswith("generator."))
    assert any("optim-discriminator" in n for n in names)
    assert any("optim-generator" in n for n in names)


def test_training_logs_the_discriminator_two_sample_statistic(ring_runs):
    full, _ = ring_runs
    logs = [json.loads(s) for s in (full / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in logs if "val_d_accuracy" in r]
    assert [r["step"] for r in val] == [4, 8, 12, 16]
    assert all(0.0 <= r["val_d_accuracy"] <= 1.0 and 0.0 <= r["val_d_auc"] <= 1.0 for r in val)
    cfg = (full / "config.yaml").read_text()
    assert "lr: 0.001" in cfg and "ema: 0.999" in cfg  # the model's train_defaults


def test_score_explains_there_is_no_likelihood(ring_runs, tmp_path, capsys):
    full, _ = ring_runs
    np.save(tmp_path / "x.npy", np.zeros((3, 2), dtype=np.float32))
    code = main(["score", str(full), str(tmp_path / "x.npy"), "--out", str(tmp_path / "o.npy")])
    assert code == 2
    err = capsys.readouterr().err
    assert "no likelihood" in err and "dgm eval" in err and err.count("\n") == 1


def test_eval_reports_likelihood_free_metrics(ring_runs):
    from dgm.api import load_run
    from dgm.eval.run import evaluate

    full, _ = ring_runs
    run = load_run(full)
    res = evaluate(run.model, dgm.data.load("ring8"), run.preprocessor, num_samples=200)
    assert res["likelihood"] is None
    assert {"nll", "kl", "anomaly"} <= set(res["skipped"])
    for key in ("c2st_accuracy", "mmd2", "fid", "modes_captured", "modes_high_quality"):
        assert key in res


def test_cli_sample_and_digits_conv_end_to_end(tmp_path):
    out = tmp_path / "d"
    code = main(
        ["train", "gan", "--data", "digits", "--out", str(out), "--steps", "3",
         "--batch-size", "16", "--set", "width=4", "--no-progress"]
    )  # fmt: skip
    assert code == 0
    assert main(["sample", str(out), "-n", "6", "--out", str(tmp_path / "s.npy")]) == 0
    s = np.load(tmp_path / "s.npy")
    assert s.shape == (6, 1, 8, 8) and s.min() >= 0 and s.max() <= 16
