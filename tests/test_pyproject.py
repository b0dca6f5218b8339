"""pyproject.toml installs without a deprecation banner: setuptools reads it without warnings."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_setuptools_reads_the_project_without_a_deprecation_warning():
    pytest.importorskip("setuptools", minversion="77")  # the dev extra asks for it
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), ROOT / "pyproject.toml")
    banners = [f"{w.category.__name__}: {str(w.message).splitlines()[0]}" for w in caught]
    assert banners == [], banners  # e.g. "`project.license` as a TOML table is deprecated"
    assert dist.get_name() == "dgm" and dist.metadata.license_expression == "MIT"
