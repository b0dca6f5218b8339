"""Ready-made comparisons for ``dgm compare --preset NAME``: data, models, budget, evaluation.

A preset fixes everything a comparison needs so that its leaderboard can be rerun and compared
across dgm versions. Budgets are chosen for 2 quiet cores; where a model's default inference
setting would dominate the preset's run time, the preset says so and overrides it explicitly
(the overrides are written into the leaderboard).

The model lists come from the registry, not from a hand-kept list: :data:`FAMILIES` groups every
registered model by its class's ``family`` attribute, so a model that registers itself joins the
presets that take every family.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dgm.models import entries

__all__ = ["FAMILIES", "PRESETS", "Preset", "all_models"]


def _families() -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {}
    for cls in entries():  # sorted by registry name
        out.setdefault(cls.family, []).append(cls.name)
    return {family: tuple(out[family]) for family in sorted(out)}


#: every registered model by family (``{"autoregressive": ("gated-pixelcnn", "made", ...), ...}``),
#: from each model class's ``family`` attribute
FAMILIES: dict[str, tuple[str, ...]] = _families()


def all_models() -> tuple[str, ...]:
    """Every registered model, family by family (the models of a preset that lists none)."""
    return tuple(name for members in FAMILIES.values() for name in members)


@dataclass(frozen=True)
class Preset:
    """A ready-made comparison: datasets, models, budget and evaluation settings in one place."""

    description: str
    data: tuple[str, ...]
    models: tuple[str, ...] = field(default_factory=all_models)
    #: training minutes of every run (TrainConfig's ``max_minutes``); or a step count in ``steps``
    max_minutes: float | None = None
    steps: int | None = None
    seeds: int = 1
    train: dict[str, Any] = field(default_factory=dict)
    model_config: dict[str, dict[str, Any]] = field(default_factory=dict)
    sample_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)


# Budgets are chosen for 2 quiet cores: about 13 applicable models x 2 densities x (15 s of
# training + ~10 s of evaluation) for toy2d, about 16 models x (24 s + ~15 s) for digits.
PRESETS: dict[str, Preset] = {
    "toy2d": Preset(
        description="every family on two analytic 2-D densities (8gaussians: modes; "
        "checkerboard: sharp edges), 13 s of training each",
        data=("8gaussians", "checkerboard"),
        # 12.6 s: the preset lists every registered model (22 x 2 densities; the discrete-only
        # ones fail fast on 2-D points) and stays under 10 training minutes
        max_minutes=0.21,
        train={"batch_size": 256, "eval_every": 250, "eval_size": 500},
        # reflow distils the flow-matching run of the same comparison (run before it)
        model_config={"reflow": {"teacher": "@flow-matching", "pairs": 4096}},
        eval={"num_samples": 1000, "max_test": 1000, "grid_size": 100},
    ),
    "digits": Preset(
        description="every family on scikit-learn's 8x8 digits, 24 s of training each",
        data=("digits",),
        max_minutes=0.4,
        train={"batch_size": 128, "eval_every": 250, "eval_size": 350},
        # score-sde's 64-dim probability-flow likelihood at the default tolerance 1e-4 takes ~15 s
        # per 100 digits (about 5 minutes for the run summary); 1e-3 takes a third of that and
        # moved the test NLL by 0.7 nats (half its standard error) on a trained model
        model_config={
            "score-sde": {"rtol": 1e-3, "atol": 1e-3},
            # the exact 64-dim trace costs 64 vector-Jacobian products per solver step: a looser
            # tolerance than the default 1e-5 bounds the summary's time, as for score-sde
            "flow-matching": {"rtol": 1e-4, "atol": 1e-4},
            # reflow distils the flow-matching run of the same comparison (run before it); its
            # likelihood is flow matching's, at the same tolerance
            "reflow": {"teacher": "@flow-matching", "pairs": 4096, "rtol": 1e-4, "atol": 1e-4},
            # the default 64x6 resnet runs ~2 steps/s on one busy core: a smaller one learns more
            # in 24 s, and 4 t-draws per image keep the summary's bound estimate short
            "masked-diffusion": {"width": 32, "depth": 4, "bound_t_samples": 4},
        },
        # ncsn's annealed Langevin default (100 steps at each of 10 levels, 1000 U-Net passes)
        # took 6 of the preset's minutes to draw 447 samples on one core; 20 per level
        sample_options={"ncsn": {"steps_each": 20}},
        eval={"num_samples": 447},
    ),
}
