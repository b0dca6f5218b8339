"""The side concerns of the training loop as small objects (Lightning's ``Callback`` hooks).

The engine (:class:`~dgm.train.engine.Trainer`) calls every callback's hooks in the order of its
list, which is the order below: the EMA is updated before anything reads the weights, the time
budget is checked before the metrics line (so the last step of a budget is logged), validation
runs before the checkpoint cadence (an early stop writes no cadence checkpoint; the end of the
run writes one anyway).

=================== ==========================================================================
``on_fit_start``    before the first step of a session (a fresh run or a resumed one)
``on_step_end``     after each engine step, ``trainer.step`` already counting it
``on_log``          for every record logged (``trainer.log``): metrics line, skipped step, ...
``on_fit_end``      after the last step of a session that did not fail
``teardown``        always, last: close files and bars
=================== ==========================================================================

A callback ends the run by setting ``trainer.stop_reason`` (``"time"``, ``"early"``); the loop
stops after the step's callbacks have run. Callbacks with state put it in the checkpoint through
``state_dict`` (JSON scalars), ``checkpoint_files`` (tensors) and ``load_state``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from dgm.core.errors import DgmError
from dgm.core.progress import Progress as ProgressReport
from dgm.core.protocols import HasValidationMetrics
from dgm.data.dataset import fixed_subset
from dgm.train import distributed as ddp
from dgm.train.checkpoint import write_checkpoint

if TYPE_CHECKING:  # the engine imports this module
    from dgm.train.engine import Trainer

__all__ = [
    "Callback",
    "EMA",
    "TimeBudget",
    "MetricsLog",
    "TensorBoard",
    "Progress",
    "Validation",
    "Checkpoints",
]


class Callback:
    """Base class: every hook does nothing."""

    def on_fit_start(self, trainer: Trainer) -> None:
        pass

    def on_step_end(self, trainer: Trainer, terms: dict[str, Any]) -> None:
        pass

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        pass

    def on_fit_end(self, trainer: Trainer) -> None:
        pass

    def teardown(self, trainer: Trainer) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        """JSON scalars this callback adds to a checkpoint's state."""
        return {}

    def checkpoint_files(self) -> dict[str, dict[str, Tensor]]:
        """Tensor files (name -> tensors) this callback adds to a checkpoint."""
        return {}

    def load_state(self, state: dict[str, Any], files: dict[str, dict[str, Tensor]]) -> None:
        """Restore what :meth:`state_dict` and :meth:`checkpoint_files` saved."""


class EMA(Callback):
    """Exponential moving average of every weight (``model.state_dict()``), the evaluation and
    saved weights of the run.

    After engine step ``n`` (0, 1, ...) each floating entry becomes
    ``avg <- d_n avg + (1 - d_n) w`` with the warm-up ``d_n = min(decay, (1 + n) / (10 + n))``
    (Tensorflow's ``ExponentialMovingAverage`` with ``num_updates``): early averages forget the
    random initialisation fast. Integer entries (counters) are copied.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.weights = self._copy(model)

    @staticmethod
    def _copy(model: torch.nn.Module) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    def decay_at(self, n: int) -> float:
        """The decay applied after engine step ``n``."""
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: torch.nn.Module, n: int) -> None:
        d = self.decay_at(n)
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                self.weights[k].lerp_(v, 1.0 - d)
            else:
                self.weights[k].copy_(v)

    def on_fit_start(self, trainer: Trainer) -> None:
        if trainer.step == 0:  # after the model's data-dependent initialisation
            self.weights = self._copy(trainer.model)

    def on_step_end(self, trainer: Trainer, terms: dict[str, Any]) -> None:
        self.update(trainer.model, trainer.step - 1)

    def checkpoint_files(self) -> dict[str, dict[str, Tensor]]:
        return {"ema": self.weights}

    def load_state(self, state: dict[str, Any], files: dict[str, dict[str, Tensor]]) -> None:
        if "ema" in files:
            device = next(iter(self.weights.values())).device if self.weights else None
            self.weights = {k: v.to(device) for k, v in files["ema"].items()}


class TimeBudget(Callback):
    """Stops the run after ``seconds`` of training time (``trainer.elapsed_seconds``: every
    session of the run, validation excluded; :meth:`TrainConfig.training_seconds` of a
    ``max_minutes`` budget). All ranks agree on the slowest rank's time, which is also the clock
    of a schedule on ``schedule_clock="time"``: every rank stops at the same step with the same
    learning rate."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_step_end(self, trainer: Trainer, terms: dict[str, Any]) -> None:
        trainer.budget_clock = ddp.max_over_ranks(trainer.elapsed_seconds(), trainer.device)
        if trainer.budget_clock >= self.seconds:
            trainer.stop_reason = "time"


class MetricsLog(Callback):
    """Appends every record to ``metrics.jsonl`` (rank 0), and makes one record of the latest
    loss terms (averaged over ranks), the learning rate and the step rate every ``every`` steps,
    at the last step and when the run stops for time."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.running: dict[str, float] = {}
        self._last_t = 0.0
        self._last_step = 0

    def on_fit_start(self, trainer: Trainer) -> None:
        self._last_t, self._last_step = trainer.clock(), trainer.step

    def on_step_end(self, trainer: Trainer, terms: dict[str, Any]) -> None:
        for k, v in terms.items():
            self.running[k] = float(v.detach()) if isinstance(v, Tensor) else float(v)
        step = trainer.step
        if not (step % self.every == 0 or step == trainer.total_steps or trainer.stop_reason):
            return
        self.running = ddp.mean_over_ranks(self.running, trainer.device)
        now = trainer.clock()
        rate = (step - self._last_step) / max(now - self._last_t, 1e-9)  # this interval
        self._last_t, self._last_step = now, step
        lr = next(iter(trainer.optimizers.values())).param_groups[0]["lr"]
        trainer.log({"step": step, **self.running, "lr": lr, "steps_per_s": rate})

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if trainer.rank == 0:
            with open(trainer.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")


class TensorBoard(Callback):
    """Every numeric entry of every record as a TensorBoard scalar in ``<run>/tensorboard``
    (rank 0; needs the optional ``tensorboard`` package)."""

    def __init__(self) -> None:
        self.writer: Any = None

    def on_fit_start(self, trainer: Trainer) -> None:
        if trainer.rank != 0 or self.writer is not None:
            return
        try:  # reason: an optional dependency
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise DgmError(
                "tensorboard logging needs the tensorboard package, which is not installed; "
                "install it with `pip install 'dgm[tensorboard]'` or drop --tensorboard"
            ) from None
        self.writer = SummaryWriter(log_dir=str(trainer.out / "tensorboard"))

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, record["step"])

    def teardown(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class Progress(Callback):
    """The training loop's progress on rank 0 (:class:`dgm.core.progress.Progress`): a bar when
    stderr is a terminal, otherwise a line every ~10 s with the step and the last logged loss."""

    def __init__(self) -> None:
        self.bar: ProgressReport | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        if trainer.rank == 0:
            self.bar = ProgressReport(
                f"training {trainer.model.name}", trainer.total_steps, unit="steps",
                clock=trainer.clock, initial=trainer.step,
            )  # fmt: skip

    def on_step_end(self, trainer: Trainer, terms: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self.bar is not None and "lr" in record:  # a metrics line, not a skipped step
            self.bar.update(0, loss=f"{record.get('loss', float('nan')):.4g}")

    def teardown(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


#: ``metric(model, x, y, *, preprocessor, generator) -> {"nll": float, ...}``, e.g.
#: :func:`dgm.eval.likelihood.nll`: the validation NLL in nats of raw data ``x``
Metric = Callable[..., dict[str, Any]]


class Validation(Callback):
    """Validation every ``every`` steps (and once at the end when the last step is not a
    multiple): the model's own held-out statistics (:class:`~dgm.core.protocols.HasValidationMetrics`)
    logged as ``val_<key>``, and the validation NLL by ``metric`` (models with a likelihood),
    logged as ``val_nll`` with the training seconds of the weights it scored. The best weights so
    far go to the ``best`` checkpoint; ``patience`` evaluations without a better NLL stop the run
    (0: never). Both use the evaluation weights in eval mode and at most ``size`` examples
    (0: all; fewer than the split: a fixed random subset,
    :func:`~dgm.data.dataset.fixed_subset`); validation time is not training time."""

    def __init__(self, metric: Metric | None, every: int, patience: int, size: int) -> None:
        self.metric = metric
        self.every = every
        self.patience = patience
        self.size = size
        self.best = math.inf
        self.evals_since_best = 0

    def _data(self, trainer: Trainer) -> tuple[Tensor, Tensor | None]:
        x = trainer.val_x
        y = None if trainer.val_y is None or not trainer.model.conditional else trainer.val_y
        idx = fixed_subset(x.shape[0], x.shape[0] if self.size == 0 else self.size)
        if idx is None:
            return x, y
        return x[idx.to(x.device)], None if y is None else y[idx.to(y.device)]

    def nll(self, trainer: Trainer) -> float | None:
        """The validation NLL of the evaluation weights, or None when there is nothing to score."""
        model = trainer.model
        if self.metric is None or trainer.val_x is None:
            return None
        if not (model.exact_likelihood or model.likelihood_bound):
            return None
        x, y = self._data(trainer)
        with trainer.evaluation_mode():
            g = torch.Generator(device=trainer.device).manual_seed(12345)
            return self.metric(model, x, y, preprocessor=trainer.preprocessor, generator=g)["nll"]

    def model_metrics(self, trainer: Trainer) -> dict[str, float] | None:
        """The model's own statistics, in a forked random stream seeded alike every time:
        training draws the same random numbers with or without them."""
        model = trainer.model
        if trainer.val_x is None or not isinstance(model, HasValidationMetrics):
            return None
        x, y = self._data(trainer)
        with trainer.evaluation_mode(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(12345)
            if trainer.preprocessor is not None:
                g = torch.Generator(device=trainer.device).manual_seed(12345)
                x, _ = trainer.preprocessor(x, generator=g)
            return model.validation_metrics(x, y)

    def run(self, trainer: Trainer) -> bool:
        """Validate now; True when patience has run out."""
        trained = trainer.elapsed_seconds()  # the training time of the weights validated
        with trainer.untimed():
            extra = self.model_metrics(trainer)
            if extra:
                trainer.log({"step": trainer.step, **{f"val_{k}": v for k, v in extra.items()}})
            val = self.nll(trainer)
            if val is None:
                return False
            trainer.log({"step": trainer.step, "val_nll": val, "train_seconds": trained})
            if val < self.best:
                self.best = val
                self.evals_since_best = 0
                self._save_best(trainer)
                return False
            self.evals_since_best += 1
            return bool(self.patience and self.evals_since_best >= self.patience)

    def _save_best(self, trainer: Trainer) -> None:
        if trainer.rank != 0:
            return
        write_checkpoint(
            trainer.ckpt_root,
            "best",
            {"model": trainer.evaluation_weights()},
            {"step": trainer.step, "val_nll": self.best},
            update_latest=False,
        )

    def on_step_end(self, trainer: Trainer, terms: dict[str, Any]) -> None:
        if self.every and trainer.step % self.every == 0 and self.run(trainer):
            trainer.stop_reason = "early"

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.every and trainer.stop_reason != "early" and trainer.step % self.every != 0:
            self.run(trainer)

    def state_dict(self) -> dict[str, Any]:
        best = self.best if math.isfinite(self.best) else None
        return {"best_val": best, "evals_since_best": self.evals_since_best}

    def load_state(self, state: dict[str, Any], files: dict[str, dict[str, Tensor]]) -> None:
        self.best = state["best_val"] if state["best_val"] is not None else math.inf
        self.evals_since_best = state["evals_since_best"]


class Checkpoints(Callback):
    """A checkpoint every ``every`` steps (0: none on the way) and one at the end of the session.
    A step that ends the run writes only the end one."""

    def __init__(self, every: int) -> None:
        self.every = every

    def on_step_end(self, trainer: Trainer, terms: dict[str, Any]) -> None:
        if self.every and trainer.step % self.every == 0 and not trainer.finishing:
            trainer.save_checkpoint()

    def on_fit_end(self, trainer: Trainer) -> None:
        trainer.save_checkpoint()
