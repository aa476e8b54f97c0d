"""Per-item evaluation records: one JSON line per evaluated item, written the moment the item is done.

Why JSONL appended line by line: an evaluation of LLaDA-8B on GSM8K at 512 tokens takes hours; a crash (or a
pre-empted job, or ``kill -9``) must lose at most the batch that was in flight. Every rank appends to its OWN file
(``records-rank<r>.jsonl``) so that no two processes ever write the same file, and flushes after every line. A
process killed in the middle of ``write`` can leave one incomplete last line; :func:`repair_torn_tail` cuts it off
before the file is appended to again, and :func:`read_records` ignores such a line when it reads a file it does
not own. A malformed line anywhere else is corruption, not a crash artefact, and is reported with file and line.

An item is identified by :class:`ItemKey` = (task, gen_length, index), where ``index`` is the item's position in
the task's evaluated list (after d1's 256-item subset and ``limit``). Resume skips every key that is already in any
record file of the output directory, whatever the number of processes that wrote it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

RECORD_GLOB = "records-rank*.jsonl"


@dataclass(frozen=True, order=True)
class ItemKey:
    """Identity of one evaluated item; what resume and de-duplication compare."""

    task: str
    gen_length: int
    index: int

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> "ItemKey":
        """The key of a record dict (fields ``task``, ``gen_length``, ``index``)."""
        try:
            return cls(str(record["task"]), int(record["gen_length"]), int(record["index"]))
        except KeyError as err:
            raise ValueError(f"evaluation record lacks the key field {err.args[0]!r}: {dict(record)!r:.200}") from err


def record_path(output_dir: str | os.PathLike[str], rank: int) -> Path:
    """The record file that process ``rank`` appends to."""
    return Path(output_dir) / f"records-rank{rank:03d}.jsonl"


def record_files(output_dir: str | os.PathLike[str]) -> list[Path]:
    """All per-rank record files in ``output_dir`` (any world size), sorted by name."""
    return sorted(Path(output_dir).glob(RECORD_GLOB))


def repair_torn_tail(path: str | os.PathLike[str]) -> int:
    """Cut an incomplete last line (no trailing newline) off ``path``; return the number of bytes removed.

    Only the process that owns the file may call this, and only before it appends again. A last line that has
    its newline is complete by construction (the newline is written in the same ``write`` as the JSON text).
    """
    p = Path(path)
    if not p.exists():
        return 0
    data = p.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    keep = data.rfind(b"\n") + 1  # 0 when the only line is torn
    with open(p, "r+b") as fh:
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
    return len(data) - keep


def iter_file_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield the complete records of one file; a torn last line (no newline) is skipped with a warning."""
    p = Path(path)
    data = p.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    if tail:
        warnings.warn(f"{p}: dropping an incomplete last line ({len(tail)} bytes; the writer was killed)", stacklevel=2)
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as err:
            raise ValueError(f"{p}:{number}: corrupted evaluation record ({err.msg}); delete the line or the file") from err
        if not isinstance(obj, dict):
            raise ValueError(f"{p}:{number}: an evaluation record must be a JSON object, got {type(obj).__name__}")
        yield obj


def read_records(output_dir: str | os.PathLike[str]) -> dict[ItemKey, dict[str, Any]]:
    """All records of ``output_dir`` keyed by item; the first copy of a key wins (duplicates are warned about).

    Duplicates cannot arise from this package's writer (an item is written once, by the one rank that owns it);
    they appear only if files from different runs are mixed by hand, so they are reported, not fatal.
    """
    out: dict[ItemKey, dict[str, Any]] = {}
    duplicates = 0
    for path in record_files(output_dir):
        for rec in iter_file_records(path):
            key = ItemKey.of(rec)
            if key in out:
                duplicates += 1
                continue
            out[key] = rec
    if duplicates:
        warnings.warn(f"{output_dir}: {duplicates} duplicate evaluation record(s) ignored", stacklevel=2)
    return out


def jsonable(value: Any) -> Any:
    """A JSON-safe copy of ``value``: dataclasses/mappings/sequences recursively, non-finite floats as strings.

    Graders put arbitrary details in their results (d1's countdown evaluator yields ``inf`` for an expression that
    fails to evaluate); strict JSON has no ``inf``/``nan``, so they become ``"inf"``/``"nan"`` instead of making the
    writer fail halfway through an evaluation.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            return jsonable(value.item())
        except (TypeError, ValueError):
            pass
    if hasattr(value, "tolist") and callable(value.tolist):
        return jsonable(value.tolist())
    return str(value)


class RecordWriter:
    """Appends records to one per-rank JSONL file; each line is complete and flushed before ``write`` returns.

    ``fsync`` after each batch (``sync()``) makes finished work survive a machine crash as well, not only a killed
    process; it costs microseconds next to a diffusion forward pass.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_torn_tail(self.path)
        self._fh = open(self.path, "a", encoding="utf-8")

    def write(self, record: Mapping[str, Any]) -> None:
        ItemKey.of(record)  # validate before writing anything
        line = json.dumps(jsonable(record), ensure_ascii=False, allow_nan=False, sort_keys=False) + "\n"
        self._fh.write(line)
        self._fh.flush()

    def write_many(self, records: Iterable[Mapping[str, Any]]) -> None:
        for rec in records:
            self.write(rec)
        self.sync()

    def sync(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if not self._fh.closed:
            self.sync()
            self._fh.close()

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
