"""Training options: one typed dataclass, saved with every run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["TRAINING_SHARE", "TrainConfig", "bf16_hardware"]

#: the share of a ``max_minutes`` budget the training loop gets; the rest is kept for the end of
#: the run (scoring the summary, drawing the figures), so that the budget covers the whole run
TRAINING_SHARE = 0.8


def bf16_hardware(device: str) -> bool:
    """True when ``device`` computes bfloat16 products in hardware: a CUDA GPU with bfloat16
    support (Ampere and newer), or a CPU with Intel AMX tiles (Sapphire Rapids and newer) or
    AVX-512 bfloat16 dot products (``avx512_bf16``: AMD Zen 4 and newer, Intel Cooper Lake), on
    which oneDNN runs bfloat16 convolutions and products. Without them bfloat16 is converted to
    float32 and is often slower than float32 (see the README). On the two cores of an AMD EPYC
    with ``avx512_bf16`` and no AMX, the Gated PixelCNN's MNIST step took 0.66x and flow
    matching's 0.75x the time in bf16-mixed (``precision_mnist_2threads_avx512bf16.json``); on an
    AMX host 0.67x and 0.85x (``precision_mnist_2threads.json``)."""
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    # private functions of torch.cpu, absent in older torch: then no
    units = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    found = any(getattr(torch.cpu, name, lambda: False)() for name in units)
    return bool(found and torch.backends.mkldnn.is_available())


@dataclass
class TrainConfig:
    """Options of the engine (not of the model).

    At most one of ``steps`` and ``epochs`` sets the length; with neither, a time budget
    (``max_minutes``) alone ends the run, and without one either, 1000 steps.
    """

    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: Literal["adam", "adamw"] = "adam"
    weight_decay: float = 0.0
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    warmup_steps: int = 0
    #: what a decaying schedule runs on: ``"steps"`` (the fraction of ``steps`` done) or
    #: ``"time"`` (the fraction of the ``max_minutes`` budget used, so that the rate reaches its
    #: end when the time does, however fast the machine turns out to be; not reproducible
    #: step for step)
    schedule_clock: Literal["steps", "time"] = "steps"
    #: maximum global gradient norm; 0 disables clipping
    grad_clip: float = 10.0
    #: evaluate validation NLL every this many steps (0: only at the end)
    eval_every: int = 0
    #: at most this many validation examples per evaluation (0: all)
    eval_size: int = 5000
    #: stop after this many evaluations without improvement (0: never stop early)
    patience: int = 0
    #: decay of an exponential moving average of the weights (0: off); the EMA is what is saved
    ema: float = 0.0
    seed: int = 0
    device: str = "cpu"
    #: dtype of the weights, the data and every computation: ``"float32"`` or ``"float64"``
    dtype: str = "float32"
    #: ``"full"``: everything in ``dtype``; ``"bf16-mixed"``: the training loss's forward pass
    #: under ``torch.autocast(dtype=torch.bfloat16)`` (matrix products and convolutions in
    #: bfloat16, the weights, gradients, optimizer state, validation and saved model in float32).
    #: On CPU it is often slower than float32 (see the README); it pays on GPUs with bfloat16
    #: tensor cores (Ampere and newer) and on CPUs with AMX tiles or ``avx512_bf16``.
    #: ``"auto"``: ``"bf16-mixed"`` where such hardware computes the products and ``dtype`` is
    #: float32, ``"full"`` elsewhere (:meth:`resolved_precision`; a model's MNIST recipe may ask
    #: for it).
    precision: Literal["full", "bf16-mixed", "auto"] = "full"
    #: write a checkpoint every this many steps (0: only at the end)
    checkpoint_every: int = 1000
    #: checkpoints kept besides the best one
    keep_checkpoints: int = 2
    #: log a line to metrics.jsonl every this many steps
    log_every: int = 50
    progress: bool = True
    #: stop after this many non-finite steps in a row (each one is skipped)
    max_bad_steps: int = 20
    #: the time budget of the whole run in minutes (0: no limit): training stops after
    #: ``TRAINING_SHARE`` of it (training time, validation excluded) and the end of the run (its
    #: summary and figures) fits in the rest. The budget spans resumes, so an interrupted run
    #: continues with what is left of it (``dgm train|compare --max-minutes``)
    max_minutes: float = 0.0
    #: also log the metrics to TensorBoard event files in ``<run>/tensorboard`` (needs the
    #: optional ``tensorboard`` package: ``pip install 'dgm[tensorboard]'``)
    tensorboard: bool = False
    #: compile the model's training loss with ``torch.compile`` (inductor; on CPU it needs a C++
    #: compiler). Measured on one core it did not pay for any model tried: step time compiled /
    #: eager 0.92 for the VAE on binarized MNIST (10 s of compiling: 14,700 steps to break
    #: even), 1.18 for MADE 784-3000-784, 1.10 for nsf and 1.00 for flow matching in 2-D, after
    #: 3-14 s of compiling (benchmarks/results/compile.json).
    #: Off by default; a run's weights do not depend on it beyond float rounding.
    compile: bool = False

    def __post_init__(self) -> None:
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give either steps or epochs, not both")
        for key in ("batch_size", "log_every", "max_bad_steps"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be at least 1, not {getattr(self, key)}")
        if self.steps is not None and self.steps < 0:
            raise ValueError(f"steps must be >= 0, not {self.steps}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, not {self.epochs}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, not {self.lr}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), not {self.ema}")
        if not self.max_minutes >= 0.0:  # also rejects NaN
            raise ValueError(f"max_minutes must be >= 0 (0: no limit), not {self.max_minutes}")
        if self.schedule_clock == "time" and not self.max_minutes:
            raise ValueError(
                "schedule_clock 'time' runs the schedule on the time budget, which is not set; "
                "give max_minutes > 0, or use schedule_clock 'steps'"
            )
        if (
            self.schedule != "constant"
            and self.schedule_clock == "steps"
            and self.steps is None
            and self.epochs is None
            and self.max_minutes
        ):
            raise ValueError(
                f"a {self.schedule} schedule on the steps clock needs the run's length, which a "
                "time budget alone does not give; set steps or epochs, or schedule_clock 'time'"
            )
        if self.dtype not in ("float32", "float64"):
            hint = (
                "; for bfloat16 mixed precision (float32 weights, bfloat16 products) use "
                "precision 'bf16-mixed' (--precision bf16-mixed)"
                if self.dtype in ("bfloat16", "bf16", "float16", "half")
                else ""
            )
            raise ValueError(
                f"dtype is the dtype of the weights and data, 'float32' or 'float64', not "
                f"{self.dtype!r}{hint}"
            )
        if self.precision == "bf16-mixed" and self.dtype != "float32":
            raise ValueError(
                f"precision 'bf16-mixed' keeps float32 weights and computes in bfloat16; it does "
                f"not combine with dtype {self.dtype!r}: use dtype 'float32' or precision 'full'"
            )
        if self.device != "cpu" and not self.device.startswith("cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', not {self.device!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(
                f"device {self.device!r} is not available: this torch build has no CUDA or sees no "
                "GPU; use --device cpu, or install a CUDA build of torch"
            )
        if (
            self.precision == "bf16-mixed"
            and self.device.startswith("cuda")
            and not torch.cuda.is_bf16_supported()
        ):
            raise ValueError(
                f"device {self.device!r} cannot compute in bfloat16 (it needs an Ampere or newer "
                "GPU); use precision 'full' on it, or train on --device cpu"
            )

    def resolved_precision(self) -> str:
        """``"full"`` or ``"bf16-mixed"``: :attr:`precision`, with ``"auto"`` decided by this
        machine (:func:`bf16_hardware`) and the dtype."""
        if self.precision != "auto":
            return self.precision
        return "bf16-mixed" if self.dtype == "float32" and bf16_hardware(self.device) else "full"

    def training_seconds(self) -> float:
        """The training time of the budget in seconds: ``TRAINING_SHARE`` of ``max_minutes``."""
        return 60.0 * self.max_minutes * TRAINING_SHARE

    def total_steps(self, steps_per_epoch: int) -> int | None:
        """The number of steps of the run; None when only the time budget ends it."""
        if self.steps is not None:
            return self.steps
        if self.epochs is not None:
            return self.epochs * steps_per_epoch
        return None if self.max_minutes else 1000
