"""``dgm compress`` and ``dgm decompress``: lossless coding with a trained autoregressive run.

    dgm compress RUN INPUT.npy OUT.bin
    dgm decompress RUN OUT.bin RESTORED.npy

The input is raw data as the run's dataset stores it (integers ``0..L-1``), and the run must feed
it to the model unchanged (preprocess ``identity``): a binarizing or dequantizing run models other
data than the file holds.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from dgm.api import load_run
from dgm.cli.inputs import read_npy
from dgm.core.errors import DataError, DgmError
from dgm.core.io import atomic_path, atomic_write_bytes
from dgm.models.autoregressive.coding import (
    check_coder_model,
    compress,
    decompress,
    nll_bits,
    payload_bytes,
)

__all__ = ["cmd_compress", "cmd_decompress"]


def _load_coder_run(path: str) -> Any:
    run = load_run(path)
    check_coder_model(run.model)
    pre = run.preprocessor.to_config().get("name")
    if pre != "identity":
        raise DgmError(
            f"run {path} feeds its model {pre}-preprocessed data, so it cannot code the raw data "
            "losslessly; use a run trained with preprocess identity (the default for discrete "
            "models)"
        )
    return run


def cmd_compress(args: Any) -> int:
    run = _load_coder_run(args.run)
    data = read_npy(args.input, "INPUT")
    blob = compress(run.model, data)
    nll = nll_bits(run.model, data)
    atomic_write_bytes(Path(args.out), blob)
    dims, payload = math.prod(data.shape), payload_bytes(blob)
    print(
        f"dgm: {data.shape[0]} examples -> {len(blob)} bytes ({payload} coded, "
        f"{8 * payload / dims:.4f} bits/dim, plus a {len(blob) - payload}-byte header); "
        f"model NLL {nll / 8:.0f} bytes ({nll / dims:.4f} bits/dim); written to {args.out}",
        file=sys.stderr,
    )
    return 0


def cmd_decompress(args: Any) -> int:
    run = _load_coder_run(args.run)
    src, out = Path(args.input), Path(args.out)
    if out.suffix != ".npy":
        raise DataError(f"the output must end in .npy, not {out.suffix or 'no suffix'!r}")
    if not src.is_file():
        raise DataError(f"input file {src} does not exist")
    data = decompress(run.model, src.read_bytes())
    with atomic_path(out, suffix=".npy") as tmp:
        np.save(tmp, data)
    print(f"dgm: restored {data.shape[0]} examples {data.shape} to {out}", file=sys.stderr)
    return 0
