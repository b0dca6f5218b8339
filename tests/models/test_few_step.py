"""Few-step students of a flow-matching teacher (``reflow``, ``consistency``): trained on a teacher
whose field is the exact one between two Gaussians, their one- and two-step samples must land
near the teacher's multi-step samples *from the same noise*, far nearer than a sample of the
teacher from other noise (the chance distance); the teacher is read from a run directory safely.
A diffusion teacher (``ddpm``, ``score-sde``) whose noise prediction is exact for the same
Gaussian gives, read on the straight path, exactly that field; students distil it the same way."""

from __future__ import annotations

import pytest
import torch
import yaml

from dgm.core.config import config_to_dict
from dgm.core.errors import CheckpointError, ConfigError
from dgm.core.io import save_tensors
from dgm.core.spec import DataSpec
from dgm.models.diffusion.ddpm import DDPM, DDPMConfig
from dgm.models.diffusion.sde import ScoreSDE, ScoreSDEConfig
from dgm.models.flow_matching import (
    Consistency,
    ConsistencyConfig,
    FlowMatching,
    FlowMatchingConfig,
    Reflow,
    ReflowConfig,
)
from dgm.models.flow_matching.teacher import DiffusionTeacher, load_teacher
from dgm.train.config import TrainConfig
from dgm.train.engine import Trainer

D64 = torch.float64
#: the Gaussian targets here are smooth: the MLPs read no Fourier features (the 2-D default's
#: 256 are for thin, multimodal densities and slow these small fits)
SMOOTH = {"fourier_features": 0}
MEAN = torch.tensor([1.0, -0.5], dtype=D64)
COV = torch.tensor([[1.0, 0.8], [0.8, 1.5]], dtype=D64)


def gaussian_field(mean, cov):
    """The exact marginal velocity on the straight path from N(0, I) to N(mean, cov)."""
    eye = torch.eye(len(mean), dtype=D64)

    def v(z, t):
        tt = t.reshape(-1, 1, 1)
        cxx = tt**2 * cov + (1 - tt) ** 2 * eye  # (B, D, D)
        cux = tt * cov - (1 - tt) * eye
        gain = cux @ torch.linalg.inv(cxx)
        return mean + (gain @ (z - t.reshape(-1, 1) * mean).unsqueeze(-1)).squeeze(-1)

    return v


def teacher():
    t = FlowMatching(DataSpec((2,)), FlowMatchingConfig(width=8, depth=1, **SMOOTH)).to(D64)
    t.velocity = gaussian_field(MEAN, COV)  # an instance attribute: the exact field
    return t


def fit(model, steps: int, lr: float = 3e-3) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    batch = torch.zeros(256, 2, dtype=D64)  # students draw their own pairs / the data below
    for _ in range(steps):
        opt.zero_grad()
        model.loss(batch)["loss"].backward()
        opt.step()


def distances(student, options, teach) -> tuple[float, float]:
    """Mean distance to the teacher's rk4-20 sample from the same noise, and from other noise."""
    s = student.sample(2000, **options, generator=torch.Generator().manual_seed(7))
    t = teach.sample(2000, method="rk4", steps=20, generator=torch.Generator().manual_seed(7))
    same = float((s - t).norm(dim=1).mean())
    chance = float((s - t.roll(1, 0)).norm(dim=1).mean())
    return same, chance


def test_reflow_student_matches_its_teacher_in_one_and_two_euler_steps():
    torch.manual_seed(0)
    teach = teacher()
    cfg = ReflowConfig(width=32, depth=2, time_dim=16, pairs=4096, teacher_steps=20, **SMOOTH)
    m = Reflow(DataSpec((2,)), cfg).to(D64)
    m.use_teacher(teach)
    before, _ = distances(m, {"steps": 1}, teach)
    fit(m, 400)
    for steps in (1, 2):
        same, chance = distances(m, {"method": "euler", "steps": steps}, teach)
        assert same < 0.15 * chance and same < 0.3 * before, (steps, same, chance, before)


def test_consistency_distillation_matches_its_teacher_in_one_and_two_steps():
    torch.manual_seed(1)
    teach = teacher()
    cfg = ConsistencyConfig(width=32, depth=2, time_dim=16, objective="cd", levels=10, **SMOOTH)
    m = Consistency(DataSpec((2,)), cfg).to(D64)
    m.use_teacher(teach)
    fit(m, 600)
    same, chance = distances(m, {"steps": 1}, teach)
    assert same < 0.25 * chance, (same, chance)
    # two steps re-noise, so they no longer follow the noise: their mean must still be the
    # teacher's (after 600 steps the two-step covariance is off by more than 0.5: not checked)
    s = m.sample(4000, steps=2, generator=torch.Generator().manual_seed(3))
    assert torch.isfinite(s).all() and (s.mean(0) - MEAN).abs().max() < 0.3


def test_consistency_training_needs_no_teacher_and_learns_the_data():
    torch.manual_seed(2)
    data = torch.distributions.MultivariateNormal(MEAN, COV)
    cfg = ConsistencyConfig(width=32, depth=2, time_dim=16, **SMOOTH)
    m = Consistency(DataSpec((2,)), cfg).to(D64)
    m.on_train_start(data.sample((2048,)))
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)  # the model's default lr
    for _ in range(600):
        opt.zero_grad()
        m.loss(data.sample((256,)))["loss"].backward()
        opt.step()
    s = m.sample(4000, generator=torch.Generator().manual_seed(3))
    # after 600 steps: a coarse check of the moments (measured errors 0.02 in the mean and 0.24
    # in the covariance, which one-step samples shrink; 0.08 and 0.28 with the squared distance
    # and uniform intervals of before)
    assert (s.mean(0) - MEAN).abs().max() < 0.3 and (torch.cov(s.T) - COV).abs().max() < 0.5


def write_run(path, model, name="flow-matching"):
    path.mkdir()
    doc = {"model": name, "model_config": config_to_dict(model.config),
           "spec": {"event_shape": [2], "kind": "continuous"}, "data": {}, "train": {}}  # fmt: skip
    (path / "config.yaml").write_text(yaml.safe_dump(doc))
    save_tensors(model.state_dict(), path / "model.safetensors")


def test_the_teacher_is_read_from_a_run_directory(tmp_path):
    torch.manual_seed(3)
    fm = FlowMatching(DataSpec((2,)), FlowMatchingConfig(width=8, depth=1, time_dim=8))
    fm.shift.fill_(0.5)
    write_run(tmp_path / "fm", fm)
    student = Reflow(DataSpec((2,)), ReflowConfig(width=8, depth=1, teacher=str(tmp_path / "fm")))
    got = student.teacher_model()
    z, t = torch.randn(5, 2), torch.full((5,), 0.3)
    torch.testing.assert_close(got.velocity(z, t), fm.velocity(z, t))
    assert float(student.shift[0]) == 0.5  # the student works in the teacher's model space
    assert not any(k.startswith("_teacher") for k in student.state_dict())


def test_a_bad_teacher_is_one_clear_error(tmp_path):
    spec = DataSpec((2,))
    with pytest.raises(CheckpointError, match="not a dgm run directory"):
        load_teacher(tmp_path / "nothing", spec)
    write_run(tmp_path / "fm", FlowMatching(spec, FlowMatchingConfig(width=8, depth=1)))
    with pytest.raises(CheckpointError, match="trained on data of shape"):
        load_teacher(tmp_path / "fm", DataSpec((3,)))
    doc = yaml.safe_load((tmp_path / "fm" / "config.yaml").read_text())
    doc["model"] = "nsf"
    (tmp_path / "fm" / "config.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="must be a flow-matching, reflow, ddpm or score-sde run"):
        load_teacher(tmp_path / "fm", spec)
    with pytest.raises(ConfigError, match="a teacher is for objective='cd'"):
        ConsistencyConfig(teacher="somewhere")


# ------------------------------------------------------------------ diffusion teachers
def exact_eps(model):
    """``E[eps | x]`` at the teacher's level ``s`` for data ``N(MEAN, COV)`` in model space, with
    ``a(s)`` computed here independently (ddpm: ``log abar`` interpolated between steps)."""
    eye = torch.eye(2, dtype=D64)

    def a_of(s):
        if isinstance(model, DDPM):
            log_abar = model.schedule.alphas_cumprod.log()
            i = s.floor().long().clamp(0, len(log_abar) - 2)
            w = s - i
            return (0.5 * ((1 - w) * log_abar[i] + w * log_abar[i + 1])).exp()
        return model.sde.marginal(s)[0]

    def eps(x, s, *_):
        a = a_of(s.double()).reshape(-1, 1, 1)
        sig2 = 1 - a**2
        cov_x = a**2 * COV + sig2 * eye  # (B, 2, 2)
        r = (x - a.reshape(-1, 1) * MEAN).unsqueeze(-1)
        return (sig2.sqrt() * torch.linalg.solve(cov_x, r)).squeeze(-1)

    return eps


def diffusion_teacher(kind):
    spec = DataSpec((2,))
    if kind == "ddpm":
        model = DDPM(spec, DDPMConfig(width=8, depth=1, timesteps=200)).to(D64)
    else:
        model = ScoreSDE(spec, ScoreSDEConfig(width=8, depth=1)).to(D64)
    model.eps = exact_eps(model)
    return DiffusionTeacher(model.eval())


@pytest.mark.parametrize("kind", ["ddpm", "score-sde"])
def test_a_diffusion_teacher_read_on_the_straight_path_is_the_exact_flow(kind):
    teach = diffusion_teacher(kind)
    t = torch.linspace(0.05, 0.95, 19, dtype=D64)  # inside both teachers' noise range
    _, a, sigma = teach.level(t)
    torch.testing.assert_close(a / (a + sigma), t)  # the level whose scaled point is z
    z = torch.randn(19, 2, dtype=D64)
    torch.testing.assert_close(teach.velocity(z, t), gaussian_field(MEAN, COV)(z, t))
    # integrated from noise (rk4, 40 steps, the clamped end levels included) it lands on the data
    noise = torch.randn(20000, 2, dtype=D64, generator=torch.Generator().manual_seed(0))
    x = noise
    for k in range(40):
        h, t0 = 1 / 40, torch.tensor(k / 40, dtype=D64)
        f = lambda z_, tt: teach._field(z_, tt)  # noqa: E731
        k1 = f(x, t0)
        k2 = f(x + h / 2 * k1, t0 + h / 2)
        k3 = f(x + h / 2 * k2, t0 + h / 2)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + f(x + h * k3, t0 + h))
    assert (x.mean(0) - MEAN).abs().max() < 0.05, x.mean(0)
    assert (torch.cov(x.T) - COV).abs().max() < 0.1, torch.cov(x.T)


@pytest.mark.parametrize("kind", ["ddpm", "score-sde"])
def test_consistency_distils_a_diffusion_teacher_in_one_step(kind):
    torch.manual_seed(1)
    teach = diffusion_teacher(kind)
    cfg = ConsistencyConfig(width=32, depth=2, time_dim=16, objective="cd", levels=10, **SMOOTH)
    m = Consistency(DataSpec((2,)), cfg).to(D64)
    m.use_teacher(teach.model)  # the diffusion model itself: the student reads it
    assert isinstance(m.teacher_model(), DiffusionTeacher)
    fit(m, 600)
    s = m.sample(2000, steps=1, generator=torch.Generator().manual_seed(7))
    ref = FlowMatching(DataSpec((2,)), FlowMatchingConfig(width=8, depth=1)).to(D64)
    ref.velocity = gaussian_field(MEAN, COV)
    t = ref.sample(2000, method="rk4", steps=20, generator=torch.Generator().manual_seed(7))
    same = float((s - t).norm(dim=1).mean())
    chance = float((s - t.roll(1, 0)).norm(dim=1).mean())
    assert same < 0.25 * chance, (same, chance)


def test_a_diffusion_run_teaches_from_its_directory(tmp_path):
    torch.manual_seed(4)
    ddpm = DDPM(DataSpec((2,)), DDPMConfig(width=8, depth=1, time_dim=8, timesteps=50))
    ddpm.shift.fill_(0.25)
    write_run(tmp_path / "ddpm", ddpm, name="ddpm")
    cfg = ReflowConfig(width=8, depth=1, pairs=64, teacher_steps=2, teacher=str(tmp_path / "ddpm"))
    student = Reflow(DataSpec((2,)), cfg)
    got = student.teacher_model()
    assert isinstance(got, DiffusionTeacher) and float(student.shift[0]) == 0.25
    x0, x1 = student.make_pairs()
    assert x1.shape == (64, 2) and torch.isfinite(x1).all()


def test_reflow_pairs_are_drawn_within_the_time_budget(tmp_path, capsys):
    # the teacher's pairs are reflow's setup: they count in --max-minutes and stop at the engine's
    # setup deadline (half the budget). A fake clock moves 1 s per reading and the teacher's field
    # costs 10 s per call: 4 Euler steps per batch of 64 pairs is 40 s, a 1-minute budget (48 s of
    # training) leaves 24 s of setup, so one batch (the least) is drawn of 640, not all 10.
    clock = {"now": 0.0}

    def tick():
        clock["now"] += 1.0
        return clock["now"]

    teach = teacher()
    field = teach.velocity

    def slow_field(z, t):
        clock["now"] += 10.0
        return field(z, t)

    teach.velocity = slow_field
    cfg = ReflowConfig(width=8, depth=1, pairs=640, pair_batch=64, teacher_method="euler",
                       teacher_steps=4)  # fmt: skip
    m = Reflow(DataSpec((2,)), cfg).to(D64)
    m.use_teacher(teach)
    tcfg = TrainConfig(batch_size=32, max_minutes=1.0, progress=False, dtype="float64")
    summary = Trainer(m, torch.zeros(256, 2, dtype=D64), config=tcfg, out=tmp_path,
                      clock=tick).fit()  # fmt: skip
    assert m.pairs_drawn == 64 and m._pairs[0].shape == (64, 2)
    assert "reflow drew 64 of its 640 teacher pairs" in capsys.readouterr().err
    # the setup's 40 s count: the run stops at its budget, not 40 s later
    assert summary["stopped_by_time"] and summary["train_seconds_total"] < 60 + 11

    # without a budget every pair is drawn
    m2 = Reflow(DataSpec((2,)), cfg).to(D64)
    m2.use_teacher(teach)
    tcfg2 = TrainConfig(batch_size=32, steps=2, progress=False, dtype="float64")
    Trainer(m2, torch.zeros(256, 2, dtype=D64), config=tcfg2, out=tmp_path / "b", clock=tick).fit()
    assert m2.pairs_drawn == 640


# ------------------------------------------------------------------ starting from the teacher
def teacher_run(tmp_path, **net):
    torch.manual_seed(5)
    cfg = FlowMatchingConfig(width=8, depth=1, time_dim=8, **net)
    fm = FlowMatching(DataSpec((2,)), cfg).to(D64)
    fm.shift.fill_(0.5)
    write_run(tmp_path / "fm", fm)
    return fm, str(tmp_path / "fm")


def student(kind, path, **options):
    net = {"width": 8, "depth": 1, "time_dim": 8} | options
    if kind == "reflow":
        return Reflow(DataSpec((2,)), ReflowConfig(pairs=64, teacher_steps=2, teacher=path, **net))
    return Consistency(DataSpec((2,)), ConsistencyConfig(objective="cd", teacher=path, **net))


def assert_starts_from(m, teacher, kind) -> None:
    """Reflow's field is the teacher's; the consistency map is one Euler step of it to t = 1."""
    z, t = torch.randn(5, 2, dtype=D64), torch.rand(5, dtype=D64)
    v = teacher.velocity(z, t)
    if kind == "reflow":
        torch.testing.assert_close(m.velocity(z, t), v)
    else:
        torch.testing.assert_close(m.consistency(z, t), z + (1 - t[:, None]) * v)


@pytest.mark.parametrize("kind", ["reflow", "consistency"])
def test_a_student_starts_from_its_teachers_weights(tmp_path, kind, capsys):
    fm, path = teacher_run(tmp_path)
    m = student(kind, path).to(D64)
    m.on_train_start(torch.randn(32, 2, dtype=D64))
    assert_starts_from(m, fm, kind)
    assert capsys.readouterr().err == ""
    # init=random keeps the student's own draw
    r = student(kind, path, init="random").to(D64)
    r.on_train_start(torch.randn(32, 2, dtype=D64))
    mine, teachers = r.net.state_dict(), fm.net.state_dict()
    assert not all(torch.equal(mine[k], teachers[k]) for k in mine)


@pytest.mark.parametrize("kind", ["reflow", "consistency"])
def test_a_reflow_run_teaches_and_its_weights_start_the_student(tmp_path, kind, capsys):
    # Liu et al.'s k+1-rectified flow starts from the k-rectified one; a consistency model
    # distils the straighter field of a reflow student the same way
    _, fm_path = teacher_run(tmp_path)
    torch.manual_seed(6)
    rf = student("reflow", fm_path, init="random").to(D64)
    rf.on_train_start(torch.randn(32, 2, dtype=D64))
    write_run(tmp_path / "rf", rf, name="reflow")
    m = student(kind, str(tmp_path / "rf")).to(D64)
    m.on_train_start(torch.randn(32, 2, dtype=D64))
    assert_starts_from(m, rf, kind)
    assert capsys.readouterr().err == ""
    assert m.loss(torch.zeros(16, 2, dtype=D64))["loss"].isfinite()


@pytest.mark.parametrize("kind", ["reflow", "consistency"])
def test_a_student_that_cannot_start_from_its_teacher_says_why(tmp_path, kind, capsys):
    fm, path = teacher_run(tmp_path)
    # auto: a wider student starts from random weights, with one stderr line naming both layouts
    m = student(kind, path, width=16).to(D64)
    m.on_train_start(torch.randn(32, 2, dtype=D64))
    err = capsys.readouterr().err
    assert f"dgm: {kind} starts from random weights" in err
    assert "width 16, depth 1" in err and "width 8, depth 1" in err
    # asked for: one ConfigError that says what to change
    with pytest.raises(ConfigError, match="give the student the teacher's network options"):
        student(kind, path, width=16, init="teacher").to(D64).on_train_start(torch.randn(8, 2))
    # a diffusion teacher predicts noise: it is never copied
    ddpm = DDPM(DataSpec((2,)), DDPMConfig(width=8, depth=1, time_dim=8, timesteps=50))
    write_run(tmp_path / "ddpm", ddpm, name="ddpm")
    with pytest.raises(ConfigError, match="not a straight-path flow"):
        student(kind, str(tmp_path / "ddpm"), init="teacher").on_train_start(torch.randn(8, 2))
    with pytest.raises(ConfigError, match="init='teacher' is for objective='cd'"):
        ConsistencyConfig(init="teacher")


def test_the_multistep_sampler_renoises_to_the_cubic_times_or_those_given():
    assert Consistency.renoise_times(1) == ()
    assert Consistency.renoise_times(2) == (0.875,)
    assert Consistency.renoise_times(4) == pytest.approx((1 - 0.75**3, 0.875, 1 - 0.25**3))
    m = Consistency(DataSpec((2,)), ConsistencyConfig(width=8, depth=1, time_dim=8))

    def draw(**o):
        return m.sample(64, steps=2, generator=torch.Generator().manual_seed(0), **o)

    torch.testing.assert_close(draw(), draw(times=(0.875,)))
    assert not torch.allclose(draw(), draw(times=(0.5,)))
    for bad in ((0.5, 0.7), (1.0,), (0.0,)):
        with pytest.raises(ConfigError, match="times must be 1 increasing numbers in"):
            draw(times=bad)
    with pytest.raises(ConfigError, match="times must be 2 increasing"):
        m.sample(4, steps=3, times=(0.8, 0.6))


def test_multistep_consistency_maps_to_the_end_of_each_segment():
    m = Consistency(DataSpec((2,)), ConsistencyConfig(width=8, depth=1, time_dim=8, segments=2))
    k = torch.arange(20)
    end = m.segment_ends(k, 20, D64)
    torch.testing.assert_close(end, torch.where(k < 10, 0.5, 1.0).to(D64))
    # an interval that ends its segment has its next time exactly at the end: no residual map
    t_next = (k + 1).to(D64) / 20
    assert ((end - t_next)[k % 10 == 9] == 0).all() and ((end - t_next)[k % 10 != 9] > 0).all()
    one = Consistency(DataSpec((2,)), ConsistencyConfig(width=8, depth=1, time_dim=8))
    assert one.segment_ends(k, 20, D64) is None
    # the boundary condition f(x, e) = x holds at each segment's end, for any weights
    m = m.to(D64)
    z = torch.randn(5, 2, dtype=D64)
    e = torch.full((5,), 0.5, dtype=D64)
    torch.testing.assert_close(m.consistency(z, e, end=e), z)


def test_a_multistep_student_starts_as_euler_steps_of_its_teacher_and_learns_its_flow():
    torch.manual_seed(4)
    opts = dict(width=32, depth=2, time_dim=16, **SMOOTH)
    teach = FlowMatching(DataSpec((2,)), FlowMatchingConfig(**opts)).to(D64)
    cfg = ConsistencyConfig(objective="cd", levels=10, segments=2, init="teacher", **opts)
    m = Consistency(DataSpec((2,)), cfg).to(D64)
    m.use_teacher(teach)
    assert m.start_from_teacher()
    # from the teacher's weights the two segments are two Euler steps of the teacher's field
    g = torch.Generator().manual_seed(5)
    s = m.sample(64, generator=g)
    e = teach.sample(64, method="euler", steps=2, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(s, e)
    assert m.nfe() == 2
    # distilled from the exact Gaussian field, the two deterministic steps follow the noise
    m.use_teacher(teacher())
    fit(m, 600)
    same, chance = distances(m, {}, teacher())
    assert same < 0.15 * chance, (same, chance)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"steps": 1}, "samples in exactly 2 steps"),
        ({"steps": 2, "times": (0.5,)}, "samples in exactly 2 steps"),
    ],
)
def test_a_multistep_model_samples_in_its_own_steps(options, match):
    m = Consistency(DataSpec((2,)), ConsistencyConfig(width=8, depth=1, time_dim=8, segments=2))
    assert m.sample(3).shape == m.sample(3, steps=2).shape == (3, 2)
    with pytest.raises(ConfigError, match=match):
        m.sample(3, **options)


def test_the_grid_of_a_multistep_model_divides_into_its_segments():
    with pytest.raises(ConfigError, match=r"levels must be a multiple of segments \(3\)"):
        ConsistencyConfig(levels=20, segments=3)
    with pytest.raises(ConfigError, match="levels_start must be a multiple of segments"):
        ConsistencyConfig(levels=40, levels_start=5, double_every=100, segments=2)


def adversarial_student(**options) -> Consistency:
    cfg = ConsistencyConfig(width=32, depth=2, time_dim=16, objective="cd", levels=10,
                            adv_width=32, adv_batch=128, **SMOOTH, **options)  # fmt: skip
    m = Consistency(DataSpec((2,)), cfg).to(D64)
    m.use_teacher(teacher())
    return m


def train_steps(model, data, steps: int, lr: float = 3e-3, start: int = 0) -> list[dict]:
    """``steps`` of the model's own training step (from step ``start``), one Adam per parameter
    group."""
    opts = {
        g["name"]: torch.optim.Adam(g["params"], lr=lr, betas=g.get("betas", (0.9, 0.999)))
        for g in model.param_groups()
    }

    def stepper(loss, group="model"):
        opts[group].zero_grad()
        loss.backward()
        opts[group].step()

    return [model.training_step(data.sample((256,)), start + i, stepper) for i in range(steps)]


def test_the_adversarial_term_pulls_the_students_samples_to_the_data():
    # the teacher's field carries N(MEAN, COV) but the training data is shifted by 1.5 in x:
    # distillation alone lands on the teacher's mean, the adversarial term on the data's
    # (measured, seed 0: 1.44 from the data's mean without, 0.07 with; seeds 1-2: 0.22, 0.07)
    data = torch.distributions.MultivariateNormal(MEAN + torch.tensor([1.5, 0.0], dtype=D64), COV)
    gaps = {}
    for w in (0.0, 3.0):
        torch.manual_seed(0)
        m = adversarial_student(adversarial=w)
        logs = train_steps(m, data, 400)
        mean = m.sample(4000, generator=torch.Generator().manual_seed(3)).mean(0)
        gaps[w] = float((mean - data.mean).norm())
        assert ("adv_weight" in logs[-1]) == (w > 0)
    assert gaps[0.0] > 1.2 and gaps[3.0] < 0.3 * gaps[0.0], gaps


def test_the_adaptive_weight_balances_the_terms_at_the_last_layer():
    torch.manual_seed(1)
    m = adversarial_student(adversarial=0.5)
    out = m.loss(torch.randn(64, 2, dtype=D64))
    assert set(out) >= {"loss", "consistency", "g_adv", "d_loss", "adv_weight", "r1"}
    # the weighted terms' gradients at the last layer: lambda |grad_W adv| = w |grad_W main|
    w = m.last_layer()
    main, adv, lam = out["consistency"], out["g_adv"], out["adv_weight"]
    (g_main,) = torch.autograd.grad(main, w, retain_graph=True)
    (g_adv,) = torch.autograd.grad(lam * adv, w, retain_graph=True)
    torch.testing.assert_close(g_adv.norm(), 0.5 * g_main.norm())
    # the run's weights keep the discriminator; sampling never reads it
    assert any(k.startswith("discriminator.") for k in m.state_dict())
    g = [p.grad for p in m.discriminator.parameters()]
    assert all(x is None for x in g)
    m.sample(3, generator=torch.Generator().manual_seed(0))
    assert [p.grad for p in m.discriminator.parameters()] == g


def test_the_discriminator_learns_before_its_term_joins_at_adv_start():
    torch.manual_seed(2)
    m = adversarial_student(adversarial=1.0, adv_start=3, adv_r1=0.0)
    data = torch.distributions.MultivariateNormal(MEAN, COV)
    before = [p.detach().clone() for p in m.discriminator.parameters()]
    logs = train_steps(m, data, 3)
    assert all("adv_weight" not in r and "d_loss" in r for r in logs)
    torch.testing.assert_close(logs[0]["loss"], logs[0]["consistency"])
    assert not any(torch.equal(a, b) for a, b in zip(before, m.discriminator.parameters()))
    logs = train_steps(m, data, 2, start=3)
    assert all("r1" not in r and r["adv_weight"] > 0 for r in logs)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"adversarial": -1.0}, "adversarial must be 0 or positive"),
        ({"adversarial": float("nan")}, "adversarial must be 0 or positive"),
        ({"adv_batch": 0}, "adv_batch must be a positive integer"),
        ({"adv_loss": "wgan"}, "adv_loss must be 'non-saturating' or 'hinge'"),
    ],
)
def test_bad_adversarial_options_are_one_clear_error(options, match):
    with pytest.raises(ConfigError, match=match):
        ConsistencyConfig(**options)
