"""Two CPU processes under torchrun train to the same parameters as one process on the same global
batch, and a run started with two processes resumes with one."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dgm.train.checkpoint import load_tensors

TORCHRUN = Path(sys.executable).with_name("torchrun")
ARGS = ["--data", "8gaussians", "--batch-size", "64", "--no-progress", "--checkpoint-every", "10",
        "--set", "num_layers=2", "--set", "hidden=[16,16]"]  # fmt: skip

pytestmark = pytest.mark.skipif(
    not TORCHRUN.exists() and not shutil.which("torchrun"), reason="no torchrun"
)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(nproc: int, *argv: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if nproc == 1:
        cmd = [sys.executable, "-m", "dgm", *argv]
    else:
        cmd = [str(TORCHRUN if TORCHRUN.exists() else "torchrun"), f"--nproc_per_node={nproc}",
               "--master_addr=127.0.0.1", f"--master_port={_port()}", "-m", "dgm", *argv]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    errors = [line for line in proc.stderr.splitlines() if "dgm:" in line]
    assert proc.returncode == 0, (errors, proc.stderr[-1500:])


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_tensors(run / "model.safetensors")


def _assert_close(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def test_two_processes_match_one_and_resume_across_world_sizes(tmp_path):
    _run(1, "train", "nsf", "--out", str(tmp_path / "one"), "--steps", "20", *ARGS)
    _run(2, "train", "nsf", "--out", str(tmp_path / "two"), "--steps", "20", *ARGS)
    one, two = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    _assert_close(one, two)
    # the parameters did move: the comparison is not between two untrained models
    _run(1, "train", "nsf", "--out", str(tmp_path / "short"), "--steps", "10", *ARGS)
    assert any(not torch.allclose(one[k], _weights(tmp_path / "short")[k]) for k in one)
    # started with 2 processes, resumed with 1 (and the reverse)
    _run(
        2,
        "train",
        "nsf",
        "--out",
        str(tmp_path / "short"),
        "--resume",
        "--steps",
        "20",
        "--no-progress",
    )
    _assert_close(one, _weights(tmp_path / "short"))
    _run(2, "train", "nsf", "--out", str(tmp_path / "mixed"), "--steps", "10", *ARGS)
    _run(
        1,
        "train",
        "nsf",
        "--out",
        str(tmp_path / "mixed"),
        "--resume",
        "--steps",
        "20",
        "--no-progress",
    )
    _assert_close(one, _weights(tmp_path / "mixed"))
