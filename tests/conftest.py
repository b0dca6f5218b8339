"""Shared fixtures. Tests run on CPU with few threads and fixed seeds."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hypothesis import settings

from dgm.cli.main import main
from dgm.models import get

# `make test` runs one pytest worker per core (pytest-xdist): each worker then computes on one thread
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, os.cpu_count() or 1))

# Property and fuzz tests draw the same cases on every run (a red CI is then a real, repeatable
# failure); `make fuzz` selects the randomized profile, whose failures are added as @example.
settings.register_profile("dgm", derandomize=True, database=None, deadline=None)
settings.register_profile("fuzz", derandomize=False, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dgm"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="session")
def import_benchmark():
    """``import_benchmark(name)``: the module ``benchmarks/<name>.py``, imported with
    ``benchmarks/`` on the path (its scripts import each other by bare name)."""

    def load(name: str):
        sys.path.insert(0, str(BENCHMARKS))
        try:
            return importlib.import_module(name)
        finally:
            sys.path.remove(str(BENCHMARKS))

    return load


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture(autouse=True, scope="session")
def _feature_cache(tmp_path_factory):
    """Feature networks trained by tests are cached in a temporary folder, never in the data dir."""
    old = os.environ.get("DGM_CACHE")
    os.environ["DGM_CACHE"] = str(tmp_path_factory.mktemp("dgm-cache"))
    yield
    if old is None:
        os.environ.pop("DGM_CACHE", None)
    else:
        os.environ["DGM_CACHE"] = old


@pytest.fixture
def one_thread():
    """Tiny tensors: one thread avoids synchronisation cost and contention on shared cores.
    A module asks for it in every test with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def tiny() -> SimpleNamespace:
    """Runs that take seconds (the comparison tests): ``tiny.eval`` (evaluation options),
    ``tiny.train`` (training options) and ``tiny.configs(*names)`` (each model's
    ``example.config``). One conftest for the whole suite: a second one would shadow this module
    for ``from conftest import``."""
    return SimpleNamespace(
        eval={"max_test": 300, "num_samples": 200, "grid_size": 40},
        train={"batch_size": 64, "eval_size": 200, "log_every": 5},
        configs=lambda *names: {n: dict(get(n).example.config) for n in names},
    )


# ------------------------------------------------------------------ helpers (``from conftest import``)
def perturb(module: torch.nn.Module, scale: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """Add ``scale`` times Gaussian noise (from a generator seeded with ``seed``) to every
    parameter: zero-initialised output layers would otherwise block gradients to earlier layers
    and make maps the identity. Returns ``module``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def run_cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """``dgm ARGV`` in this process: ``(exit code, stdout, stderr)``."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_sentence_error(code: int, err: str) -> str:
    """Assert the CLI's contract for bad input (exit 2, one ``dgm: error:`` line, no traceback)
    and return the line."""
    assert code == 2 and err.startswith("dgm: error: ") and "Traceback" not in err, (code, err)
    assert len(err.strip().splitlines()) == 1, err
    return err
