"""``kill -9`` at any moment loses at most the steps since the last checkpoint, and the resumed run
is bit-identical to one that was never interrupted (a real SIGKILL of a subprocess)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dgm.core.io import load_tensors
from dgm.train.checkpoint import list_checkpoints

ARGS = ["--data", "8gaussians", "--batch-size", "64", "--no-progress", "--set", "depth=2",
        "--set", "hidden=[16,16]",
        # nsf decays its rate over the run by default; a resume to a new length must not change
        # the rate of the steps already taken, so these runs keep it constant
        "--train-set", "schedule=constant", "--checkpoint-every", "20", "--ema", "0.9"]  # fmt: skip
STEPS = "120"


def _train(out: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dgm", "train", "nsf", "--out", str(out), *ARGS, *extra],
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("ref") / "run"
    proc = _train(out, "--steps", STEPS)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    return load_tensors(out / "model.safetensors")


def _wait_for(pred, timeout=120.0) -> None:
    t0 = time.time()
    while not pred():
        if time.time() - t0 > timeout:
            raise TimeoutError
        time.sleep(0.002)


def _resume_and_compare(out: Path, reference) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dgm", "train", "--out", str(out), "--resume", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    got = load_tensors(out / "model.safetensors")
    for k in reference:
        assert torch.equal(reference[k], got[k]), k


@pytest.mark.parametrize("moment", ["after-first-checkpoint", "between-checkpoints", "mid-write"])
def test_sigkill_then_resume_is_bit_identical(moment, tmp_path, reference):
    out = tmp_path / "run"
    ckpts = out / "checkpoints"
    env = {"DGM_TEST_CHECKPOINT_DELAY": "0.3"} if moment == "mid-write" else None
    proc = _train(out, "--steps", STEPS, env=env)
    try:
        if moment == "after-first-checkpoint":
            _wait_for(lambda: len(list_checkpoints(ckpts)) >= 1)
        elif moment == "between-checkpoints":
            _wait_for(lambda: len(list_checkpoints(ckpts)) >= 2)
            time.sleep(0.05)
        else:  # a temporary checkpoint folder exists: the process is inside a write
            _wait_for(lambda: ckpts.is_dir() and any(p.name.startswith(".tmp-") for p in ckpts.iterdir()) and len(list_checkpoints(ckpts)) >= 1)  # fmt: skip
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "model.safetensors").exists()  # it really died before the end
    _resume_and_compare(out, reference)


def test_corrupt_latest_checkpoint_falls_back_to_the_previous(tmp_path, reference):
    out = tmp_path / "run"
    proc = _train(out, "--steps", "60")
    assert proc.wait(timeout=300) == 0
    (out / "model.safetensors").unlink()
    (out / "summary.json").unlink()
    newest = list_checkpoints(out / "checkpoints")[-1]
    f = newest / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-10])
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dgm",
            "train",
            "--out",
            str(out),
            "--resume",
            "--steps",
            STEPS,
            "--no-progress",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        "skipped a checkpoint" in proc.stdout + proc.stderr
        and "corrupt" in proc.stdout + proc.stderr
    )
    got = load_tensors(out / "model.safetensors")
    for k in reference:
        assert torch.equal(reference[k], got[k]), k
