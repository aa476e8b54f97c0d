"""Finding the saved checkpoints of a training run, for accuracy-vs-step curves (``d1rl eval ckpts=...``).

A checkpoint is a directory named ``checkpoint-<step>`` holding either a LoRA adapter (``adapter_config.json``,
evaluated on top of the ``model=`` base) or a full Hugging Face model (``config.json``). The model files may sit
in the directory itself or in one sub-directory (the engine may keep optimizer state beside the model).

``ckpts`` may be a run directory (its ``checkpoints/`` folder, or the run directory itself, is searched), a single
checkpoint directory, or a glob pattern. Directories whose name does not end in ``-<digits>`` (for instance a
checkpoint being written under a temporary name) are ignored; a matching directory without model files is an
error, because silently skipping it would hide a hole in the curve.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path

_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")
_MODEL_SUBDIRS = ("", "model", "adapter", "policy", "pretrained_model")


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint: training step, its directory, and where/what the loadable model is."""

    step: int
    path: Path
    model_path: Path
    is_adapter: bool


def _model_location(ckpt_dir: Path) -> tuple[Path, bool] | None:
    for sub in _MODEL_SUBDIRS:
        d = ckpt_dir / sub if sub else ckpt_dir
        if (d / "adapter_config.json").is_file():
            return d, True
        if (d / "config.json").is_file():
            return d, False
    return None


def describe_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """A :class:`Checkpoint` for one ``checkpoint-<step>`` directory; clear error if it holds no model."""
    p = Path(path)
    m = _CKPT_RE.match(p.name)
    if not m:
        raise ValueError(f"{p}: a checkpoint directory must be named checkpoint-<step>")
    loc = _model_location(p)
    if loc is None:
        raise FileNotFoundError(
            f"{p}: no adapter_config.json or config.json in it (or in {', '.join(s for s in _MODEL_SUBDIRS if s)}/)"
        )
    return Checkpoint(step=int(m.group(1)), path=p, model_path=loc[0], is_adapter=loc[1])


def find_checkpoints(spec: str | os.PathLike[str]) -> list[Checkpoint]:
    """Checkpoints named by ``spec`` (run dir, checkpoint dir, or glob), sorted by step."""
    s = str(spec)
    p = Path(s)
    if glob.has_magic(s):
        candidates = [Path(x) for x in glob.glob(s)]
    elif _CKPT_RE.match(p.name) and p.is_dir():
        candidates = [p]
    elif p.is_dir():
        base = p / "checkpoints" if (p / "checkpoints").is_dir() else p
        candidates = list(base.iterdir())
    else:
        raise FileNotFoundError(f"ckpts={s!r}: not a directory and not a glob pattern")
    found = [describe_checkpoint(c) for c in candidates if c.is_dir() and _CKPT_RE.match(c.name)]
    if not found:
        raise FileNotFoundError(f"ckpts={s!r}: no checkpoint-<step> directories found")
    found.sort(key=lambda c: (c.step, str(c.path)))
    steps = [c.step for c in found]
    if len(set(steps)) != len(steps):
        raise ValueError(f"ckpts={s!r}: several checkpoints share a step: {[str(c.path) for c in found]}")
    return found
