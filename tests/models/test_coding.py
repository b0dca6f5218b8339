"""Likelihood is compression: exact round trips, size close to the model's NLL, clear refusals."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from dgm.cli.main import main
from dgm.core.errors import DataError, DgmError
from dgm.core.spec import DataSpec
from dgm.models.autoregressive import MADE, RNN, GatedPixelCNN, PixelCNN
from dgm.models.autoregressive.coding import (
    MAGIC,
    compress,
    decompress,
    model_fingerprint,
    nll_bits,
    payload_bytes,
)


def skewed(cls, spec, scale=1.0, **config):
    """A model with strongly non-uniform conditionals (so coding has something to gain)."""
    torch.manual_seed(0)
    model = cls(spec, cls.Config(**config)).double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return model.eval()


@pytest.fixture(scope="module")
def pixel_model():
    spec = DataSpec((1, 6, 6), "discrete", levels=4)
    return skewed(PixelCNN, spec, width=8, depth=1, first_kernel=3, head=8)


@pytest.mark.slow  # ~5 s: encodes and decodes 300 images of 36 pixels, one pixel at a time
def test_round_trip_is_exact_and_size_is_the_nll(pixel_model):
    torch.manual_seed(3)
    data = pixel_model.sample(300).numpy().astype(np.uint8)  # typical data of the model
    blob = compress(pixel_model, data, chunk=128)  # three chunks, the last one partial
    restored = decompress(pixel_model, blob)
    assert restored.dtype == np.uint8 and restored.shape == data.shape
    assert np.array_equal(restored, data)
    nll = nll_bits(pixel_model, data)
    (head,) = struct.unpack("<I", blob[len(MAGIC) : len(MAGIC) + 4])
    payload_bits = 8 * (len(blob) - len(MAGIC) - 4 - head)
    assert payload_bits == 8 * payload_bytes(blob)
    assert payload_bits <= 1.01 * nll + 64  # within 1% plus the coder's final words
    assert payload_bits >= nll - 64  # no coder beats the model's own code length by much
    assert len(blob) - payload_bits / 8 < 400  # a small header
    # a skewed model compresses far below the 2 bits/pixel of a uniform code
    assert payload_bits < 0.9 * 2 * data.size


def test_float_arrays_of_integers_round_trip_too():
    model = skewed(RNN, DataSpec((5,), "discrete", levels=3), embed=4, width=8)
    data = np.array([[0, 1, 2, 1, 0], [2, 2, 2, 0, 1], [1, 1, 1, 1, 1]], dtype=np.float32)
    out = decompress(model, compress(model, data))
    assert out.dtype == np.float32 and np.array_equal(out, data)


def test_bad_inputs_and_corrupt_files_are_refused(pixel_model):
    data = np.zeros((3, 1, 6, 6), dtype=np.uint8)
    with pytest.raises(DataError, match="non-integer"):
        compress(pixel_model, data + 0.5)
    with pytest.raises(DataError, match="shape"):
        compress(pixel_model, np.zeros((3, 35), dtype=np.uint8))
    with pytest.raises(DataError, match="0..3"):
        compress(pixel_model, data + 4)
    blob = compress(pixel_model, data)
    with pytest.raises(DataError, match="magic"):
        decompress(pixel_model, b"garbage" + blob)
    with pytest.raises(DataError, match="truncated or altered"):
        decompress(pixel_model, blob[:-4])
    flipped = bytearray(blob)
    flipped[-1] ^= 1
    with pytest.raises(DataError, match="truncated or altered"):
        decompress(pixel_model, bytes(flipped))
    other = skewed(PixelCNN, pixel_model.spec, scale=0.5, width=8, depth=1, first_kernel=3,
                   head=8)  # fmt: skip
    assert model_fingerprint(other) != model_fingerprint(pixel_model)
    with pytest.raises(DgmError, match="another model"):
        decompress(other, blob)
    made = MADE(DataSpec((1, 6, 6), "discrete", levels=4), MADE.Config(hidden=(8,)))
    with pytest.raises(DgmError, match="cannot drive an entropy coder"):
        compress(made, data)
    conditional = GatedPixelCNN(
        DataSpec((1, 6, 6), "discrete", levels=4, num_classes=2),
        GatedPixelCNN.Config(width=2, depth=1, conditional=True),
    )
    with pytest.raises(DgmError, match="unconditional"):
        compress(conditional, data)


@pytest.mark.slow  # ~10 s: trains a tiny run for 3 steps, then compresses through the CLI
def test_cli_round_trip_and_errors(tmp_path, capsys):
    rng = np.random.default_rng(0)
    train = (rng.random((64, 1, 4, 4)) < 0.3).astype(np.uint8)
    np.save(tmp_path / "train.npy", train)
    run = tmp_path / "run"
    args = ["train", "rnn", "--data", str(tmp_path / "train.npy"), "--out", str(run),
            "--steps", "3", "--no-progress", "--set", "width=8", "--set", "embed=4"]  # fmt: skip
    assert main(args) == 0
    test = train[:10]
    np.save(tmp_path / "in.npy", test)
    capsys.readouterr()
    assert main(["compress", str(run), str(tmp_path / "in.npy"), str(tmp_path / "x.bin")]) == 0
    assert "model NLL" in capsys.readouterr().err
    assert main(["decompress", str(run), str(tmp_path / "x.bin"), str(tmp_path / "r.npy")]) == 0
    assert np.array_equal(np.load(tmp_path / "r.npy"), test)
    # bad inputs: one sentence and exit code 2
    np.save(tmp_path / "float.npy", test.astype(np.float64) / 2)
    (tmp_path / "junk.bin").write_bytes(b"not a file of ours")
    for argv in (
        ["compress", str(run), str(tmp_path / "float.npy"), str(tmp_path / "y.bin")],
        ["decompress", str(run), str(tmp_path / "junk.bin"), str(tmp_path / "y.npy")],
        ["compress", str(run), str(tmp_path / "missing.npy"), str(tmp_path / "y.bin")],
    ):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("dgm: error:") and err.count("\n") == 1
