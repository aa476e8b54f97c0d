"""The local metrics file (``metrics.jsonl``): one JSON object per logged step, written by the main process.

Plots and tests read this file, so it must describe ONE consistent history even across crashes: when a run
resumes from the checkpoint of step k, records with step > k (written after that checkpoint by the run that died)
are moved to ``<name>.discarded.jsonl`` and the file continues from k. Every line is flushed when written.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Mapping

import torch

from d1rl.atomic_io import atomic_write_text


def to_scalar(value: Any) -> Any:
    """Turn a 0-dim tensor / numpy scalar into a Python number; leave strings and numbers alone."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"metric tensors must have one element, got shape {tuple(value.shape)}")
        return value.detach().item()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf": valid JSON, still visible
    return value


class MetricsFile:
    """Append-only JSONL writer (main process only)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = None

    def truncate_after(self, step: int) -> int:
        """Keep records with ``step <= step``; move the others to ``*.discarded.jsonl``. Returns how many moved."""
        if not self.path.exists():
            return 0
        keep, drop = [], []
        for line in self.path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                rec_step = json.loads(line).get("step", 0)
            except json.JSONDecodeError:  # a half-written last line of a killed run
                drop.append(line)
                continue
            (keep if rec_step <= step else drop).append(line)
        if drop:
            discarded = self.path.with_name(self.path.stem + ".discarded.jsonl")
            with open(discarded, "a") as fh:
                fh.write("\n".join(drop) + "\n")
        atomic_write_text(self.path, "".join(line + "\n" for line in keep))
        return len(drop)

    def write(self, step: int, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """Append ``{"step": step, "time": unix_time, **metrics}`` and flush; returns the record."""
        record: dict[str, Any] = {"step": int(step), "time": round(time.time(), 3)}
        for key, value in metrics.items():
            record[key] = _json_safe(to_scalar(value))
        if self._fh is None:
            self._fh = open(self.path, "a")
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()
        return record

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a metrics file, in order."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def flatten_config(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dict/list config -> flat ``{"a.b": scalar}`` with only int/float/str/bool values (tracker-safe)."""
    out: dict[str, Any] = {}
    if isinstance(data, Mapping):
        for key, value in data.items():
            out.update(flatten_config(value, f"{prefix}{key}."))
    elif isinstance(data, (list, tuple)):
        out[prefix[:-1]] = json.dumps(list(data), default=str)
    elif data is None:
        out[prefix[:-1]] = "None"
    elif isinstance(data, (int, float, str, bool)):
        out[prefix[:-1]] = data
    else:
        out[prefix[:-1]] = str(data)
    return out
