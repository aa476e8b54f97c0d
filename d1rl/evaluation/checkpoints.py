"""Finding the saved checkpoints of a training run, for accuracy-vs-step curves (``d1rl eval ckpts=...``).

A checkpoint is a directory named ``checkpoint-<step>`` holding one of:

* a LoRA adapter (``adapter_config.json``), evaluated on top of the ``model=`` base;
* a full Hugging Face model (``config.json``);
* a d1rl training-engine checkpoint (``engine_state.json`` + ``model.safetensors`` with only the TRAINABLE
  tensors, see ``d1rl/training/checkpoint.py``): the model is rebuilt from the run's own model config (stored in
  ``engine_state.json``) and the saved tensors are loaded into it.

HF files may sit in the directory itself or in one sub-directory (``model/``, ``adapter/``, ...).

``ckpts`` may be a run directory (its ``checkpoints/`` folder, or the run directory itself, is searched), a single
checkpoint directory, or a glob pattern. Directories whose name does not end in ``-<digits>`` (for instance a
checkpoint being written under a temporary name) are ignored; a matching directory without model files is an
error, because silently skipping it would hide a hole in the curve.
"""

from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")
_MODEL_SUBDIRS = ("", "model", "adapter", "policy", "pretrained_model")
ENGINE_STATE = "engine_state.json"  # d1rl.training.checkpoint.ENGINE_STATE
ENGINE_WEIGHTS = "model.safetensors"
KINDS = ("adapter", "model", "engine")


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint: training step, its directory, where the loadable files are and what they are.

    ``kind``: "adapter" (PEFT adapter dir), "model" (HF model dir) or "engine" (d1rl engine checkpoint).
    """

    step: int
    path: Path
    model_path: Path
    kind: str

    @property
    def is_adapter(self) -> bool:
        return self.kind == "adapter"


def _model_location(ckpt_dir: Path) -> tuple[Path, str] | None:
    for sub in _MODEL_SUBDIRS:
        d = ckpt_dir / sub if sub else ckpt_dir
        if (d / "adapter_config.json").is_file():
            return d, "adapter"
        if (d / "config.json").is_file():
            return d, "model"
    if (ckpt_dir / ENGINE_STATE).is_file() and (ckpt_dir / ENGINE_WEIGHTS).is_file():
        return ckpt_dir, "engine"
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
            f"{p}: no adapter_config.json or config.json in it (or in {', '.join(s for s in _MODEL_SUBDIRS if s)}/), "
            f"and not a d1rl engine checkpoint ({ENGINE_STATE} + {ENGINE_WEIGHTS})"
        )
    return Checkpoint(step=int(m.group(1)), path=p, model_path=loc[0], kind=loc[1])


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


def engine_run_model_config(ckpt: Checkpoint) -> dict[str, Any] | None:
    """The ``model`` section of the training run's config stored in an engine checkpoint (None if absent)."""
    state = json.loads((ckpt.path / ENGINE_STATE).read_text())
    run = state.get("run_config") or {}
    model = run.get("model") if isinstance(run, dict) else None
    return model if isinstance(model, dict) else None


def load_engine_weights(model: Any, ckpt: Checkpoint) -> None:
    """Load an engine checkpoint's saved tensors into ``model`` (built like the training run's model).

    The engine saves only trainable parameters (+ persistent buffers): the LoRA matrices for LoRA runs, every
    weight for full fine-tuning. Every trainable parameter of ``model`` must be in the file and every tensor in
    the file must belong to ``model``; otherwise the model was built differently from the run's (other LoRA
    rank or targets, other base) and the error says so instead of evaluating a half-loaded model.
    """
    from safetensors.torch import load_file

    path = ckpt.path / ENGINE_WEIGHTS
    state = load_file(str(path))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(trainable - set(state))
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys or missing:
        raise ValueError(
            f"{path} does not fit the model built from the run's model config: tensors not in the model "
            f"{list(result.unexpected_keys)[:5]}, trainable parameters missing from the file {missing[:5]}"
        )
