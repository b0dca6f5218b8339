"""dgm.cli.malloc: the ``dgm`` command's malloc thresholds are set on Linux with glibc and left
alone when asked; what they buy (page faults, seconds) is measured in the module's docstring,
not here."""

from __future__ import annotations

import sys

import pytest

from dgm.cli import malloc


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_the_thresholds_are_set_on_linux():
    assert malloc.tune() is True


def test_dgm_malloc_default_leaves_malloc_alone(monkeypatch):
    monkeypatch.setenv("DGM_MALLOC", "default")
    assert malloc.tune() is False
