"""Two CPU processes under torchrun train to the same parameters as one process on the same global
batch, and a run started with two processes resumes with one."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dgm.core.io import load_tensors

TORCHRUN = Path(sys.executable).with_name("torchrun")
ARGS = ["--data", "8gaussians", "--batch-size", "64", "--no-progress", "--checkpoint-every", "10",
        "--set", "depth=2", "--set", "hidden=[16,16]",
        # nsf decays its rate over the run by default; a resume to a new length must not change
        # the rate of the steps already taken, so these runs keep it constant
        "--train-set", "schedule=constant"]  # fmt: skip

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


RANK_SCRIPT = """
import sys, torch
from dgm.models import build
from dgm.core.spec import DataSpec
from dgm.train import distributed as ddp
from dgm.train.config import TrainConfig
from dgm.train.engine import Trainer
from dgm.core.io import save_tensors

out = sys.argv[1]
torch.manual_seed(0)
x = torch.randn(512, 2, generator=torch.Generator().manual_seed(0))
model = build("nsf", DataSpec((2,)), depth=2, hidden=[16, 16])
cfg = TrainConfig(steps=10**6, batch_size=64, lr=3e-3, schedule="cosine", schedule_clock="time",
                  max_minutes=0.01, log_every=1, progress=False, checkpoint_every=0)
# a controlled clock per rank, rank 1's running faster (a slower machine): every reading moves
# it 2 ms or 4 ms, so the run lasts a fixed number of steps whatever the machine's speed
readings = [0]
def clock():
    readings[0] += 1
    return readings[0] * 0.002 * (1 + ddp.rank())
Trainer(model, x, config=cfg, out=out, clock=clock).fit()
save_tensors(model.state_dict(), f"{out}/rank{ddp.rank()}.safetensors")
"""


def test_time_clock_gives_every_rank_the_same_learning_rate(tmp_path):
    # each rank's own clock differs; the schedule runs on the slowest rank's, so the ranks apply
    # the same rates to the same averaged gradients and stay bit-identical
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [str(TORCHRUN if TORCHRUN.exists() else "torchrun"), "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_port()}", str(script), str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-1500:]
    a, b = (
        load_tensors(tmp_path / "rank0.safetensors"),
        load_tensors(tmp_path / "rank1.safetensors"),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    lrs = [json.loads(s).get("lr") for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    lrs = [lr for lr in lrs if lr is not None]
    assert len(lrs) > 5 and lrs[-1] < 0.2 * 3e-3  # the rate decayed over the budget
