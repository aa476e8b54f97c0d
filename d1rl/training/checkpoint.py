"""Checkpoint folders: atomic publication, discovery, rotation, and the RNG state of a process.

Layout of ``<output_dir>/checkpoints/``::

    checkpoint-000100/          a complete checkpoint (published by one atomic rename)
      engine_state.json         global step, config fingerprint, world size, format version
      model.safetensors         the trainable parameters (+ persistent buffers) of the unwrapped model
      optimizer.pt  scheduler.pt  [scaler.pt]
      rng_state_rank{r}.pt      python / numpy / torch / cuda RNG states of rank r
      trainer_state_rank{r}.pt  the trainer's own state (data position, generators, ...) of rank r
    .tmp-checkpoint-000100/     being written; never read, removed on the next start

Why a rename: a run killed (SIGKILL, pre-emption) while writing leaves only a ``.tmp-*`` folder, so "the newest
checkpoint" is always a complete one. Only ``checkpoint-<digits>`` folders that contain ``engine_state.json`` count.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_PREFIX = "checkpoint-"
TMP_PREFIX = ".tmp-"
ENGINE_STATE = "engine_state.json"
_NAME_RE = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")


def checkpoint_name(step: int) -> str:
    """Folder name of the checkpoint written after optimizer step ``step`` (zero-padded so names sort)."""
    return f"{CHECKPOINT_PREFIX}{step:06d}"


def list_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root`` as ``(step, path)``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _NAME_RE.match(child.name)
        if match and child.is_dir() and (child / ENGINE_STATE).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint under ``root``, or None."""
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def remove_partial(root: str | Path) -> list[Path]:
    """Delete leftover ``.tmp-*`` folders of an interrupted save; returns what was removed."""
    root = Path(root)
    removed = []
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith(TMP_PREFIX) and child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child)
    return removed


def tmp_dir_for(root: str | Path, step: int) -> Path:
    """The staging folder in which the checkpoint of ``step`` is written before publication."""
    return Path(root) / f"{TMP_PREFIX}{checkpoint_name(step)}"


def publish(tmp: Path, final: Path) -> None:
    """Atomically move a fully written staging folder to its final name (replacing an older copy of that step)."""
    _fsync_tree(tmp)
    if final.exists():
        # Same step written again (e.g. a resumed run re-saving): move the old one aside first, so that at
        # every instant one complete copy exists under some name.
        old = final.with_name(f"{TMP_PREFIX}old-{final.name}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(final.parent)


def rotate(root: str | Path, keep: int) -> list[Path]:
    """Keep the ``keep`` newest complete checkpoints (0 = keep all); returns the removed folders."""
    if keep <= 0:
        return []
    found = list_checkpoints(root)
    removed = []
    for _, path in found[: max(0, len(found) - keep)]:
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON through a temporary file + rename, so readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------------------------
# RNG state of one process. Stored with tensors and plain lists only, so it loads with torch.load(weights_only=True).


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy, torch-CPU and (if present) every CUDA device's RNG state of this process."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state(
        (nps["name"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"], nps["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
