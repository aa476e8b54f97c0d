"""``d1rl eval rescore``: re-grade d1-format generation files with the d1 and the robust graders.

Input: files written by d1's eval.py (or ours in d1 format): JSON with ``generations: [{question, generations,
ground_truth}, ...]``, one file per rank, named ``<setup>_<rank>_generations.json``; the ranks of a setup are merged
(as d1's parse_and_get_acc.py does). Output: one row per setup with ``correct / total`` and accuracy of the chosen
grader, the other grader beside it, and the average number of effective tokens.

For Sudoku, d1's numbers count CELLS (correct filled cells / empty cells), exactly like parse_and_get_acc.py; the
robust grader reports whole-puzzle accuracy and cell accuracy.

Effective tokens: d1 counts tiktoken ``cl100k_base`` tokens of the generation with ``<|endoftext|>`` removed. When
tiktoken (or its encoding file) is not available offline, a regex approximation of cl100k's pre-tokenizer is used
instead, and the output says so.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence

from d1rl.atomic_io import write_json_atomic
from d1rl.tasks.base import get_task
from d1rl.tasks.config import TaskConfig

_SETUP = re.compile(r"^(.+)_\d+_generations\.json$")
# Approximates cl100k_base's pre-tokenisation (words with a leading space, numbers in chunks of up to 3 digits,
# punctuation runs, newlines); a BPE token count is at least this.
_APPROX_TOKEN = re.compile(
    r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\w]?[^\W\d_]+|\d{1,3}| ?[^\s\w]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def setup_name(path: str | os.PathLike[str]) -> str | None:
    """d1's setup name: the file name minus ``_<rank>_generations.json`` (None if it does not match)."""
    match = _SETUP.match(Path(path).name)
    return match.group(1) if match else None


def infer_task(setup: str) -> str | None:
    """The task of a d1 setup name, by d1's substring rule (gsm, math, countdown, sudoku)."""
    for key, task in (("gsm", "gsm8k"), ("math", "math"), ("countdown", "countdown"), ("sudoku", "sudoku")):
        if key in setup:
            return task
    return None


def token_counter() -> tuple[Callable[[str], int], str]:
    """(count function, description). tiktoken cl100k_base if importable and loadable, else the approximation."""
    try:
        import tiktoken  # type: ignore[import-not-found]

        enc = tiktoken.get_encoding("cl100k_base")

        def count(text: str) -> int:
            return len(enc.encode(text.replace("<|endoftext|>", ""), disallowed_special=()))

        return count, "tiktoken cl100k_base (as d1)"
    except Exception as err:  # not installed, or the encoding file cannot be downloaded offline
        reason = f"{type(err).__name__}: {err}".splitlines()[0][:120]

        def approx(text: str) -> int:
            return len(_APPROX_TOKEN.findall(text.replace("<|endoftext|>", "")))

        return approx, f"APPROXIMATE (regex pre-token count; tiktoken cl100k_base unavailable: {reason})"


def _load_generations(path: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"d1rl eval rescore: cannot read {path}: {err}") from None
    items = data.get("generations") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise SystemExit(f"d1rl eval rescore: {path} has no 'generations' list (expected d1's eval.py output)")
    return items


def _write_json_atomic(path: str, payload: Any) -> None:
    write_json_atomic(path, payload, indent=2, default=str)


def rescore_files(
    files: Sequence[str],
    task_name: str | None,
    data_dir: str | None = None,
    count_tokens: Callable[[str], int] | None = None,
) -> dict[str, dict[str, Any]]:
    """Grade every item of every file with both graders; results per setup (ranks merged, sorted by file name).

    Per setup: ``task``, ``files``, ``total`` (items), ``d1`` and ``robust`` summaries (``correct``, ``total``,
    ``accuracy``; Sudoku adds ``cells_correct``/``cells_total``), ``tokens`` (sum) and ``items`` (per-item grades).
    With ``data_dir``, GSM8K items whose stored ground truth is null (d1 drops negative answers) get the true
    answer from the local test split for the robust grader.
    """
    counter = count_tokens or token_counter()[0]
    setups: dict[str, dict[str, Any]] = {}
    by_setup: dict[str, list[str]] = defaultdict(list)
    for path in sorted(files):
        name = setup_name(path)
        if name is None:
            raise SystemExit(f"d1rl eval rescore: {path}: name must end in _<rank>_generations.json (d1's eval.py naming)")
        by_setup[name].append(path)
    truth_by_question: dict[str, str] = {}
    for name, paths in sorted(by_setup.items()):
        tname = task_name or infer_task(name)
        if tname is None:
            raise SystemExit(f"d1rl eval rescore: cannot tell the task of {name!r}; pass --task")
        task = get_task(tname, TaskConfig(name=tname))
        if tname == "gsm8k" and data_dir and not truth_by_question:
            test = get_task("gsm8k", TaskConfig(name="gsm8k", data_dir=data_dir)).load_split("test")
            truth_by_question = dict(zip(test["question"], test["answer"]))
        summary = {g: {"correct": 0, "total": 0, "cells_correct": 0, "cells_total": 0} for g in ("d1", "robust")}
        items_out, tokens = [], 0
        for path in paths:
            for k, item in enumerate(_load_generations(path)):
                text = item.get("generations", "") or ""
                try:
                    row = task.row_from_d1_record(item)
                except ValueError as err:
                    raise SystemExit(f"d1rl eval rescore: {path} item {k}: {err}") from None
                robust_row = row
                if tname == "gsm8k" and row.get("answer") is None and row["question"] in truth_by_question:
                    robust_row = {**row, "answer": truth_by_question[row["question"]]}
                grades = {"d1": task.grade(text, row, "d1"), "robust": task.grade(text, robust_row, "robust")}
                n_tok = counter(text)
                tokens += n_tok
                for g, grade in grades.items():
                    s = summary[g]
                    s["total"] += 1
                    s["correct"] += int(grade.correct)
                    if "empty_cells" in grade.details:
                        s["cells_correct"] += int(grade.details["correct_cells"])
                        s["cells_total"] += int(grade.details["empty_cells"])
                items_out.append({"file": Path(path).name, "index": k, "question": item.get("question"), "tokens": n_tok,
                                  "grades": {g: gr.to_dict() for g, gr in grades.items()}})
        total = len(items_out)
        for s in summary.values():
            s["accuracy"] = s["correct"] / s["total"] if s["total"] else 0.0
            if s["cells_total"]:
                s["cell_accuracy"] = s["cells_correct"] / s["cells_total"]
            else:
                del s["cells_correct"], s["cells_total"]
        setups[name] = {"task": tname, "files": [Path(p).name for p in paths], "total": total, "tokens": tokens,
                        "d1": summary["d1"], "robust": summary["robust"], "items": items_out}
    return setups


def _d1_numbers(result: dict[str, Any]) -> tuple[int, int, float, float]:
    """d1's (correct, processed, accuracy %, avg tokens): for Sudoku cells and tokens × 8 over cells, like d1."""
    s = result["d1"]
    if result["task"] == "sudoku":
        correct, processed = s.get("cells_correct", 0), s.get("cells_total", 0)
        avg_tokens = result["tokens"] * 8 / processed if processed else 0.0
    else:
        correct, processed = s["correct"], s["total"]
        avg_tokens = result["tokens"] / processed if processed else 0.0
    acc = 100.0 * correct / processed if processed else 0.0
    return correct, processed, acc, avg_tokens


def format_table(setups: dict[str, dict[str, Any]], grader: str, token_note: str) -> str:
    """The printed report: chosen grader first, the other beside it."""
    other = "robust" if grader == "d1" else "d1"
    lines = [f"grader: {grader} (beside it: {other});  effective tokens: {token_note}"]
    head = f"{'Setup (task_model_seqlen_diffusteps)':<44} {grader + ' correct/total':>22} {'acc %':>8} {other + ' correct/total':>22} {'acc %':>8} {'Avg Eff. Tokens':>16}"
    lines += [head, "-" * len(head)]
    notes = []
    for name, res in sorted(setups.items()):
        cols = {}
        for g in (grader, other):
            if g == "d1":
                c, n, acc, _ = _d1_numbers(res)
            else:
                s = res["robust"]
                c, n = s["correct"], s["total"]
                acc = 100.0 * c / n if n else 0.0
            cols[g] = (f"{c} / {n}", acc)
        avg_tokens = _d1_numbers(res)[3]
        lines.append(f"{name:<44} {cols[grader][0]:>22} {cols[grader][1]:>8.2f} {cols[other][0]:>22} {cols[other][1]:>8.2f} {avg_tokens:>16.2f}")
        if res["task"] == "sudoku":
            r = res["robust"]
            notes.append(
                f"  {name}: d1 counts cells; robust: {r['correct']} / {r['total']} puzzles solved "
                f"({100.0 * r['accuracy']:.2f}%), cell accuracy {100.0 * r.get('cell_accuracy', 0.0):.2f}%"
            )
    lines.append("=" * len(head))
    if notes:
        lines += ["Sudoku:"] + notes
    return "\n".join(lines)


def rescore_main(argv: Sequence[str]) -> int:
    """``d1rl eval rescore [--task T] [--grader d1|robust] [--data-dir D] [--output F] FILES...``"""
    parser = argparse.ArgumentParser(
        prog="d1rl eval rescore",
        description="Re-grade d1-format generation files (<setup>_<rank>_generations.json; ranks merged) with d1's "
        "parser and the robust grader, like d1's parse_and_get_acc.py.",
    )
    parser.add_argument("files", nargs="+", help="generation files or directories (directories: every *_generations.json inside)")
    parser.add_argument("--task", choices=["gsm8k", "math", "countdown", "sudoku", "synthetic"], default=None,
                        help="task of all files (default: from each setup name, as d1 does)")
    parser.add_argument("--grader", choices=["d1", "robust"], default="d1", help="grader shown first (default d1)")
    parser.add_argument("--data-dir", default=None, help="local data (shared/data layout) to recover GSM8K ground truths d1 stored as null")
    parser.add_argument("--output", default=None, help="write a JSON report with per-item grades here")
    args = parser.parse_args(list(argv))

    files: list[str] = []
    for entry in args.files:
        if os.path.isdir(entry):
            files += sorted(glob.glob(os.path.join(entry, "*_generations.json")))
        elif os.path.isfile(entry):
            files.append(entry)
        else:
            print(f"d1rl eval rescore: no such file or directory: {entry}", file=sys.stderr)
            return 2
    if not files:
        print("d1rl eval rescore: no *_generations.json files found", file=sys.stderr)
        return 2
    counter, note = token_counter()
    setups = rescore_files(files, args.task, args.data_dir, counter)
    print(format_table(setups, args.grader, note))
    if args.output:
        report = {"grader": args.grader, "token_counter": note,
                  "setups": {k: {**v, "d1_numbers": dict(zip(("correct", "processed", "accuracy", "avg_tokens"), _d1_numbers(v)))}
                             for k, v in setups.items()}}
        _write_json_atomic(args.output, report)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(rescore_main(sys.argv[1:]))
