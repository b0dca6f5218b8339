"""Safe files: atomic writes that follow the umask, and safetensors I/O (nothing is unpickled).

Every file dgm writes appears whole or not at all: it is written to a temporary file in the same
folder, flushed, and renamed over the target. A crash leaves the old file (or none), never half of
a new one.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
>>> atomic_write_text(p, "hello")
>>> p.read_text()
'hello'
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dgm.core.errors import CheckpointError

__all__ = [
    "atomic_path",
    "atomic_write_text",
    "atomic_write_bytes",
    "fsync_dir",
    "save_tensors",
    "load_tensors",
]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries to disk (so a rename inside it survives a power cut)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    Whatever writes to the yielded path (``np.save``, ``fig.savefig``, ``save_file``) makes
    ``path`` appear atomically. ``suffix`` keeps an extension that the writer insists on (``.npy``,
    ``.png``). On an error the temporary file is removed and ``path`` is left as it was. The file
    gets the permissions the umask allows (``mkstemp`` alone would make it 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | Path, blob: bytes) -> None:
    """Write ``blob`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(blob)


def save_tensors(
    tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict | None = None
) -> None:
    """Save a flat dict of tensors in safetensors, atomically (contiguous CPU copies; tensors that
    share storage are fine)."""
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata=meta)


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file; a corrupt or foreign file is one :class:`CheckpointError`."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"cannot read {path}: the file is corrupt or not safetensors ({e})"
        ) from None
