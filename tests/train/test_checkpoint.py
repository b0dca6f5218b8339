"""Checkpoints: atomic, checksummed, never unpickled; a corrupt one is detected and skipped."""

from __future__ import annotations

import pytest
import torch

from dgm.core.errors import CheckpointError
from dgm.train import checkpoint
from dgm.train.checkpoint import (
    flatten_optimizer_state,
    latest_checkpoint,
    read_checkpoint,
    unflatten_optimizer_state,
    write_checkpoint,
)


def _files(v: float):
    return {"model": {"w": torch.full((3,), v)}}


def test_round_trip_and_latest(tmp_path):
    for step in (1, 2, 3):
        write_checkpoint(tmp_path, f"step-{step:08d}", _files(step), {"step": step}, keep=2)
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("step-"))
    assert names == ["step-00000002", "step-00000003"]  # keep=2 removed the oldest
    path, skipped = latest_checkpoint(tmp_path)
    assert path.name == "step-00000003" and not skipped
    files, state = read_checkpoint(path)
    assert state == {"step": 3} and torch.equal(files["model"]["w"], torch.full((3,), 3.0))


def test_truncated_checkpoint_is_detected_and_skipped(tmp_path):
    write_checkpoint(tmp_path, "step-00000001", _files(1), {"step": 1})
    write_checkpoint(tmp_path, "step-00000002", _files(2), {"step": 2})
    f = tmp_path / "step-00000002" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-7])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(tmp_path / "step-00000002")
    path, skipped = latest_checkpoint(tmp_path)
    assert path.name == "step-00000001"
    assert len(skipped) == 1 and "checksum" in skipped[0]


def test_incomplete_checkpoint_without_manifest(tmp_path):
    write_checkpoint(tmp_path, "step-00000001", _files(1), {"step": 1})
    (tmp_path / "step-00000001" / "MANIFEST.json").unlink()
    path, skipped = latest_checkpoint(tmp_path)
    assert path is None and "incomplete" in skipped[0]


def test_failed_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    write_checkpoint(tmp_path, "step-00000001", _files(1), {"step": 1})

    class Boom(RuntimeError):
        pass

    def fail(*a, **k):
        raise Boom

    monkeypatch.setattr(checkpoint, "save_tensors", fail)
    with pytest.raises(Boom):
        write_checkpoint(tmp_path, "step-00000002", _files(2), {"step": 2})
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("latest")] == [
        "step-00000001"
    ]
    assert latest_checkpoint(tmp_path)[0].name == "step-00000001"


def test_optimizer_state_survives_safetensors(tmp_path):
    p = torch.nn.Parameter(torch.randn(4))
    opt = torch.optim.Adam([p], lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        (p**2).sum().backward()
        opt.step()
    tensors, meta = flatten_optimizer_state(opt.state_dict())
    write_checkpoint(tmp_path, "step-00000001", {"optim": tensors}, meta)
    files, state = read_checkpoint(tmp_path / "step-00000001")
    opt2 = torch.optim.Adam([torch.nn.Parameter(p.detach().clone())], lr=0.1)
    opt2.load_state_dict(unflatten_optimizer_state(files["optim"], state))
    s1, s2 = opt.state_dict()["state"][0], opt2.state_dict()["state"][0]
    for k in s1:
        torch.testing.assert_close(s1[k], s2[k])
