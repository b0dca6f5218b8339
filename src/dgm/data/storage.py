"""Where data files live and whether they are the right ones: data directories and MD5 checks.

Data directory resolution, first match wins:

1. the explicit ``data_dir`` argument (``--data-dir`` on the command line);
2. the environment variable ``DGM_DATA``;
3. otherwise ``../shared/data`` relative to the current working directory.

Nothing is derived from where the ``dgm`` package itself is installed. When no directory holds the
files, the error names the files and the directory to put them in.

Inside a data directory a file may sit directly in it or in the dataset's subfolder
(``mnist/``, ``binarized_mnist/``). Nothing is ever downloaded.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from dgm.core.errors import DataError

__all__ = ["ENV_VAR", "check_md5", "data_dirs", "default_dir", "find_files", "md5sum"]

ENV_VAR = "DGM_DATA"


def default_dir() -> Path:
    """``../shared/data`` relative to the current working directory."""
    return Path.cwd().parent / "shared" / "data"


def data_dirs(data_dir: str | Path | None = None) -> tuple[list[Path], str]:
    """The directories to search, in order, and a phrase saying where they came from.

    One directory, the first of ``data_dir``, ``$DGM_DATA`` and :func:`default_dir`; an explicit
    ``data_dir`` or ``$DGM_DATA`` is used even if it does not exist, so that a typo is reported
    rather than silently replaced by the default.
    """
    if data_dir is not None:
        return [Path(data_dir).expanduser()], "--data-dir"
    env = os.environ.get(ENV_VAR)
    if env:
        return [Path(env).expanduser()], f"${ENV_VAR}"
    return [default_dir()], "the default location ../shared/data"


def find_files(
    filenames: Iterable[str], subfolder: str, what: str, data_dir: str | Path | None = None
) -> dict[str, Path]:
    """Locate each of ``filenames`` in ``DIR`` or ``DIR/subfolder`` for the first data directory
    that holds all of them; raise a one-sentence :class:`DataError` otherwise."""
    filenames = list(filenames)
    dirs, source = data_dirs(data_dir)
    searched: list[Path] = []
    best: dict[str, Path] = {}
    for base in dirs:
        found: dict[str, Path] = {}
        for folder in (base / subfolder, base):
            searched.append(folder)
            for f in filenames:
                if f not in found and (folder / f).is_file():
                    found[f] = folder / f
        if len(found) == len(filenames):
            return found
        if len(found) > len(best):
            best = found
    missing = [f for f in filenames if f not in best]
    target = dirs[0] / subfolder
    raise DataError(
        f"{what} needs {', '.join(missing)}, not found in {', '.join(map(str, searched))} "
        f"(searched via {source}); put the file{'s' if len(missing) > 1 else ''} in {target}/ "
        f"or pass --data-dir DIR / set {ENV_VAR}=DIR to a directory that holds them"
    )


@functools.lru_cache(maxsize=64)
def _md5_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def md5sum(path: str | Path) -> str:
    """Hex MD5 of a file, computed once per process for a given path, size and mtime."""
    p = Path(path).resolve()
    st = p.stat()
    return _md5_cached(str(p), st.st_size, st.st_mtime_ns)


def check_md5(path: str | Path, expected: str, found: str | None = None, part: str = "") -> None:
    """Raise a :class:`DataError` unless the MD5 of the file matches ``expected``.

    ``found`` and ``part`` check a part of the file instead, e.g. one array of an ``.npz``
    (``part="array 'train' of "``) whose MD5 the caller computed.
    """
    found = md5sum(path) if found is None else found
    if found != expected:
        raise DataError(
            f"{part}{path} has MD5 {found} but {expected} was expected: the file is corrupt or "
            "a different version; replace it with the original"
        )
