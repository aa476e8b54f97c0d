"""Reading task data: hub datasets (d1's ids) and local files, with errors that say what to set.

Local files are read with the standard library and turned into a :class:`datasets.Dataset` with ``from_list``:
CSV cells stay strings (a Sudoku puzzle ``0140...`` must not become the integer 140...), and nothing is written to
the datasets cache.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import datasets


class DataUnavailableError(RuntimeError):
    """A split cannot be loaded from the configured source (offline hub, missing file, no hub copy)."""


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a local .jsonl / .json / .csv / .parquet file as dicts (CSV values stay strings)."""
    p = Path(path)
    if not p.is_file():
        raise DataUnavailableError(f"data file not found: {p}")
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        with p.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise DataUnavailableError(f"{p}:{lineno}: not valid JSON ({err.msg})") from None
        return rows
    if suffix == ".json":
        data = json.loads(p.read_text(encoding="utf-8"))
        if isinstance(data, dict):  # {"data": [...]} or {"rows": [...]}
            for key in ("data", "rows", "examples"):
                if isinstance(data.get(key), list):
                    return list(data[key])
        if not isinstance(data, list):
            raise DataUnavailableError(f"{p}: expected a JSON list of rows (or JSON lines in a .jsonl file)")
        return list(data)
    if suffix == ".csv":
        with p.open(encoding="utf-8", newline="") as fh:
            return [dict(row) for row in csv.DictReader(fh)]
    if suffix == ".parquet":
        return datasets.Dataset.from_parquet(str(p)).to_list()
    raise DataUnavailableError(f"{p}: unsupported file type {suffix!r} (use .jsonl, .json, .csv or .parquet)")


def load_hub(hub_id: str, config: str | None, split: str, *, task: str) -> datasets.Dataset:
    """``datasets.load_dataset(hub_id, config, split=split)``, turning connection/offline failures into an error
    that names the task options that read local files instead."""
    try:
        return datasets.load_dataset(hub_id, config, split=split)
    except Exception as err:  # ConnectionError (offline), FileNotFoundError, DatasetNotFoundError, ...
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
        hint = " (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set)" if offline else ""
        name = f"{hub_id!r}" + (f" config {config!r}" if config else "")
        raise DataUnavailableError(
            f"task {task}: could not load hub dataset {name} split {split!r}{hint}: {type(err).__name__}: {err}. "
            f"To read local files set task.data_dir=<dir> (layout as in shared/data/README.md) or "
            f"task.{'train' if split == 'train' else 'test'}_file=<path>; or generate data with task.source=synthetic "
            "where the task has a generator."
        ) from err


def rows_to_dataset(rows: Sequence[Mapping[str, Any]], convert: Callable[[Mapping[str, Any], int], dict[str, Any]], where: str) -> datasets.Dataset:
    """Apply ``convert(row, index)`` to every raw row and build a Dataset; conversion errors name the row."""
    out = []
    for i, row in enumerate(rows):
        try:
            out.append(convert(row, i))
        except (KeyError, ValueError, TypeError) as err:
            detail = f"missing column {err.args[0]!r}" if isinstance(err, KeyError) else str(err)
            raise DataUnavailableError(f"{where}, row {i}: {detail}; row = {dict(row)!r:.300}") from None
    if not out:
        raise DataUnavailableError(f"{where}: no rows")
    return datasets.Dataset.from_list(out)
