r"""Likelihood is compression: lossless coding of discrete data with an autoregressive model.

An autoregressive model gives, for each dimension ``d`` in raster order, the conditional
``p(x_d | x_{<d})``. An entropy coder driven by these conditionals stores ``x`` in about
``-log2 p(x)`` bits (Shannon 1948; MacKay, "Information Theory, Inference, and Learning
Algorithms", ch. 6), so the model's NLL in bits *is* the compressed size, up to the coder's
overhead of a few bits per file and the quantization of the probabilities.

The coder is the range coder of ``constriction`` (Bamler, "Understanding Entropy Coding With
Asymmetric Numeral Systems (ANS): a Statistician's Perspective", 2022; the library quantizes the
float64 probabilities into an exactly invertible fixed-point model and guarantees every symbol a
nonzero probability). Encoder and decoder compute the conditionals with the *same* one-dimension-
at-a-time loop (``autoregress`` of :class:`~dgm.core.protocols.FastAutoregressive`, fast decoder, same batches of ``chunk``
examples), the encoder teacher-forced with the data and the decoder with what it has decoded, so
both see bit-identical probabilities. (Decode on the machine type and torch version that encoded:
another BLAS may round the model's arithmetic differently, which the coder cannot tolerate.)

File layout: ``MAGIC``, a 4-byte little-endian header length, a JSON header (shape, dtype, count,
levels, chunk, model fingerprint, number of 32-bit words, CRC-32 of the payload), then the
payload of little-endian ``uint32`` words. A file made by another model (fingerprint), a changed
header or payload (CRC), or a truncated file is refused with one sentence.

>>> import torch, numpy as np
>>> from dgm.core.spec import DataSpec
>>> from dgm.models.autoregressive import RNN
>>> _ = torch.manual_seed(0)
>>> model = RNN(DataSpec((5,), "discrete", levels=3), RNN.Config(embed=4, hidden=8)).eval()
>>> data = np.array([[0, 1, 2, 1, 0], [2, 2, 2, 0, 1]], dtype=np.uint8)
>>> blob = compress(model, data)
>>> bool((decompress(model, blob) == data).all())
True
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import zlib
from typing import Any

import numpy as np
import torch

from dgm.core.config import config_to_dict
from dgm.core.errors import DataError, DgmError
from dgm.core.protocols import FastAutoregressive

__all__ = [
    "MAGIC",
    "check_coder_model",
    "compress",
    "decompress",
    "model_fingerprint",
    "nll_bits",
    "payload_bytes",
]

MAGIC = b"DGMAC1\n"
_DTYPES = ("bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "int64", "uint64",
           "float16", "float32", "float64")  # fmt: skip


def _constriction() -> Any:
    try:
        import constriction
    except ImportError:  # pragma: no cover - a declared dependency
        raise DgmError(
            "compression needs the package constriction (pip install constriction)"
        ) from None
    return constriction


def check_coder_model(model: Any) -> None:
    """Raise one sentence unless ``model`` can drive an entropy coder (autoregressive, discrete,
    unconditional)."""
    if model.spec.kind != "discrete" or not isinstance(model, FastAutoregressive):
        raise DgmError(
            f"model {model.name!r} cannot drive an entropy coder; compression needs an "
            "autoregressive model of discrete data (pixelcnn, gated-pixelcnn, transformer, rnn)"
        )
    if model.conditional:
        raise DgmError(
            f"model {model.name!r} was trained with class labels (conditional=True); "
            "compression needs an unconditional model"
        )


def model_fingerprint(model: Any) -> str:
    """SHA-256 (hex, 16 characters) of the model's name, data spec, hyperparameters and weights."""
    h = hashlib.sha256()
    meta = {
        "name": model.name,
        "spec": model.spec.to_dict(),
        "config": config_to_dict(model.config),
    }
    h.update(json.dumps(meta, sort_keys=True).encode())
    for key, t in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(t.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _as_symbols(model: Any, data: np.ndarray) -> np.ndarray:
    """Checked integer symbols ``(N, D)`` from raw data ``(N, *event_shape)`` or ``(N, D)``."""
    if not isinstance(data, np.ndarray) or data.dtype.name not in _DTYPES:
        kind = data.dtype if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"data to compress must be a numeric numpy array, not {kind}")
    levels, d = model.spec.levels, model.num_dims
    if data.ndim < 2 or data.shape[0] == 0 or math.prod(data.shape[1:]) != d:
        want = ", ".join(map(str, model.event_shape))
        raise DataError(
            f"data has shape {data.shape}, but model {model.name!r} codes (N, {want}) or (N, {d}) "
            "with N >= 1"
        )
    flat = data.reshape(data.shape[0], d)
    if data.dtype.kind == "f":
        if not np.isfinite(flat).all() or (flat != np.round(flat)).any():
            raise DataError(
                "data holds non-integer or non-finite values; compression takes raw discrete data "
                f"(integers 0..{levels - 1}), not preprocessed or scaled data"
            )
    if (flat < 0).any() or (flat > levels - 1).any():
        raise DataError(f"data must hold integers 0..{levels - 1} for model {model.name!r}")
    return flat.astype(np.int64)


def nll_bits(model: Any, data: np.ndarray, batch_size: int = 500) -> float:
    """The model's negative log-likelihood of ``data`` in bits, ``-sum_n log2 p(x_n)``."""
    symbols = _as_symbols(model, data)
    total = 0.0
    with model.inference():
        for start in range(0, len(symbols), batch_size):
            x = torch.from_numpy(symbols[start : start + batch_size]).to(model.device, model.dtype)
            lp = model.log_prob(x.view(len(x), *model.event_shape))  # (b,)
            total -= float(lp.double().sum()) / math.log(2.0)
    return total


def compress(model: Any, data: np.ndarray, *, chunk: int = 256) -> bytes:
    """Encode ``data`` (raw integers, ``(N, *event_shape)``) into bytes with ``model``."""
    check_coder_model(model)
    symbols = _as_symbols(model, data)
    c = _constriction()
    family = c.stream.model.Categorical(perfect=False)
    encoder = c.stream.queue.RangeEncoder()
    for start in range(0, len(symbols), chunk):
        x = torch.from_numpy(symbols[start : start + chunk]).to(model.device)  # (n, D)

        def encode(d: int, probs: torch.Tensor, x: torch.Tensor = x) -> torch.Tensor:
            values = x[:, d]  # (n,)
            encoder.encode(values.cpu().numpy().astype(np.int32), family, probs.cpu().numpy())
            return values

        model.autoregress(len(x), encode, sampler="fast")
    words = np.asarray(encoder.get_compressed(), dtype="<u4")
    payload = words.tobytes()
    header = {
        "shape": list(data.shape),
        "dtype": data.dtype.name,
        "count": int(data.shape[0]),
        "levels": int(model.spec.levels),
        "chunk": int(chunk),
        "model": model.name,
        "fingerprint": model_fingerprint(model),
        "words": int(words.size),
        "crc32": zlib.crc32(payload),
    }
    head = json.dumps(header, sort_keys=True).encode()
    return MAGIC + struct.pack("<I", len(head)) + head + payload


def payload_bytes(blob: bytes) -> int:
    """Size of the coded data in a file made by :func:`compress`, without magic and header."""
    _, payload = _read_header(blob)
    return len(payload)


def _read_header(blob: bytes) -> tuple[dict[str, Any], bytes]:
    bad = "is not a dgm compressed file or is corrupt"
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 4:
        raise DataError(f"the input {bad} (wrong magic bytes)")
    (size,) = struct.unpack("<I", blob[len(MAGIC) : len(MAGIC) + 4])
    start = len(MAGIC) + 4
    try:
        header = json.loads(blob[start : start + size].decode())
        keys = ("shape", "dtype", "count", "levels", "chunk", "fingerprint", "words", "crc32")
        if not isinstance(header, dict) or any(k not in header for k in keys):
            raise ValueError("missing keys")
        shape = [int(s) for s in header["shape"]]
        if header["dtype"] not in _DTYPES or int(header["chunk"]) < 1 or not shape:
            raise ValueError("bad values")
    except (UnicodeDecodeError, ValueError, TypeError):
        raise DataError(f"the input {bad} (unreadable header)") from None
    payload = blob[start + size :]
    if len(payload) != 4 * int(header["words"]) or zlib.crc32(payload) != header["crc32"]:
        raise DataError(f"the input {bad} (the payload is truncated or altered)")
    return header, payload


def decompress(model: Any, blob: bytes) -> np.ndarray:
    """Decode bytes made by :func:`compress` with the same model; the original array."""
    check_coder_model(model)
    header, payload = _read_header(blob)
    if header["fingerprint"] != model_fingerprint(model):
        raise DgmError(
            f"this file was compressed with another model ({header.get('model', '?')} "
            f"{header['fingerprint']}); decompress it with the run that compressed it"
        )
    shape, count, chunk = header["shape"], int(header["count"]), int(header["chunk"])
    if shape[0] != count or math.prod(shape[1:]) != model.num_dims:
        raise DataError("the input is corrupt (its shape does not fit the model)")
    c = _constriction()
    family = c.stream.model.Categorical(perfect=False)
    decoder = c.stream.queue.RangeDecoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
    parts = []
    for start in range(0, count, chunk):
        n = min(chunk, count - start)

        def decode(d: int, probs: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(decoder.decode(family, probs.cpu().numpy()).astype(np.int64))

        parts.append(model.autoregress(n, decode, sampler="fast").cpu().numpy())
    if not decoder.maybe_exhausted():
        raise DataError("the input is corrupt (data left over after decoding)")
    out = np.concatenate(parts)
    return out.astype(np.dtype(header["dtype"])).reshape(shape)
