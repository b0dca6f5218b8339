"""Safe files: atomic writes that follow the umask, and safetensors that never unpickle."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from dgm.core.errors import CheckpointError
from dgm.core.io import atomic_path, atomic_write_text, load_tensors, save_tensors


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_written_files_follow_the_umask(tmp_path, umask_022):
    # mkstemp alone makes 0600 files: config.yaml, summary.json and weights were unreadable to
    # the group while the PNGs beside them were not
    atomic_write_text(tmp_path / "a.txt", "x")
    save_tensors({"w": torch.ones(2)}, tmp_path / "w.safetensors")
    for name in ("a.txt", "w.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("the writer failed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_tensors_round_trip_and_a_pickle_is_refused(tmp_path):
    save_tensors({"w": torch.arange(3.0)}, tmp_path / "w.safetensors", metadata={"k": 1})
    assert torch.equal(load_tensors(tmp_path / "w.safetensors")["w"], torch.arange(3.0))
    (tmp_path / "bad.safetensors").write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(CheckpointError, match="not safetensors"):
        load_tensors(tmp_path / "bad.safetensors")
