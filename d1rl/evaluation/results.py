"""From per-item records to the numbers people report: accuracy per task x generation length x grader.

Accuracies are stored as fractions in ``results.json`` and printed as percentages. Two graders are scored side by
side: ``d1`` (d1's parsers with their quirks, so numbers compare with the paper) and ``robust`` (our corrected
grader). For Sudoku d1 reports CELL accuracy (correct filled cells / empty cells, d1-reference §5.2 and §8 item 16);
we report it as d1 does and add puzzle accuracy (all cells right), which is what "solved" means.

``results.json`` is replaced atomically (temporary file in the same directory + ``os.replace``), so a reader never
sees half a file and a crash never destroys the previous version.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from d1rl import atomic_io
from d1rl.evaluation.records import ItemKey, jsonable

RESULTS_SCHEMA_VERSION = 1

# Grade-detail names that carry Sudoku cell counts (numerator, denominator).
_CELL_FIELDS = (("correct_cells", "empty_cells"), ("cells_correct", "cells_empty"), ("correct_cells", "total_cells"))


def _cell_counts(grade: Mapping[str, Any]) -> tuple[float, float] | None:
    details = grade.get("details") or {}
    if not isinstance(details, Mapping):
        return None
    for num, den in _CELL_FIELDS:
        if num in details and den in details:
            try:
                return float(details[num]), float(details[den])
            except (TypeError, ValueError):
                return None
    return None


def summarize_group(records: Sequence[Mapping[str, Any]], graders: Sequence[str]) -> dict[str, Any]:
    """Metrics of one (task, gen_length) group of records.

    Per grader: ``accuracy`` (mean of ``correct``), ``correct`` (count), ``mean_score``; when the grades carry cell
    counts (Sudoku): ``cell_accuracy`` (sum of correct cells / sum of empty cells, d1's metric) and
    ``puzzle_accuracy`` (= accuracy), and ``primary`` names the metric d1 reports for the task.
    """
    n = len(records)
    if n == 0:
        raise ValueError("summarize_group needs at least one record")
    out: dict[str, Any] = {
        "n": n,
        "avg_effective_tokens": sum(float(r.get("effective_tokens", 0)) for r in records) / n,
        "avg_nfe": sum(float(r.get("nfe", 0)) for r in records) / n,
        "seconds_per_item": sum(float(r.get("seconds", 0.0)) for r in records) / n,
        "metrics": {},
    }
    for g in graders:
        grades = []
        for r in records:
            grade = (r.get("grades") or {}).get(g)
            if grade is None:
                raise ValueError(
                    f"record task={r.get('task')} gen_length={r.get('gen_length')} index={r.get('index')} has no "
                    f"grade from grader {g!r}; re-run without resume or with graders matching the records"
                )
            grades.append(grade)
        correct = sum(1 for x in grades if bool(x.get("correct")))
        m: dict[str, Any] = {
            "accuracy": correct / n,
            "correct": correct,
            "mean_score": sum(float(x.get("score", float(bool(x.get("correct"))))) for x in grades) / n,
            "primary": "accuracy",
        }
        cells = [_cell_counts(x) for x in grades]
        if all(c is not None for c in cells):
            num = sum(c[0] for c in cells)  # type: ignore[index]
            den = sum(c[1] for c in cells)  # type: ignore[index]
            m["cell_accuracy"] = num / den if den else 0.0
            m["correct_cells"] = num
            m["empty_cells"] = den
            m["puzzle_accuracy"] = m["accuracy"]
            m["primary"] = "cell_accuracy"
        out["metrics"][g] = m
    return out


def aggregate(records: Mapping[ItemKey, Mapping[str, Any]] | Iterable[Mapping[str, Any]], graders: Sequence[str]) -> list[dict[str, Any]]:
    """One summary per (task, gen_length), sorted by task then length."""
    recs = list(records.values()) if isinstance(records, Mapping) else list(records)
    groups: dict[tuple[str, int], list[Mapping[str, Any]]] = defaultdict(list)
    for r in recs:
        k = ItemKey.of(r)
        groups[(k.task, k.gen_length)].append(r)
    rows = []
    for (task, length), group in sorted(groups.items()):
        rows.append({"task": task, "gen_length": length, **summarize_group(group, graders)})
    return rows


def primary_value(row: Mapping[str, Any], grader: str) -> float:
    """The metric d1 reports for this row's task under ``grader`` (cell accuracy for Sudoku, else accuracy)."""
    m = row["metrics"][grader]
    return float(m[m.get("primary", "accuracy")])


def format_table(rows: Sequence[Mapping[str, Any]], graders: Sequence[str]) -> str:
    """A plain-text table, generation lengths as columns (like d1's Table 1), accuracies in percent."""
    lengths = sorted({int(r["gen_length"]) for r in rows})
    by_task: dict[str, dict[int, Mapping[str, Any]]] = defaultdict(dict)
    for r in rows:
        by_task[str(r["task"])][int(r["gen_length"])] = r
    lines: list[tuple[str, str, list[str]]] = []
    for task in sorted(by_task):
        cells = by_task[task]
        some = next(iter(cells.values()))
        for g in graders:
            names = ["accuracy"]
            if "cell_accuracy" in some["metrics"][g]:
                names = ["cell_accuracy", "puzzle_accuracy"]
            for name in names:
                label = f"{g} {name.replace('_', ' ')} %"
                vals = [f"{100 * cells[L]['metrics'][g][name]:.1f}" if L in cells else "-" for L in lengths]
                lines.append((task, label, vals))
        lines.append((task, "n", [str(cells[L]["n"]) if L in cells else "-" for L in lengths]))
        lines.append((task, "avg eff. tokens", [f"{cells[L]['avg_effective_tokens']:.1f}" if L in cells else "-" for L in lengths]))
    head = ("task", "metric", [str(L) for L in lengths])
    w0 = max(len(x[0]) for x in [head, *lines])
    w1 = max(len(x[1]) for x in [head, *lines])
    wc = [max(len(x[2][i]) for x in [head, *lines]) for i in range(len(lengths))]

    def fmt(t: str, m: str, vals: list[str]) -> str:
        return "  ".join([t.ljust(w0), m.ljust(w1), *[v.rjust(w) for v, w in zip(vals, wc)]]).rstrip()

    out = [fmt(*head), fmt("-" * w0, "-" * w1, ["-" * w for w in wc])]
    out += [fmt(*x) for x in lines]
    return "\n".join(out)


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` (made JSON-safe by :func:`jsonable`; NaN refused) as indented JSON, atomically."""
    return atomic_io.write_json_atomic(path, jsonable(obj), indent=2, ensure_ascii=False, allow_nan=False)
