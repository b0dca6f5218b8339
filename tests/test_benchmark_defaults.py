"""benchmarks/defaults.py: its table (one row per model, every density side by side) from fake
runs, and the settings it reports; nothing is trained."""

from __future__ import annotations

import math

import pytest

import dgm.data


@pytest.fixture(scope="module")
def defaults(import_benchmark):
    module = import_benchmark("defaults")  # benchmarks/defaults.py
    module.markdown_table = import_benchmark("_common").markdown_table
    return module


def fake(model, family, data, c2st, gap, likelihood, wall=10.0):
    return {
        "model": model, "family": family, "data": data, "settings": "steps 2000, batch 512",
        "wall_train_s": 3 * wall, "cpu_train_s": wall, "c2st": c2st, "gap": gap, "likelihood": likelihood,
    }  # fmt: skip


def test_the_table_has_one_row_per_model_and_names_bounds(defaults):
    runs = [
        fake("nsf", "flows", "8gaussians", 0.51, 0.012, "log_prob", 40.0),
        fake("vae", "vae", "8gaussians", 0.55, 0.25, "iwae_bound(k=100), a lower bound"),
        fake("gan", "gan", "8gaussians", 0.53, None, None),
        fake("nsf", "flows", "rings", 0.52, 0.1, "log_prob (exact)", 50.0),
    ]
    del runs[1]["cpu_train_s"]  # a run that recorded only its wall time says so
    rows, columns = defaults.wide_rows(runs, ["8gaussians", "rings"])
    assert columns == [
        "family", "model", "default settings", "train s (1 thread)",
        "C2ST 8gaussians", "gap 8gaussians", "C2ST rings", "gap rings",
    ]  # fmt: skip
    assert [r["model"] for r in rows] == ["nsf", "vae", "gan"]
    nsf, vae, gan = rows
    assert nsf[defaults.TIME] == "40 / 50"
    assert nsf["C2ST rings"] == "0.520" and nsf["gap 8gaussians"] == "0.012"
    assert nsf["gap rings"] == "0.100"  # "log_prob (...)": exact, not a bound
    assert vae["gap 8gaussians"] == "0.250 (bound)"  # a bound is named as one
    assert vae["C2ST rings"] == "–" and vae[defaults.TIME] == "30 wall / –"  # not run
    assert gan["gap 8gaussians"] == "–"  # no likelihood
    table = defaults.markdown_table(rows, columns)
    assert table.count("\n") == 2 + len(rows) - 1 and "| gan |" in table


def test_settings_show_the_run_length_and_what_differs_from_the_engine(defaults):
    assert defaults.settings({"steps": None, "epochs": None, "max_minutes": 0.0}) == "steps 1000"
    assert defaults.settings({"steps": 2000, "batch_size": 512, "lr": 1e-3}) == (
        "steps 2000, batch 512"
    )
    assert defaults.settings({"steps": None, "max_minutes": 2.0, "ema": 0.999}) == (
        "steps by time, minutes 2.0, ema 0.999"
    )


def test_the_entropy_of_8gaussians_lies_just_below_that_of_separated_modes(defaults):
    density = dgm.data.load("8gaussians").density
    h, sem = defaults.entropy(density, n=200_000)
    # a mixture of 8 equal Gaussians of std 0.5 / sqrt 2 has at most log 8 + log(2 pi e / 8)
    # nats, reached when they do not overlap; these overlap a little (6 std apart)
    upper = math.log(8) + math.log(2 * math.pi * math.e / 8)
    assert upper - 0.02 < h < upper + 4 * sem


def test_misses_name_each_target_a_run_misses(defaults):
    """Issue 24's targets: C2ST <= 0.60; KL <= 0.10 for an exact density (nsf, a spline flow:
    0.02); a bound within 0.30 nats of the true cross-entropy."""
    assert defaults.misses(fake("nsf", "flows", "rings", 0.52, 0.05, "log_prob")) == [
        "KL 0.050 > 0.02"
    ]
    assert defaults.misses(fake("glow", "flows", "rings", 0.52, 0.05, "log_prob: exact")) == []
    assert defaults.misses(fake("vae", "vae", "rings", 0.612, 0.412, "iwae_bound(k=100)")) == [
        "C2ST 0.612 > 0.60",
        "bound gap 0.412 > 0.30",
    ]
    assert defaults.misses(fake("ddpm", "diffusion", "rings", 0.55, 0.29, "elbo (...)")) == []
    assert defaults.misses(fake("gan", "gan", "rings", 0.61, None, None)) == ["C2ST 0.610 > 0.60"]
