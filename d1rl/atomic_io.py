"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half of one.

Every result, record and plot file d1rl writes goes through here. The new content is written to a unique
temporary name in the target's own folder (same filesystem, so ``os.replace`` is atomic), flushed to disk, and
renamed over the target; on any error the temporary file is removed and the old target is left untouched.
Checkpoint folders have their own two-phase rename (``d1rl.training.checkpoint``).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping


def _temporary_name(target: Path) -> Path:
    # Unique per process and call; the target's suffix is kept last so writers that infer the format from the
    # name (matplotlib's savefig) still see ".png". Plain open() later, so the file gets the usual permissions.
    return target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{target.suffix}")


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` to create the new content at a temporary path, then rename it onto ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(target)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:  # durable before it becomes visible under the real name
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Replace ``path`` with ``text`` (UTF-8) atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | os.PathLike[str], obj: Any, **dump_kwargs: Any) -> Path:
    """Replace ``path`` with ``obj`` as JSON (``json.dumps(obj, **dump_kwargs)`` + a final newline) atomically."""
    return atomic_write_text(path, json.dumps(obj, **dump_kwargs) + "\n")


def write_jsonl_atomic(path: str | os.PathLike[str], records: Iterable[Mapping[str, Any]]) -> Path:
    """Replace ``path`` with one JSON object per line (non-ASCII kept as is) atomically."""
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
