"""Class conditioning across the families (issue 27): labels, label dropout, classifier-free
guidance, and likelihoods that stay honest.

The families' conformance (a conditional variant trains one step and samples with labels) is in
``tests/test_conformance.py``; here are the checks of what conditioning means: two well-separated
2-D classes are drawn on the side of their label, guidance weight 0 is the conditional sampler and
-1 the unconditional one, and an exact conditional model's ``log p(x | y)`` mixes to its
``log p(x)``.
"""

from __future__ import annotations

import pytest
import torch

from conftest import perturb
from dgm.core.errors import ConfigError, DataError
from dgm.core.spec import DataSpec
from dgm.data import from_arrays
from dgm.eval.conditional import conditional_metrics
from dgm.models import build, get
from dgm.models.ebm.ebm import CLASS_BASE_STEPS

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC2 = DataSpec((2,), num_classes=2)


def two_classes(n: int, seed: int = 0, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0 around (-2, 0), class 1 around (2, 0), std 0.3: the class is the sign of x_0."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = 0.3 * torch.randn(n, 2, generator=g, dtype=dtype)
    x[:, 0] += 4.0 * y.to(dtype) - 2.0
    return x, y


def fit(model, steps: int, lr: float = 3e-3, n: int = 256, seed: int = 0):
    """``steps`` Adam steps of ``model.training_step`` on fresh two-class batches."""
    x, y = two_classes(2048, seed=seed + 100, dtype=model.dtype)
    model.on_train_start(x, y if model.conditional else None)
    opt = {g["name"]: torch.optim.Adam(g["params"], lr=lr) for g in model.param_groups()}

    def stepper(loss, group="model"):
        opt[group].zero_grad()
        loss.backward()
        opt[group].step()

    model.train()
    for step in range(steps):
        model.training_step(two_classes(n, seed=seed + step, dtype=model.dtype), step, stepper)
    model.eval()
    return model


def side_accuracy(samples: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of samples on the side of their label (the fixed rule of :func:`two_classes`)."""
    return float(((samples[:, 0] > 0).long() == y).double().mean())


# ---------------------------------------------------------------------------------- diffusion
DIFFUSION = {
    "ddpm": {"timesteps": 50, "width": 32, "depth": 2, "time_dim": 16},
    "ncsn": {"width": 32, "depth": 2, "time_dim": 16, "num_sigmas": 5, "sigma_max": 3.0},
    "score-sde": {"width": 32, "depth": 2, "time_dim": 16},
    "flow-matching": {"width": 32, "depth": 2, "time_dim": 16},
}
FEW_STEPS = {
    "ddpm": {"sampler": "ddim", "steps": 5},
    "ncsn": {"steps_each": 3},
    "score-sde": {"steps": 10},
    "flow-matching": {"method": "euler", "steps": 5},
}


def tiny_diffusion(name: str, **extra):
    torch.manual_seed(0)
    return build(name, SPEC2, conditional=True, **{**DIFFUSION[name], **extra}).double()


@pytest.mark.parametrize("name", list(DIFFUSION))
def test_guidance_zero_is_the_conditional_sampler_and_minus_one_the_unconditional(name):
    model = tiny_diffusion(name).eval()
    y = torch.tensor([0, 1, 1, 0, 1])
    opts = FEW_STEPS[name]

    def draw(**kw):
        torch.manual_seed(7)
        with model.inference():
            return model.sample(5, generator=torch.Generator().manual_seed(3), **opts, **kw)

    conditional = draw(y=y)
    assert torch.equal(draw(y=y, guidance=0.0), conditional)
    unconditional = draw()  # no labels: the null-class branch
    assert not torch.allclose(unconditional, conditional)
    assert torch.equal(draw(y=y, guidance=-1.0), unconditional)
    assert not torch.allclose(draw(y=y, guidance=2.0), conditional)


@pytest.mark.parametrize("name", list(DIFFUSION))
def test_guidance_refuses_what_it_cannot_do(name):
    opts = FEW_STEPS[name]
    plain = build(name, SPEC2, **DIFFUSION[name]).double()
    with pytest.raises(ConfigError, match="conditional"):
        plain.sample(2, guidance=1.0, **opts)
    with pytest.raises(DataError, match="unconditional"):
        plain.sample(2, y=torch.tensor([0, 1]), **opts)
    model = tiny_diffusion(name)
    with pytest.raises(ConfigError, match=">= -1"):
        model.sample(2, y=torch.tensor([0, 1]), guidance=-2.0, **opts)
    with pytest.raises(DataError, match="labels"):
        model.sample(2, guidance=1.0, **opts)
    with pytest.raises(DataError, match="0..1"):
        model.sample(2, y=torch.tensor([0, 2]), **opts)
    no_branch = tiny_diffusion(name, label_dropout=0.0)
    with pytest.raises(ConfigError, match="label_dropout=0"):
        no_branch.sample(2, y=torch.tensor([0, 1]), guidance=1.0, **opts)
    with pytest.raises(DataError, match="label_dropout=0"):
        no_branch.sample(2, **opts)


def test_label_dropout_replaces_that_fraction_of_labels_by_the_null_class():
    model = tiny_diffusion("ddpm", label_dropout=0.25)
    torch.manual_seed(0)
    y = torch.randint(0, 2, (20000,))
    out = model.train_labels(y, 20000)
    null = out == 2
    # binomial(20000, 0.25): standard deviation 0.003 of the fraction
    assert abs(float(null.double().mean()) - 0.25) < 0.015
    assert torch.equal(out[~null], y[~null])
    assert torch.equal(tiny_diffusion("ddpm", label_dropout=0.0).train_labels(y, 20000), y)


def test_a_conditional_network_changes_with_the_label():
    model = tiny_diffusion("ddpm")
    z, t = torch.randn(3, 2, dtype=torch.float64), torch.tensor([5, 5, 5])
    a = model.eps(z, t, torch.tensor([0, 0, 0]))
    b = model.eps(z, t, torch.tensor([1, 1, 1]))
    c = model.eps(z, t, torch.tensor([2, 2, 2]))  # the null class
    assert not torch.allclose(a, b) and not torch.allclose(a, c)


def test_conditional_flow_matching_draws_each_class_and_scores_it_by_its_label():
    """Flow matching (the diffusion family's ODE model) on two separated classes: samples fall on
    the side of their label, and the exact ODE log p(x | y) of held-out points is higher under
    their own label than under the other."""
    model = fit(tiny_diffusion("flow-matching", rtol=1e-3, atol=1e-3), steps=300)
    y = torch.arange(200) % 2
    torch.manual_seed(1)
    with model.inference():
        s = model.sample(200, y=y, method="euler", steps=20)
    assert side_accuracy(s, y) > 0.95  # chance: 0.5
    x, yt = two_classes(20, seed=999)
    with model.inference():
        own, other = model.log_prob(x, yt), model.log_prob(x, 1 - yt)
        marginal = model.log_prob(x)  # the unconditional branch
    assert float((own > other).double().mean()) > 0.95
    assert torch.isfinite(marginal).all()


def test_conditional_ddpm_draws_each_class():
    model = fit(tiny_diffusion("ddpm"), steps=300)
    y = torch.arange(200) % 2
    torch.manual_seed(1)
    with model.inference():
        s = model.sample(200, y=y, sampler="ddim", steps=20)
        guided = model.sample(200, y=y, sampler="ddim", steps=20, guidance=2.0)
    assert side_accuracy(s, y) > 0.95
    assert side_accuracy(guided, y) > 0.95


# ---------------------------------------------------------------------------------------- GAN
def test_projection_discriminator_adds_the_label_embedding_dotted_with_the_features():
    """Miyato & Koyama's D(x, y) = psi(phi(x)) + <V_y, phi(x)>; a pack of m samples adds one
    table's row per position."""
    torch.manual_seed(0)
    model = build("gan", SPEC2, conditional=True, hidden=(8, 8), pack=2).double()
    d = model.discriminator
    x = torch.randn(4, 2, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 1])
    phi = d.net[:-1](x.reshape(2, 4))  # (2, 8): two packs of two samples
    table = d.project.embed.weight  # (2 positions * 2 classes, 8)
    v = torch.stack([table[0 * 2 + 0] + table[1 * 2 + 1], table[0 * 2 + 1] + table[1 * 2 + 1]])
    expected = d.net[-1](phi).squeeze(-1) + (v * phi).sum(-1)
    torch.testing.assert_close(d(x, y), expected, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(d(x, y), d(x, 1 - y))
    with pytest.raises(DataError, match="labels"):
        d(x)


def test_conditional_gan_draws_each_class_and_its_discriminator_still_judges():
    torch.manual_seed(0)
    model = build("gan", SPEC2, conditional=True, hidden=(32, 32), latent_dim=2, pack=1,
                  d_steps=1, aux_classifier=0)  # the projection alone  # fmt: skip
    fit(model.double(), steps=300, lr=2e-3, n=128)
    y = torch.arange(400) % 2
    with torch.no_grad():
        s = model.sample(400, y)
        unlabelled = model.sample(400)  # labels drawn uniformly
    assert side_accuracy(s, y) > 0.95  # chance: 0.5
    assert 0.3 < float((unlabelled[:, 0] > 0).double().mean()) < 0.7
    x, yx = two_classes(200, seed=5)
    metrics = model.validation_metrics(x, yx)
    assert set(metrics) == {"d_accuracy", "d_auc"} and 0 <= metrics["d_auc"] <= 1
    with pytest.raises(DataError, match="0..1"):
        model.sample(2, torch.tensor([0, 3]))


def test_label_modulation_scales_and_shifts_every_hidden_map_of_the_conv_generator():
    """a (1 + g_y) + b_y on each hidden map: zero-initialised it is the unmodulated generator;
    with gains and biases set by hand each layer matches the formula, and the label matters."""
    torch.manual_seed(0)
    spec = DataSpec((1, 8, 8), num_classes=3)
    model = build("gan", spec, conditional=True, width=4, label_modulation=True).double()
    g = model.generator
    z = torch.randn(5, g.fc[0].in_features, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1, 0])
    plain = g.up(g.fc(z).reshape(-1, g.c0, g.h0, g.w0))
    torch.testing.assert_close(g(z, y), plain, rtol=1e-12, atol=1e-12)
    perturb(g.modulation, 0.5, seed=2)
    gb = [m(y).chunk(2, dim=1) for m in g.modulation]

    def mod(a, i):
        return a * (1 + gb[i][0][:, :, None, None]) + gb[i][1][:, :, None, None]

    a = torch.relu(mod(g.fc[0](z).reshape(-1, g.c0, g.h0, g.w0), 0))
    a = torch.relu(mod(g.up[0](a), 1))
    a = torch.relu(mod(g.up[2](a), 2))
    torch.testing.assert_close(g(z, y), g.up[4](a), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(g(z, y), g(z, (y + 1) % 3))
    with pytest.raises(ConfigError, match="label_modulation"):
        build("gan", spec, conditional=False, label_modulation=True)
    with pytest.raises(ConfigError, match="label_modulation"):
        build("gan", SPEC2, conditional=True, label_modulation=True)


def test_auxiliary_classifier_adds_the_class_cross_entropy_to_both_players():
    """AC-GAN beside the projection: the discriminator's loss gains w * CE(head(real), y), the
    generator's w * CE(head(fake), y), the head's logits of sample i of pack j being block i of
    its pack's linear output; on (w = 1) by default for a conditional GAN, and only there."""
    torch.manual_seed(0)
    w = 0.7
    plain = build(
        "gan", SPEC2, conditional=True, hidden=(8, 8), pack=2, r1_weight=0, aux_classifier=0
    ).double()
    model = build(
        "gan", SPEC2, conditional=True, hidden=(8, 8), pack=2, r1_weight=0, aux_classifier=w
    ).double()
    assert plain.discriminator.class_head is None
    plain.load_state_dict(model.state_dict(), strict=False)  # the same players, minus the head
    d = model.discriminator
    real, fake = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0])
    phi = d.net[:-1](real.reshape(2, 4))  # (2, 8)
    logits = d.class_head.linear(phi)  # (2 packs, 2 positions * 2 classes)
    by_sample = torch.stack([logits[0, :2], logits[0, 2:], logits[1, :2], logits[1, 2:]])
    torch.testing.assert_close(d.forward_with_classes(real, y)[1], by_sample)
    ce_real = torch.nn.functional.cross_entropy(by_sample, y)
    d_plain, _ = plain._d_loss(real, fake, y=y)
    d_aux, terms = model._d_loss(real, fake, y=y)
    torch.testing.assert_close(d_aux, d_plain + w * ce_real, rtol=1e-12, atol=1e-12)
    assert set(terms) >= {"d_class_ce"}
    ce_fake = torch.nn.functional.cross_entropy(d.forward_with_classes(fake, y)[1], y)
    g_plain, _ = plain._g_loss(fake, y)
    g_aux, _ = model._g_loss(fake, y)
    torch.testing.assert_close(g_aux, g_plain + w * ce_fake, rtol=1e-12, atol=1e-12)
    assert build("gan", SPEC2, conditional=True, hidden=(8,)).aux_weight == 1.0
    assert build("gan", SPEC2, hidden=(8,)).discriminator.class_head is None
    with pytest.raises(ConfigError, match="aux_classifier"):
        build("gan", SPEC2, conditional=False, aux_classifier=1.0)
    with pytest.raises(ConfigError, match="aux_classifier"):
        build("gan", SPEC2, conditional=True, aux_classifier=-1.0)


def test_auxiliary_classifier_learns_the_classes_and_is_reported_in_validation():
    torch.manual_seed(0)
    model = build("gan", SPEC2, conditional=True, hidden=(32, 32), latent_dim=2, pack=1,
                  d_steps=1)  # fmt: skip
    fit(model.double(), steps=300, lr=2e-3, n=128)
    y = torch.arange(400) % 2
    with torch.no_grad():
        s = model.sample(400, y)
    assert side_accuracy(s, y) > 0.95
    x, yx = two_classes(200, seed=5)
    metrics = model.validation_metrics(x, yx)
    assert metrics["d_class_accuracy"] > 0.95  # the head classifies held-out data (chance 0.5)
    assert metrics["fake_class_accuracy"] > 0.9  # and the samples drawn for each label


# ---------------------------------------------------------------------------------------- EBM
def test_joint_energy_model_energies_and_class_densities_mix_to_the_marginal():
    """JEM: E(x, y) = -f(x)_y and E(x) = -logsumexp_y f(x)_y; in 2-D, with p(y) = Z_y / Z (the
    class weights the joint implies), sum_y p(y) p(x | y) = p(x) on the same quadrature grid;
    here with one Gaussian as the tether's base (``noise="gaussian"``)."""
    torch.manual_seed(0)
    model = build(
        "ebm", SPEC2, conditional=True, hidden=(8,), quadrature_points=32, noise="gaussian"
    ).double()
    perturb(model, 0.3, seed=1)
    model.on_train_start(two_classes(256)[0])
    x, _ = two_classes(6, seed=3)
    f = model.class_logits(x)  # (6, 2)
    tether = model.config.tether * model.noise.log_prob(x)
    torch.testing.assert_close(model.energy(x), -torch.logsumexp(f, 1) - tether)
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    torch.testing.assert_close(model.energy(x, y), -f[torch.arange(6), y] - tether)
    with model.inference():
        log_z = model.log_z_quadrature()[0]
        log_zy = torch.stack([model.log_z_quadrature(k)[0] for k in (0, 1)])
        torch.testing.assert_close(torch.logsumexp(log_zy, 0), log_z, rtol=0, atol=1e-10)
        log_prior = log_zy - log_z  # (2,)
        per_class = torch.stack([model.log_prob(x, torch.full((6,), k)) for k in (0, 1)], 1)
        mixed = torch.logsumexp(per_class + log_prior, 1)
        torch.testing.assert_close(mixed, model.log_prob(x), rtol=0, atol=1e-10)
    assert torch.equal(model.classify(x), f.argmax(1))


def test_class_base_tilts_one_gaussian_per_class_and_mixes_to_the_marginal():
    """``noise="classes"`` (a conditional EBM's default): E(x, y) = -f(x)_y - log(pi_y q_y(x))
    with q_y each class's Gaussian and pi_y its frequency; E(x) = -logsumexp_y -E(x, y); p(y | x)
    is the softmax of -E(x, y); with the network at zero the model is the per-class Gaussians
    (quadratic discriminant analysis), and the mixture identity holds on the quadrature grid."""
    torch.manual_seed(0)
    model = build("ebm", SPEC2, conditional=True, hidden=(8,), quadrature_points=64).double()
    assert model.config.noise == "classes" and model.class_base
    x_fit, y_fit = two_classes(512)
    y_fit[:64] = 1  # unequal class weights: 0.44 / 0.56 or so
    model.on_train_start(x_fit, y_fit)
    for k in (0, 1):  # the components are the classes' own means, covariances and weights
        xk = x_fit[y_fit == k]
        torch.testing.assert_close(model.noise.means[k], xk.mean(0))
        cov = model.noise.chols[k] @ model.noise.chols[k].T
        ridge = 0.05 * torch.cov(xk.T).diagonal().mean() + 1e-8
        torch.testing.assert_close(cov, torch.cov(xk.T) + ridge * torch.eye(2))
    prior = torch.bincount(y_fit, minlength=2).double() / len(y_fit)
    torch.testing.assert_close(torch.softmax(model.noise.logits, 0), prior)
    x, _ = two_classes(6, seed=3)
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    gauss = torch.stack(
        [
            torch.distributions.MultivariateNormal(
                model.noise.means[k], scale_tril=model.noise.chols[k]
            ).log_prob(x)
            for k in (0, 1)
        ],
        1,
    )  # (6, 2), by torch's distribution: independent of the module's own solve
    base = gauss + prior.log()
    at = model.noise.component_log_prob_at(x, y)  # each point's own component only
    torch.testing.assert_close(at, base[torch.arange(6), y])
    torch.testing.assert_close(at, model.noise.component_log_prob(x)[torch.arange(6), y])
    for p in model.energy_net.parameters():  # the network at zero: the per-class Gaussians
        torch.nn.init.zeros_(p)
    torch.testing.assert_close(model.energy(x, y), -base[torch.arange(6), y])
    torch.testing.assert_close(model.energy(x), -torch.logsumexp(base, 1))
    torch.testing.assert_close(model.energy(x), -model.noise.log_prob(x))
    perturb(model, 0.3, seed=1)
    f = -model.energy_net(x)  # (6, 2)
    torch.testing.assert_close(model.energy(x, y), -(f + base)[torch.arange(6), y])
    torch.testing.assert_close(model.energy(x), -torch.logsumexp(f + base, 1))
    assert torch.equal(model.classify(x), (f + base).argmax(1))
    with model.inference():
        log_z = model.log_z_quadrature()[0]
        log_zy = torch.stack([model.log_z_quadrature(k)[0] for k in (0, 1)])
        per_class = torch.stack([model.log_prob(x, torch.full((6,), k)) for k in (0, 1)], 1)
        mixed = torch.logsumexp(per_class + log_zy - log_z, 1)
        torch.testing.assert_close(mixed, model.log_prob(x), rtol=0, atol=1e-10)
    with pytest.raises(ConfigError, match="needs the training labels"):
        build("ebm", SPEC2, conditional=True).on_train_start(x_fit)
    with pytest.raises(ConfigError, match="needs conditional=True"):
        build("ebm", SPEC2, noise="classes")


def test_class_base_langevin_keeps_each_class_gaussian_as_its_target():
    """With the network at zero, p(x | y) is class y's Gaussian; unadjusted Langevin
    preconditioned by each chain's own class factor, from that Gaussian, stays on it (the
    preconditioner does not change the target): the samples' mean and covariance per class match
    the component's, and a label's chains stay on its side."""
    torch.manual_seed(0)
    model = build("ebm", SPEC2, conditional=True, hidden=(8,)).double()
    g = torch.Generator().manual_seed(0)
    y_fit = torch.randint(0, 2, (2000,), generator=g)
    x_fit = torch.randn(2000, 2, generator=g, dtype=torch.float64)
    x_fit = x_fit * torch.tensor([0.3, 1.0], dtype=torch.float64) * (1 + y_fit[:, None])
    x_fit[:, 0] += 6.0 * y_fit - 3.0  # class 1 twice as wide as class 0
    model.on_train_start(x_fit, y_fit)
    for p in model.energy_net.parameters():
        torch.nn.init.zeros_(p)
    y = torch.arange(4000) % 2
    torch.manual_seed(1)
    with model.inference():  # h = 0.05: the chains travel ~25 or more of their mixing times
        s = model.sample(4000, y, sampler="langevin", steps=2000, step_size=0.05)
    assert side_accuracy(s, y) == 1.0
    for k in (0, 1):  # whitened by the component: mean 0, covariance I
        z = torch.linalg.solve_triangular(
            model.noise.chols[k], (s[y == k] - model.noise.means[k]).T, upper=False
        ).T  # (2000, 2)
        # standard errors ~0.02-0.03; ULA's O(h) bias inflates the variance by ~2.5%
        torch.testing.assert_close(z.mean(0), torch.zeros(2).double(), rtol=0, atol=0.1)
        torch.testing.assert_close(torch.cov(z.T), torch.eye(2).double(), rtol=0, atol=0.13)


def test_class_base_samples_with_short_chains_by_default():
    """On a per-class base the default chain is ``CLASS_BASE_STEPS`` long (same seed, same draw
    as asking for it); on one Gaussian it stays 10 x the training ``mcmc_steps``."""
    x, y = two_classes(256)
    labels = torch.arange(8) % 2
    for noise, steps in (("classes", CLASS_BASE_STEPS), ("gaussian", 200)):
        model = build("ebm", SPEC2, conditional=True, hidden=(8,), noise=noise).double()
        model.on_train_start(x, y)
        draws = []
        for options in ({}, {"steps": steps}, {"steps": steps + 1}):
            torch.manual_seed(3)
            with model.inference():
                draws.append(model.sample(8, labels, **options))
        assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])


def test_conditional_ebm_classifies_and_samples_each_class():
    torch.manual_seed(0)
    model = build("ebm", SPEC2, conditional=True, hidden=(32, 32), quadrature_points=64)
    fit(model.double(), steps=300)
    x, yx = two_classes(400, seed=5)
    assert model.validation_metrics(x, yx)["accuracy"] > 0.98
    y = torch.arange(200) % 2
    torch.manual_seed(1)
    with model.inference():
        s = model.sample(200, y, sampler="langevin", steps=1000, step_size=0.1)
        own, other = model.log_prob(x, yx), model.log_prob(x, 1 - yx)
    assert side_accuracy(s, y) > 0.9  # chance: 0.5
    assert float((own > other).double().mean()) > 0.98
    plain = build("ebm", SPEC2, hidden=(8,))
    assert plain.validation_metrics(x, None) == {}
    # dgm eval's conditional metric scores the model as a classifier on the test split
    ds = from_arrays(x.numpy(), yx.numpy())
    x_test, y_test = ds.split("test")
    res = conditional_metrics(model, None, ds, SignFeatures(), num_samples=20)
    expected = model.validation_metrics(x_test.double(), y_test)["accuracy"]
    assert res["cond_model_test_accuracy"] == expected and expected > 0.98


class SignFeatures:
    """The feature classifier of two_classes' data: the sign of x_0."""

    def __call__(self, x):
        return x.double()

    def logits(self, x):
        return torch.stack([-x[:, 0], x[:, 0]], 1).double()


# ------------------------------------------------------------------ autoregressive models, MADE
AUTOREGRESSIVE = ["made", "pixelcnn", "gated-pixelcnn", "rnn", "transformer"]


def tiny_autoregressive(name: str, **extra):
    cls = get(name)
    spec = cls.example.spec
    spec = DataSpec(spec.event_shape, spec.kind, levels=spec.levels, num_classes=2)
    torch.manual_seed(0)
    model = build(name, spec, **{**cls.example.config, "conditional": True, **extra}).double()
    return perturb(model, 0.3, seed=2).eval()


@pytest.mark.parametrize("sampler", ["fast", "naive"])
@pytest.mark.parametrize("name", AUTOREGRESSIVE)
def test_guidance_on_logits_zero_is_conditional_and_minus_one_unconditional(name, sampler):
    model = tiny_autoregressive(name, label_dropout=0.1)
    y = torch.tensor([0, 1, 1, 0, 1, 0])

    def draw(**kw):
        torch.manual_seed(4)
        return model.sample(6, sampler=sampler, **kw)

    conditional = draw(y=y)
    assert torch.equal(draw(y=y, guidance=0.0), conditional)
    unconditional = draw()  # the null class
    assert torch.equal(draw(y=y, guidance=-1.0), unconditional)
    assert not torch.equal(unconditional, conditional)
    guided = draw(y=y, guidance=3.0)
    assert guided.shape == conditional.shape and not torch.equal(guided, conditional)


@pytest.mark.parametrize("name", AUTOREGRESSIVE)
def test_autoregressive_guidance_refuses_what_it_cannot_do(name):
    model = tiny_autoregressive(name)  # label_dropout = 0: no null class
    with pytest.raises(ConfigError, match="label_dropout=0"):
        model.sample(2, y=torch.tensor([0, 1]), guidance=1.0)
    with pytest.raises(DataError, match="conditional"):
        model.sample(2)
    with pytest.raises(ConfigError, match=">= -1"):
        tiny_autoregressive(name, label_dropout=0.1).sample(2, torch.tensor([0, 1]), guidance=-3)
    with pytest.raises(DataError, match="labels"):
        tiny_autoregressive(name, label_dropout=0.1).sample(2, guidance=1.0)


def guided_pmf(model, y: int, w: float, states: torch.Tensor) -> torch.Tensor:
    """The probabilities of ``states`` under the guided chain: product over dimensions (in
    raster order) of softmax(l_null + (1 + w)(l_y - l_null))."""
    n = states.shape[0]
    flat = states.reshape(n, -1).long()
    lc = model.logits(states, torch.full((n,), y))  # (n, D, L)
    lu = model.logits(states, torch.full((n,), model.num_classes))
    logp = torch.log_softmax(lu + (1 + w) * (lc - lu), -1)
    return logp.gather(-1, flat[..., None]).squeeze(-1).sum(-1).exp()


def test_guided_autoregressive_samples_follow_the_guided_chain():
    """Frequencies of 6000 guided samples of a 3-dimensional binary RNN against the guided
    chain's probabilities of its 8 states."""
    spec = DataSpec((3,), "discrete", levels=2, num_classes=2)
    torch.manual_seed(0)
    model = build("rnn", spec, embed=4, width=8, conditional=True, label_dropout=0.1).double()
    perturb(model, 1.0, seed=5).eval()
    states = torch.tensor([[(k >> 2) & 1, (k >> 1) & 1, k & 1] for k in range(8)]).double()
    with torch.no_grad():
        pmf = guided_pmf(model, 1, 2.0, states)
    torch.testing.assert_close(pmf.sum(), torch.tensor(1.0, dtype=torch.float64))
    torch.manual_seed(3)
    s = model.sample(6000, torch.ones(6000, dtype=torch.long), guidance=2.0)
    idx = (s[:, 0] * 4 + s[:, 1] * 2 + s[:, 2]).long()
    freq = torch.bincount(idx, minlength=8).double() / 6000
    # binomial standard error at most 0.0065: 5 of them
    assert (freq - pmf).abs().max() < 0.032


def test_label_dropout_gives_made_a_normalised_unconditional_branch_and_mixes_exactly():
    """A conditional MADE on 1x2x2 ternary data (81 states), enumerated: each p(x | y) and the
    null-class p(x) sum to 1, and the marginal sum_y p(y) p(x | y) is what (y ~ p(y),
    x ~ sample(y)) draws."""
    spec = DataSpec((1, 2, 2), "discrete", levels=3, num_classes=2)
    torch.manual_seed(0)
    model = build("made", spec, hidden=(16,), conditional=True, label_dropout=0.2).double()
    perturb(model, 0.5, seed=3).eval()
    grid = torch.cartesian_prod(*[torch.arange(3.0, dtype=torch.float64)] * 4)  # (81, 4)
    x = grid.reshape(81, 1, 2, 2)
    with torch.no_grad():
        per_class = torch.stack([model.log_prob(x, torch.full((81,), k)) for k in (0, 1)], 1)
        null = model.log_prob(x)
    torch.testing.assert_close(per_class.exp().sum(0), torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(null.exp().sum(), torch.tensor(1.0, dtype=torch.float64))
    assert not torch.allclose(null, per_class[:, 0])
    prior = torch.tensor([0.3, 0.7], dtype=torch.float64)
    marginal = torch.logsumexp(per_class + prior.log(), 1)  # log p(x), (81,)
    torch.testing.assert_close(marginal.exp().sum(), torch.tensor(1.0, dtype=torch.float64))
    torch.manual_seed(1)
    y = torch.multinomial(prior, 20000, replacement=True)
    s = model.sample(20000, y).reshape(20000, 4).long()
    idx = ((s * torch.tensor([27, 9, 3, 1])).sum(1)).long()
    freq = torch.bincount(idx, minlength=81).double() / 20000
    assert (freq - marginal.exp()).abs().max() < 0.02  # 5 binomial standard errors at p = 0.5


def test_label_dropout_drops_that_fraction_of_made_labels_in_training_only():
    spec = DataSpec((4,), "discrete", levels=2, num_classes=2)
    model = build("made", spec, hidden=(8,), conditional=True, label_dropout=0.3).double()
    y = torch.ones(20000, dtype=torch.long)
    torch.manual_seed(0)
    ctx = model.train()._train_context(y, 20000)
    assert abs(float((ctx.sum(1) == 0).double().mean()) - 0.3) < 0.015
    assert torch.equal(
        model.eval()._train_context(y, 20000), torch.nn.functional.one_hot(y, 2).double()
    )


def test_conditional_made_draws_each_class():
    """Class 0: all pixels 0, class 1: all pixels 1 (with 5% flips); 200 steps."""
    spec = DataSpec((6,), "discrete", levels=2, num_classes=2)
    torch.manual_seed(0)
    model = build("made", spec, hidden=(32,), conditional=True, label_dropout=0.1).double()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(200):
        y = torch.randint(0, 2, (128,))
        flip = (torch.rand(128, 6) < 0.05).double()
        x = (y[:, None].double() + flip) % 2
        loss = model.loss((x, y))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    y = torch.arange(200) % 2
    torch.manual_seed(1)
    s = model.sample(200, y)
    majority = (s.mean(1) > 0.5).long()
    assert float((majority == y).double().mean()) > 0.95


# ---------------------------------------------------------------------------------- flows, CNF
@pytest.mark.parametrize("name", ["maf", "iaf", "cnf"])
def test_conditional_2d_flow_densities_integrate_to_one_and_mix_to_a_density(name):
    """Each exact log p(x | y) of a perturbed conditional 2-D flow integrates to 1 on a grid, so
    the marginal sum_y p(y) p(x | y) does too, and the label changes the density."""
    torch.manual_seed(0)
    cls = get(name)
    extra = {"eval_method": "rk4", "eval_ode_steps": 20} if name == "cnf" else {}
    model = build(name, SPEC2, **{**cls.example.config, **extra}, conditional=True).double()
    perturb(model, 0.1, seed=4).eval()
    g = torch.linspace(-10, 10, 201, dtype=torch.float64)
    pts = torch.cartesian_prod(g, g)  # (201^2, 2)
    area = float(g[1] - g[0]) ** 2
    with model.inference():
        per_class = torch.stack(
            [model.log_prob(pts, torch.full((pts.shape[0],), k)) for k in (0, 1)], 1
        )
    mass = per_class.exp().sum(0) * area
    torch.testing.assert_close(mass, torch.ones(2, dtype=torch.float64), rtol=0, atol=0.01)
    prior = torch.tensor([0.25, 0.75], dtype=torch.float64)
    marginal = torch.logsumexp(per_class + prior.log(), 1)
    assert abs(float(marginal.exp().sum() * area) - 1) < 0.01
    assert (per_class[:, 0] - per_class[:, 1]).abs().max() > 1e-3
