"""4x4 Sudoku (d1-reference §2.9, §3, §5.2, §7).

Data: d1's CSVs with columns ``Puzzle,Solution`` (16-char strings, "0" = empty): the test file (500 puzzles, 8 blanks
each) is in shared/data; d1's training CSV (4x4_sudoku_unique_puzzles.csv) is not published on the hub, so training
data comes from a local file or the seeded generator (unique solution, chosen number of blanks).

Columns: ``puzzle``, ``solution``, ``question`` = "Solve the following Sudoku puzzle: <puzzle>\\n", ``answer`` = solution.
"""

from __future__ import annotations

import functools
import itertools
import random
import re
from typing import Any, Mapping, Sequence

import datasets
import numpy as np

from d1rl.tasks.base import Grade, Task, register_task
from d1rl.tasks.parsing import clean_special_tokens, d1_last_answer_block, last_answer_block
from d1rl.tasks.prompts import SUDOKU_SYSTEM_PROMPT, user_turn
from d1rl.tasks.rewards import RewardFn, completion_texts

# d1's evaluation extraction patterns, tried in this order (parse_and_get_acc.py); all searched with DOTALL.
D1_EVAL_PATTERNS = (
    r"<answer>.*?```\s*([\d\s]+)```",
    r"<answer>(.*?)(?:<\|eot_id\|>|<\|endoftext\|>|</answer>)",
    r"</answer>\s*(.*?)(?:<\|eot_id\|>|<\|endoftext\|>|$)",
    r".*?(\d{16})\s*</answer>",
    r"\b(\d{16})\b",
)


def question_text(puzzle: str) -> str:
    """d1's question: ``f"Solve the following Sudoku puzzle: {puzzle}\\n"``."""
    return f"Solve the following Sudoku puzzle: {puzzle}\n"


def fit16(s: str) -> str:
    """d1's length fix: right-pad with "0" to 16 characters or cut to 16."""
    return s + "0" * (16 - len(s)) if len(s) < 16 else s[:16]


def cell_counts(candidate: str, puzzle: str, solution: str) -> tuple[int, int]:
    """(correct empty cells, empty cells): empty positions of ``puzzle`` where ``candidate`` has the solution digit."""
    empty = [i for i in range(16) if puzzle[i] == "0"]
    return sum(1 for i in empty if candidate[i] == solution[i]), len(empty)


def d1_cell_score(text: str, puzzle: str, solution: str) -> float:
    """d1's training reward: digits of the LAST ``<answer>`` block, padded/cut to 16, fraction of empty cells right."""
    block = d1_last_answer_block(text)
    if block is None:
        return 0.0
    digits = "".join(ch for ch in block if ch.isdigit())
    if not digits:
        return 0.0
    right, empty = cell_counts(fit16(digits), puzzle, solution)
    return right / empty if empty else 0.0


def sudoku_reward_func(
    prompts: Any = None, completions: Sequence[Any] = (), puzzle: Sequence[str] = (), solution: Sequence[str] = (), **kwargs: Any
) -> list[float]:
    """d1 Sudoku reward: cell accuracy in [0, 1] (same in both modes)."""
    texts = completion_texts(completions)
    return [d1_cell_score(t, p, s) for t, p, s in zip(texts, puzzle, solution, strict=True)]


def sudoku_reward(
    prompts: Any = None, completions: Sequence[Any] = (), puzzle: Sequence[str] = (), solution: Sequence[str] = (), **kwargs: Any
) -> list[float]:
    """Same as :func:`sudoku_reward_func`, under the default naming."""
    return sudoku_reward_func(prompts, completions, puzzle, solution, **kwargs)


def d1_extract(text: str) -> str:
    """d1's evaluation extraction: first non-empty capture of :data:`D1_EVAL_PATTERNS`, whitespace removed
    (NOT padded; may contain non-digits, e.g. brackets)."""
    found = ""
    for pattern in D1_EVAL_PATTERNS:
        if found:
            break
        match = re.search(pattern, text, re.DOTALL)
        if match and match.group(1).strip():
            found = match.group(1).strip()
    return re.sub(r"\s", "", found)


def d1_puzzle_from_question(question: str) -> str:
    """d1's puzzle lookup: the question itself if it starts with 16 digits, else the 16 digits after "Sudoku puzzle: "."""
    if len(question) >= 16 and all(c.isdigit() for c in question[:16]):
        return question[:16]
    match = re.search(r"Sudoku puzzle: ([0-9]{16})", question)
    if not match:
        raise ValueError(f"no 16-digit puzzle in the question {question[:80]!r}")
    return match.group(1)


# ---- solver / generator -------------------------------------------------------------------------------------------

_ROWS = [[r * 4 + c for c in range(4)] for r in range(4)]
_COLS = [[r * 4 + c for r in range(4)] for c in range(4)]
_BOXES = [[(br + r) * 4 + bc + c for r in range(2) for c in range(2)] for br in (0, 2) for bc in (0, 2)]
_UNITS = _ROWS + _COLS + _BOXES


def is_valid_grid(grid: str) -> bool:
    """A complete 4x4 grid whose rows, columns and 2x2 boxes each hold 1-4 once."""
    if len(grid) != 16 or any(c not in "1234" for c in grid):
        return False
    return all({grid[i] for i in unit} == set("1234") for unit in _UNITS)


@functools.lru_cache(maxsize=1)
def all_grids() -> np.ndarray:
    """Every complete 4x4 Sudoku grid (288 of them) as a (288, 16) uint8 array of digits 1-4, in lexicographic order.

    Built row by row: a row (a permutation of 1-4) is appended when no column and no 2x2 box repeats a digit.
    """
    perms = list(itertools.permutations((1, 2, 3, 4)))
    grids: list[tuple[int, ...]] = []

    def extend(rows: list[tuple[int, ...]]) -> None:
        if len(rows) == 4:
            grids.append(tuple(d for row in rows for d in row))
            return
        for perm in perms:
            if any(perm[c] == row[c] for row in rows for c in range(4)):
                continue
            if len(rows) % 2 == 1:  # second row of a band: the 2x2 boxes of the band must be complete
                above = rows[-1]
                if {above[0], above[1], perm[0], perm[1]} != {1, 2, 3, 4}:
                    continue
            extend(rows + [perm])

    extend([])
    return np.array(grids, dtype=np.uint8)


@functools.lru_cache(maxsize=1)
def _agreement_masks() -> np.ndarray:
    """(288, 288) int64: bit i of [k, l] is set iff grids k and l have the same digit in cell i."""
    grids = all_grids()
    same = grids[:, None, :] == grids[None, :, :]
    return (same.astype(np.int64) << np.arange(16, dtype=np.int64)).sum(axis=2)


def consistent_grids(puzzle: str) -> np.ndarray:
    """Indices of the complete grids that agree with every given cell of ``puzzle``."""
    grids = all_grids()
    digits = np.array([int(c) for c in puzzle], dtype=np.uint8)
    given = digits > 0
    return np.flatnonzero((grids[:, given] == digits[given]).all(axis=1))


def count_solutions(puzzle: str) -> int:
    """Number of ways to complete ``puzzle`` (16 chars, "0" = empty)."""
    return int(consistent_grids(puzzle).size)


def generate_sudoku(rng: random.Random, blanks: int = 8, max_tries: int = 1000) -> tuple[str, str]:
    """(puzzle, solution): a random complete grid, then cells emptied in random order while the solution stays
    unique, until ``blanks`` cells are empty (restarting with a new order when stuck).

    Uniqueness test: grid k agrees with the solution on the cell set ``agree[k]`` (a 16-bit mask); it is consistent
    with the givens G iff G ⊆ agree[k]; the puzzle is unique iff only the solution itself is consistent.
    """
    grids, agreement = all_grids(), _agreement_masks()
    for _ in range(max_tries):
        index = rng.randrange(len(grids))
        solution, agree = grids[index], agreement[index]
        givens = (1 << 16) - 1
        removed = 0
        order = list(range(16))
        rng.shuffle(order)
        for pos in order:
            if removed == blanks:
                break
            trial = givens & ~(1 << pos)
            if int(np.count_nonzero((agree & trial) == trial)) == 1:
                givens, removed = trial, removed + 1
        if removed == blanks:
            sol = "".join(str(int(d)) for d in solution)
            puzzle = "".join(sol[i] if givens >> i & 1 else "0" for i in range(16))
            return puzzle, sol
    raise RuntimeError(f"could not generate a 4x4 Sudoku with {blanks} blanks and a unique solution in {max_tries} tries")


@register_task
class SudokuTask(Task):
    """4x4 Sudoku with d1's prompt, reward (cell accuracy) and graders."""

    name = "sudoku"
    default_eval_subset = 256
    default_train_holdout = 500
    local_files = {"train": "sudoku/train.csv", "test": "sudoku/test.csv"}

    def _convert_row(self, row: Mapping[str, Any], split: str) -> dict[str, Any]:
        puzzle = str(row["Puzzle"] if "Puzzle" in row else row["puzzle"]).strip()
        solution = str(row["Solution"] if "Solution" in row else row["solution"]).strip()
        if not re.fullmatch(r"[0-4]{16}", puzzle):
            raise ValueError(f"puzzle {puzzle!r} is not 16 digits 0-4")
        if not is_valid_grid(solution):
            raise ValueError(f"solution {solution!r} is not a valid 4x4 grid")
        if any(p != "0" and p != s for p, s in zip(puzzle, solution)):
            raise ValueError(f"solution {solution!r} contradicts the puzzle {puzzle!r}")
        return {"question": question_text(puzzle), "answer": solution, "puzzle": puzzle, "solution": solution}

    def _generate(self, split: str) -> datasets.Dataset:
        rng = random.Random(self.synthetic_seed(split))
        want = "train" if split == "train" else "test"
        size = self.synthetic_size(split)
        rows, seen = [], set()
        budget = 200 * max(1, size) + 1000
        while len(rows) < size:
            budget -= 1
            if budget < 0:
                raise RuntimeError(f"sudoku generator: cannot find {size} distinct {split} puzzles with {self.cfg.synthetic.sudoku_blanks} blanks")
            puzzle, solution = generate_sudoku(rng, self.cfg.synthetic.sudoku_blanks)
            if puzzle in seen or self.synthetic_split_of(puzzle) != want:
                continue
            seen.add(puzzle)
            rows.append({"question": question_text(puzzle), "answer": solution, "puzzle": puzzle, "solution": solution})
        if not rows:
            return datasets.Dataset.from_dict({"question": [], "answer": [], "puzzle": [], "solution": []})
        return datasets.Dataset.from_list(rows)

    def train_prompt(self, row: Mapping[str, Any]) -> list[dict[str, str]]:
        return user_turn(SUDOKU_SYSTEM_PROMPT + "\n\n" + row["question"])

    def eval_prompt(self, row: Mapping[str, Any]) -> list[dict[str, str]]:
        return user_turn(SUDOKU_SYSTEM_PROMPT + "\n\n" + row["question"])

    def _task_rewards(self) -> list[tuple[RewardFn, float]]:
        return [(sudoku_reward_func if self.cfg.d1_compat_rewards else sudoku_reward, 1.0)]

    def _puzzle(self, row: Mapping[str, Any]) -> str:
        puzzle = row.get("puzzle")
        return puzzle if isinstance(puzzle, str) and len(puzzle) == 16 else d1_puzzle_from_question(str(row.get("question", "")))

    def _grade_d1(self, completion: str, row: Mapping[str, Any]) -> Grade:
        puzzle, solution = self._puzzle(row), str(row.get("solution") or row.get("answer"))
        found = d1_extract(completion)
        empty = puzzle.count("0")
        right = cell_counts(fit16(found), puzzle, solution)[0] if found else 0
        extracted = fit16(found) if found else ""
        return Grade(empty > 0 and right == empty, extracted, right / empty if empty else 0.0, {"correct_cells": right, "empty_cells": empty})

    def _grade_robust(self, completion: str, row: Mapping[str, Any]) -> Grade:
        puzzle, solution = self._puzzle(row), str(row.get("solution") or row.get("answer"))
        text = clean_special_tokens(completion)
        block = last_answer_block(text)
        digits = "".join(ch for ch in block if ch in "0123456789") if block is not None else ""
        source = "answer_tag"
        if len(digits) < 16:  # no usable answer block: last standalone 16-digit run (or 4 rows of 4 digits)
            runs = re.findall(r"(?<!\d)[0-9]{16}(?!\d)", text) or [
                "".join(m) for m in re.findall(r"(?<!\d)([1-4]{4})\s*\n\s*([1-4]{4})\s*\n\s*([1-4]{4})\s*\n\s*([1-4]{4})(?!\d)", text)
            ]
            if runs:
                digits, source = runs[-1], "digits"
        empty = puzzle.count("0")
        right = cell_counts(fit16(digits), puzzle, solution)[0] if digits else 0
        solved = (
            len(digits) == 16
            and is_valid_grid(digits)
            and all(p == "0" or p == d for p, d in zip(puzzle, digits))
        )
        details = {"correct_cells": right, "empty_cells": empty, "source": source if digits else "none", "solved": solved}
        return Grade(solved, digits or None, right / empty if empty else 0.0, details)

    def row_from_d1_record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        question = str(record.get("question", ""))
        solution = record.get("ground_truth")
        if not isinstance(solution, str) or len(solution) != 16:
            raise ValueError(f"sudoku record ground_truth must be a 16-character string, got {solution!r}")
        return {"question": question, "puzzle": d1_puzzle_from_question(question), "solution": solution, "answer": solution}
