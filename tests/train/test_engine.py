"""The engine: deterministic, resumable to the bit, stops cleanly on non-finite losses."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest
import torch

from dgm.core.errors import DgmError
from dgm.core.model import Model
from dgm.core.spec import DataSpec
from dgm.eval.likelihood import nll
from dgm.models import build, get
from dgm.train.callbacks import EMA
from dgm.train.config import TRAINING_SHARE, TrainConfig
from dgm.train.engine import Trainer, _lr_lambda


def _data(n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g) * torch.tensor([1.0, 0.3]) + 1.0


class FakeClock:
    """A clock that moves ``tick`` seconds each time it is read, and ``advance``d by hand: the
    engine's time accounting on a controlled clock, whatever the machine's speed."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _trainer(tmp_path, steps, clock=None, metric=nll, **kw):
    torch.manual_seed(0)
    model = build("nsf", DataSpec((2,)), **_tiny_nsf())
    cfg = TrainConfig(**({"steps": steps, "batch_size": 64, "lr": 3e-3, "progress": False} | kw))
    extra = {} if clock is None else {"clock": clock}
    return Trainer(model, _data(), val_x=_data(256, 1), val_metric=metric, config=cfg,
                   out=tmp_path, **extra)  # fmt: skip


def _tiny_nsf():
    return dict(get("nsf").example.config)


def test_training_lowers_validation_nll(tmp_path):
    t = _trainer(tmp_path, 150, eval_every=50)
    before = t.validate()
    t.fit()
    assert t.best_val < before - 0.3
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any("val_nll" in r for r in lines) and any("loss" in r for r in lines)
    # each validation record carries the training time so far (learning curves over time)
    seconds = [r["train_seconds"] for r in lines if "val_nll" in r]
    assert seconds == sorted(seconds) and seconds[0] > 0


def test_validation_time_is_not_training_time(tmp_path):
    # a validation record's train_seconds is the training time of the weights it scored: neither
    # this validation pass nor an earlier one counts (the budget buys training steps). Each clock
    # reading moves 1 s; each validation takes 400 s more.
    clock = FakeClock(tick=1.0)

    def slow_nll(*args, **kwargs):
        clock.advance(400.0)
        return nll(*args, **kwargs)

    t = _trainer(tmp_path, 2, clock=clock, metric=slow_nll, eval_every=1)
    t.fit()
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    seconds = [r["train_seconds"] for r in lines if "val_nll" in r]
    assert len(seconds) == 2 and 0 < seconds[0] < seconds[1] < 400, seconds
    assert t.elapsed_seconds() < 400


def test_same_seed_same_parameters(tmp_path):
    a = _trainer(tmp_path / "a", 20)
    a.fit()
    b = _trainer(tmp_path / "b", 20)
    b.fit()
    for (k, v), (_, w) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(v, w), k


def test_resume_is_bit_identical(tmp_path):
    full = _trainer(tmp_path / "full", 30, checkpoint_every=10, ema=0.9)
    full.fit()
    part = _trainer(tmp_path / "part", 17, checkpoint_every=10, ema=0.9)
    part.fit()  # stops at 17 and writes a checkpoint there
    resumed = _trainer(tmp_path / "part", 30, checkpoint_every=10, ema=0.9)
    resumed.resume()
    assert resumed.step == 17
    resumed.fit()
    for (k, v), (_, w) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(v, w), k
    for k in full.ema.weights:
        assert torch.equal(full.ema.weights[k], resumed.ema.weights[k]), k


def test_ema_follows_its_formula_with_warm_up():
    # avg <- d avg + (1 - d) w after step n, with d = min(decay, (1 + n) / (10 + n)), in float64
    w = torch.nn.Linear(3, 2).double()
    ema = EMA(w, decay=0.9)
    old = w.weight.detach().clone()
    with torch.no_grad():
        w.weight.add_(1.0)
    ema.update(w, n=0)  # warm-up: d = min(0.9, 1/10) = 0.1
    torch.testing.assert_close(ema.weights["weight"], 0.1 * old + 0.9 * (old + 1.0))
    avg = ema.weights["weight"].clone()
    ema.update(w, n=1000)  # past the warm-up: d = 0.9
    torch.testing.assert_close(ema.weights["weight"], 0.9 * avg + 0.1 * (old + 1.0))
    assert ema.decay_at(8) == pytest.approx(0.5) and ema.decay_at(10**6) == 0.9


def test_ema_weights_are_the_evaluation_and_final_weights(tmp_path):
    t = _trainer(tmp_path, 5, ema=0.99, metric=None)
    t.fit()
    final = t.final_weights()
    live = t.model.state_dict()
    assert any(not torch.equal(final[k], live[k]) for k in live)
    for k in live:
        assert torch.equal(final[k], t.ema.weights[k]), k
    assert t.validate() is None  # no metric given: no validation NLL


@dataclass
class _NaNConfig:
    after: int = 3


class _NaNModel(Model):
    """Finite loss for a few steps, then NaN for ever."""

    name = "nan-test-model"
    family = "test"
    description = "test double"
    Config = _NaNConfig
    exact_likelihood = True

    def __init__(self, spec, config=None):
        super().__init__(spec, config)
        self.w = torch.nn.Parameter(torch.zeros(2))
        self.calls = 0

    def log_prob(self, x, y=None):
        self.calls += 1
        bad = float("nan") if self.calls > self.config.after else 0.0
        return -((x - self.w) ** 2).sum(-1) + bad


def test_non_finite_steps_are_skipped_then_stop_with_a_message(tmp_path):
    model = _NaNModel(DataSpec((2,)))
    cfg = TrainConfig(steps=50, batch_size=32, progress=False, max_bad_steps=4, checkpoint_every=2)
    t = Trainer(model, _data(), config=cfg, out=tmp_path)
    with pytest.raises(DgmError, match=r"training stopped at step 6: 4 non-finite steps") as e:
        t.fit()
    assert "last good checkpoint: " in str(e.value) and "step-00000006" in str(e.value)
    assert "loss terms: loss=nan, nll=nan" in str(e.value)
    w_at_nan = model.w.detach().clone()
    assert torch.isfinite(w_at_nan).all()  # skipped steps did not poison the weights


def test_early_stopping_keeps_the_best_weights(tmp_path):
    t = _trainer(tmp_path, 400, eval_every=10, patience=2, lr=0.05)
    info = t.fit()
    assert info["steps"] <= 400
    best = t.final_weights()
    assert (tmp_path / "checkpoints" / "best").is_dir()
    t.model.load_state_dict(best)
    assert t.validate() == pytest.approx(t.best_val, rel=1e-6)


def test_train_config_rejects_nonsense():
    with pytest.raises(ValueError, match="either steps or epochs"):
        TrainConfig(steps=3, epochs=1)
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)


def test_dgm_train_is_callable_after_the_package_is_imported(tmp_path):
    import dgm
    import dgm.train.engine  # noqa: F401  (importing the package must not shadow the function)

    for name in ("a", "b"):
        out = dgm.train("nsf", "8gaussians", tmp_path / name, steps=2, progress=False,
                        model_config=_tiny_nsf())  # fmt: skip
        assert (out / "summary.json").is_file()


def test_time_clock_decays_over_the_budget():
    cfg = TrainConfig(schedule="cosine", schedule_clock="time", max_minutes=1.0, warmup_steps=10)
    clock = [0.0]
    f = _lr_lambda(cfg, 10**6, lambda: clock[0])
    assert f(4) == pytest.approx(0.5)  # warm-up runs on steps
    # the schedule runs over the training share of the budget: 48 s of a minute
    assert cfg.training_seconds() == pytest.approx(60.0 * TRAINING_SHARE) == pytest.approx(48.0)
    for seconds, factor in ((0.0, 1.0), (24.0, 0.5), (36.0, 0.5 * (1 - 0.5**0.5)), (72.0, 0.0)):
        clock[0] = seconds
        assert f(20) == pytest.approx(factor), seconds
    cfg = TrainConfig(schedule="linear", schedule_clock="time", max_minutes=2.0)
    lin = _lr_lambda(cfg, 5, lambda: clock[0])
    clock[0] = 24.0
    assert lin(3) == pytest.approx(0.75)  # 24 s of 96, whatever the step count says
    with pytest.raises(ValueError, match="give max_minutes > 0, or use schedule_clock 'steps'"):
        TrainConfig(schedule="cosine", schedule_clock="time")


def test_time_clock_ends_the_schedule_with_the_budget(tmp_path):
    # the step count (10**6) would keep the rate near its peak; on the time clock it has
    # decayed by the time the budget runs out. The clock moves 0.1 s per reading: the budget of
    # 6 s (4.8 s of it for training) is over after a fixed number of steps, however fast the
    # machine is.
    t = _trainer(tmp_path, 10**6, clock=FakeClock(tick=0.1), schedule="cosine",
                 schedule_clock="time", max_minutes=0.1, log_every=1,
                 checkpoint_every=0)  # fmt: skip
    info = t.fit()
    assert info["stopped_by_time"] and 10 < info["steps"] < 10**6
    assert info["train_seconds_total"] >= 6.0 * TRAINING_SHARE
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    lrs = [r["lr"] for r in map(json.loads, lines) if "lr" in r]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.1 * 3e-3 < lrs[0]


def test_a_time_budget_alone_sets_no_step_count(tmp_path):
    # no steps, no epochs: the run lasts until the budget is spent (a controlled clock: 0.5 s
    # per reading, 3 s of budget), with no invented length
    t = _trainer(tmp_path, None, clock=FakeClock(tick=0.5), max_minutes=0.05, log_every=1,
                 checkpoint_every=0)  # fmt: skip
    assert t.total_steps == math.inf
    info = t.fit()
    assert info["stopped_by_time"] and info["steps"] >= 2
    steps = [r["step"] for r in map(json.loads, open(tmp_path / "metrics.jsonl")) if "lr" in r]
    assert steps == list(range(1, info["steps"] + 1))
    assert TrainConfig(max_minutes=1.0).total_steps(10) is None
    assert TrainConfig().total_steps(10) == 1000
    with pytest.raises(ValueError, match="needs the run's length"):
        TrainConfig(max_minutes=1.0, schedule="cosine")


@dataclass
class _RecorderConfig:
    conditional: bool = True


class _Recorder(Model):
    """Records what the engine hands ``on_train_start``."""

    name = "recorder"
    Config = _RecorderConfig
    init_examples = 300

    def __init__(self) -> None:
        super().__init__(DataSpec((2,), num_classes=3))
        self.w = torch.nn.Parameter(torch.zeros(2))
        self.seen: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def on_train_start(self, train_data, labels=None):
        self.seen = (train_data.clone(), None if labels is None else labels.clone())

    def loss(self, batch):
        x, _ = batch
        return {"loss": ((x - self.w) ** 2).mean()}


def test_on_train_start_sees_init_examples_with_their_labels(tmp_path):
    """A model's ``init_examples`` are the first of the first epoch's order, not one batch, and
    a conditional model gets their labels in the same order."""
    x = _data(500)
    y = torch.arange(500) % 3
    model = _Recorder()
    cfg = TrainConfig(steps=1, batch_size=16, progress=False)
    Trainer(model, x, train_y=y, config=cfg, out=tmp_path).fit()
    seen_x, seen_y = model.seen
    assert seen_x.shape == (300, 2) and seen_y.shape == (300,)
    rows = {tuple(r.tolist()): i for i, r in enumerate(x)}
    idx = torch.tensor([rows[tuple(r.tolist())] for r in seen_x])  # where each came from
    assert idx.unique().numel() == 300  # distinct examples, in the shuffled order
    assert torch.equal(seen_y, y[idx])
