"""Checkpoints that survive crashes and never unpickle.

Layout of a run directory::

    DIR/config.yaml                 model, data, preprocessing and training options
    DIR/checkpoints/step-00001000/  model.safetensors, optim.safetensors, [ema.safetensors],
                                    state.json (step, RNG states), MANIFEST.json (SHA-256 of each file)
    DIR/checkpoints/best/           the weights with the best validation NLL so far
    DIR/checkpoints/latest          the name of the newest complete checkpoint

A checkpoint is written into a temporary folder, flushed to disk and renamed into place; only then
does ``latest`` (replaced atomically) point at it, and only then are older ones removed. A crash at
any moment leaves the previous checkpoint intact. Loading checks every file against the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from dgm.core.errors import CheckpointError
from dgm.core.io import atomic_write_text, fsync_dir, load_tensors, save_tensors

__all__ = [
    "flatten_optimizer_state",
    "unflatten_optimizer_state",
    "write_checkpoint",
    "read_checkpoint",
    "list_checkpoints",
    "latest_checkpoint",
]

MANIFEST = "MANIFEST.json"
# Seconds to pause inside every checkpoint write, so that tests can SIGKILL a process mid-write.
_FAULT_DELAY = float(os.environ.get("DGM_TEST_CHECKPOINT_DELAY", "0") or 0)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def flatten_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into tensors and JSON-safe metadata."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            name = f"{pid}.{key}"
            if isinstance(value, torch.Tensor):
                tensors[name] = value
            else:
                scalars[name] = value
    meta = {"param_groups": state["param_groups"], "scalars": scalars}
    return tensors, meta


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict[str, Any]:
    per: dict[int, dict[str, Any]] = {}
    for name, value in list(tensors.items()) + list(meta.get("scalars", {}).items()):
        pid, key = name.split(".", 1)
        per.setdefault(int(pid), {})[key] = value
    return {"state": per, "param_groups": meta["param_groups"]}


def write_checkpoint(
    root: Path,
    name: str,
    tensor_files: dict[str, dict[str, torch.Tensor]],
    state: dict[str, Any],
    *,
    update_latest: bool = True,
    keep: int = 2,
) -> Path:
    """Atomically write checkpoint ``root/name`` holding ``tensor_files`` and ``state.json``."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-{name}-"))
    try:
        for fname, tensors in tensor_files.items():
            save_tensors(tensors, tmp / f"{fname}.safetensors")
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
        manifest = {p.name: _sha256(p) for p in sorted(tmp.iterdir())}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        for p in tmp.iterdir():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        if _FAULT_DELAY:  # fault injection for the crash tests: widen the window of a write
            time.sleep(_FAULT_DELAY)
        final = root / name
        if final.exists():
            # Never destroy the old copy before the new one is in place: move it aside first.
            old = root / f".old-{name}-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if update_latest:
        atomic_write_text(root / "latest", name + "\n")
        for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
    return root / name


def list_checkpoints(root: Path) -> list[Path]:
    """Step checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))


def verify(path: Path) -> None:
    """Raise a CheckpointError unless every file of checkpoint ``path`` matches its manifest."""
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise CheckpointError(f"checkpoint {path} has no {MANIFEST}; it is incomplete")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"checkpoint {path} has a corrupt {MANIFEST}") from None
    for fname, digest in manifest.items():
        f = path / fname
        if not f.is_file():
            raise CheckpointError(f"checkpoint {path} is missing {fname}; it is incomplete")
        if _sha256(f) != digest:
            raise CheckpointError(
                f"checkpoint file {f} does not match its checksum; it is truncated or corrupt"
            )


def read_checkpoint(path: Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """Verify and read a checkpoint folder: ``({file stem: tensors}, state)``."""
    verify(path)
    tensors = {p.stem: load_tensors(p) for p in sorted(path.glob("*.safetensors"))}
    state = json.loads((path / "state.json").read_text())
    return tensors, state


def latest_checkpoint(root: Path) -> tuple[Path | None, list[str]]:
    """The newest checkpoint that verifies, and the reasons any newer ones were skipped."""
    candidates = list_checkpoints(root)
    pointer = root / "latest"
    if pointer.is_file():
        named = root / pointer.read_text(errors="replace").strip()
        if named in candidates:
            candidates.remove(named)
            candidates.append(named)
    skipped = []
    for cand in reversed(candidates):
        try:
            verify(cand)
            return cand, skipped
        except CheckpointError as e:
            skipped.append(str(e))
    return None, skipped
