"""Synthetic generators: Countdown puzzles are solvable, Sudoku puzzles have exactly one solution, arithmetic
reasoning is right; all are seeded and train/test never overlap."""

import itertools
from fractions import Fraction

import pytest

from d1rl.tasks import TaskConfig, evaluate, get_task


def reachable(numbers):
    """Every value of an expression using ALL numbers once with + - * / (brute force over merge orders)."""
    def rec(items):
        if len(items) == 1:
            return {items[0]}
        out = set()
        for i, j in itertools.permutations(range(len(items)), 2):
            rest = [x for k, x in enumerate(items) if k not in (i, j)]
            a, b = items[i], items[j]
            cands = [a + b, a - b, a * b] + ([a / b] if b != 0 else [])
            for c in cands:
                out |= rec(rest + [c])
        return out
    return rec([Fraction(n) for n in numbers])


def count_solutions_backtracking(puzzle):
    """Independent solution counter: plain backtracking over the 16 cells."""
    grid = [int(c) for c in puzzle]
    units = [[r * 4 + c for c in range(4)] for r in range(4)] + [[r * 4 + c for r in range(4)] for c in range(4)]
    units += [[(br + r) * 4 + bc + c for r in range(2) for c in range(2)] for br in (0, 2) for bc in (0, 2)]

    def ok(pos, d):
        return all(grid[k] != d for u in units if pos in u for k in u)

    def solve():
        try:
            pos = grid.index(0)
        except ValueError:
            return 1
        total = 0
        for d in range(1, 5):
            if ok(pos, d):
                grid[pos] = d
                total += solve()
                grid[pos] = 0
        return total

    return solve()


def synth(name, **kw):
    synthetic = {"num_train": kw.pop("num_train", 60), "num_test": kw.pop("num_test", 30), **kw.pop("synthetic", {})}
    return get_task(name, TaskConfig(name=name, source="synthetic", synthetic=synthetic, **kw))


@pytest.mark.parametrize("k", [3, 4])
def test_countdown_puzzles_are_solvable(k):
    n = 25 if k == 3 else 8  # the brute-force check of 4 numbers is slow
    task = synth("countdown", synthetic={"countdown_min_numbers": k, "countdown_max_numbers": k}, num_train=n, num_test=5)
    rows = list(task.load_split("train"))
    assert len(rows) == n
    for row in rows:
        assert len(row["numbers"]) == k and 1 <= row["target"] <= 100
        assert all(1 <= n <= 100 for n in row["numbers"])
        assert Fraction(row["target"]) in reachable(row["numbers"])  # independent solver
        # the stored solution uses exactly the numbers and evaluates to the target
        assert evaluate(row["solution"]) == row["target"]
        assert row["question"] == f"Numbers: {row['numbers']}\nTarget: {row['target']}"
        # and the d1 grader accepts it
        assert task.grade(f"<answer>\\boxed{{{row['solution']}}}</answer>", row, "d1").correct
        assert task.grade(f"<answer>{row['solution']}</answer>", row, "robust").correct


@pytest.mark.parametrize("blanks", [8, 10])
def test_sudoku_puzzles_have_one_solution(blanks):
    from d1rl.tasks.sudoku import all_grids, count_solutions, is_valid_grid

    assert all_grids().shape == (288, 16)
    task = synth("sudoku", synthetic={"sudoku_blanks": blanks}, num_train=40, num_test=10)
    for row in list(task.load_split("train")) + list(task.load_split("test")):
        puzzle, solution = row["puzzle"], row["solution"]
        assert puzzle.count("0") == blanks
        assert is_valid_grid(solution)
        assert all(p in ("0", s) for p, s in zip(puzzle, solution))
        assert count_solutions_backtracking(puzzle) == 1
        assert count_solutions(puzzle) == 1


def test_sudoku_counter_agrees_on_ambiguous_puzzles():
    from d1rl.tasks.sudoku import count_solutions

    for puzzle in ["1234000000000000", "1200340000000000", "0000000000000000"]:
        assert count_solutions(puzzle) == count_solutions_backtracking(puzzle)
    assert count_solutions("0000000000000000") == 288


@pytest.mark.parametrize(
    "a, b, op, completion",
    [
        (47, 85, "+", "<reasoning>7+5+0=12 4+8+1=13</reasoning><answer>132</answer>"),
        (12, 47, "+", "<reasoning>2+7+0=9 1+4+0=5</reasoning><answer>59</answer>"),
        (52, 17, "-", "<reasoning>12-7-0=5 5-1-1=3</reasoning><answer>35</answer>"),
        (52, 47, "-", "<reasoning>12-7-0=5 5-4-1=0</reasoning><answer>5</answer>"),
        (100, 1, "-", "<reasoning>10-1-0=9 10-0-1=9 1-0-1=0</reasoning><answer>99</answer>"),
        (47, 3, "*", "<reasoning>7*3+0=21 4*3+2=14</reasoning><answer>141</answer>"),
    ],
)
def test_arithmetic_completions(a, b, op, completion):
    from d1rl.tasks.synthetic import arithmetic_completion

    assert arithmetic_completion(a, b, op) == completion


def test_arithmetic_generator_difficulty_and_lengths():
    task = synth("synthetic", synthetic={"digits_min": 2, "digits_max": 3, "operations": ["+", "-", "*"]}, num_train=300)
    rows = list(task.load_split("train"))
    ops = {r["op"] for r in rows}
    assert ops == {"+", "-", "*"}
    for r in rows:
        assert 10 <= r["a"] <= 999
        value = {"+": r["a"] + r["b"], "-": r["a"] - r["b"], "*": r["a"] * r["b"]}[r["op"]]
        assert r["answer"] == str(value) and value >= 0
        assert task.sft_completion(r) == r["completion"]
        assert task.grade(r["completion"], r).correct
        # short: ~20-40 characters of reasoning for 2-3 digit problems (every digit is one token in the tiny model)
        assert len(r["completion"]) <= 90
        assert task.train_prompt(r) == [{"role": "user", "content": f"Compute column by column.\n{r['question']}"}]


def test_generators_are_seeded_and_splits_disjoint():
    for name in ("countdown", "sudoku", "synthetic"):
        a, b = synth(name), synth(name)
        train_a, train_b = a.load_split("train"), b.load_split("train")
        assert train_a["question"] == train_b["question"]  # same seed, same data
        other = synth(name, seed=7).load_split("train")
        assert other["question"] != train_a["question"]
        test = a.load_split("test")
        assert len(test) == 30 and len(set(test["question"])) == 30
        assert not set(test["question"]) & set(train_a["question"])


def test_small_arithmetic_space_repeats_train_but_not_test():
    task = synth("synthetic", synthetic={"digits_min": 1, "digits_max": 1}, num_train=200, num_test=5)
    assert len(task.load_split("train")) == 200  # only 100 one-digit sums exist: train repeats
    with pytest.raises(RuntimeError, match="num_test"):
        synth("synthetic", synthetic={"digits_min": 1, "digits_max": 1}, num_test=100).load_split("test")
