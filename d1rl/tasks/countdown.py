"""Countdown: combine the given numbers with + - * / to hit a target (d1-reference §2.9, §3, §5.2, §7).

Data: train = Jiayi-Pan/Countdown-Tasks-3to4 (``nums``, ``target``), filtered to 3 numbers, shuffled (seed 42), the
last 500 dropped (d1); test = d1's ``countdown_cd3_test.jsonl`` (``{"input": "30,100,93", "output": "23"}``, 256
rows, not on the hub: local file only); or the seeded generator (always solvable, it builds the expression first).

Columns: ``numbers`` (list[int]), ``target`` (int), ``question`` = "Numbers: [a, b, c]\\nTarget: T" (d1's eval
question), ``answer`` = str(target); generated rows add ``solution`` (one expression that hits the target).
"""

from __future__ import annotations

import random
import re
from fractions import Fraction
from typing import Any, Mapping, Sequence

import datasets

from d1rl.tasks.base import Grade, Task, register_task
from d1rl.tasks.parsing import (
    clean_special_tokens,
    d1_first_answer_block,
    d1_last_answer_block,
    d1_last_boxed_only_string,
    d1_remove_boxed,
    last_answer_block,
    last_boxed_content,
)
from d1rl.tasks.prompts import COUNTDOWN_EVAL_SYSTEM_PROMPT, COUNTDOWN_TRAIN_TEMPLATE, TRAIN_SYSTEM_PROMPT, user_turn
from d1rl.tasks.rewards import RewardFn, completion_texts
from d1rl.tasks.safe_eval import try_evaluate

HUB_ID = "Jiayi-Pan/Countdown-Tasks-3to4"

#: d1's character whitelist before evaluating an expression
_D1_ALLOWED = r"^[\d+\-*/().\s]+$"


def question_text(numbers: Sequence[int], target: int) -> str:
    """d1's evaluation question: ``f"Numbers: {numbers}\\nTarget: {target}"`` (numbers as a Python list)."""
    return f"Numbers: {list(numbers)}\nTarget: {target}"


def _uses_exactly(expression: str, numbers: Sequence[int]) -> bool:
    """d1's numbers check: sorted integers (``\\d+`` runs) of the expression == sorted available numbers."""
    try:
        return sorted(int(n) for n in re.findall(r"\d+", expression)) == sorted(numbers)
    except (TypeError, ValueError):
        return False


def countdown_score(text: str, numbers: Sequence[int], target: Any, dialect: str) -> float:
    """d1's ``compute_score`` (format_score 0.1, score 1.0) with a safe evaluator of the given dialect.

    Last ``<answer>`` block (DOTALL), stripped → none: 0.0; numbers check fails: 0.1; not in the whitelist or
    not evaluable (syntax, division by zero): 0.1; ``|value − target| < 1e-5``: 1.0, else 0.1.
    """
    equation = d1_last_answer_block(text)
    if equation is None:
        return 0.0
    if not _uses_exactly(equation, numbers):
        return 0.1
    if not re.match(_D1_ALLOWED, equation):
        return 0.1
    value = try_evaluate(equation, dialect)
    if value is None:
        return 0.1
    try:
        return 1.0 if abs(value - target) < 1e-5 else 0.1
    except TypeError:
        return 0.1


def countdown_reward_func(
    prompts: Any = None, completions: Sequence[Any] = (), numbers: Sequence[Any] = (), target: Sequence[Any] = (), **kwargs: Any
) -> list[float]:
    """d1 Countdown reward (0 / 0.1 / 1.0) with d1's evaluation semantics (Python ``eval`` dialect: also ``**``,
    ``//`` and float literals), computed by the safe evaluator."""
    texts = completion_texts(completions)
    return [countdown_score(t, n, g, "python") for t, n, g in zip(texts, numbers, target, strict=True)]


def countdown_reward(
    prompts: Any = None, completions: Sequence[Any] = (), numbers: Sequence[Any] = (), target: Sequence[Any] = (), **kwargs: Any
) -> list[float]:
    """Countdown reward (0 / 0.1 / 1.0) as d1 defines it, evaluated in the strict dialect (integers, + - * /,
    parentheses, unary minus; exact fractions)."""
    texts = completion_texts(completions)
    return [countdown_score(t, n, g, "strict") for t, n, g in zip(texts, numbers, target, strict=True)]


# ---- d1 evaluation parser ---------------------------------------------------------------------------------------


def d1_extract(text: str) -> str:
    """d1's Countdown expression extraction (parse_and_get_acc.py).

    remove_boxed(last_boxed_only_string(text)) — the WHOLE text when there is no box; only when that raises
    (unbalanced braces) the first ``<answer>`` block, or the whole text. Then ``\\div``→/, ``\\times``→*,
    ``\\cdot``→*, and if ``([0-9+\\-*/() ]+)=[0-9. ]+`` occurs, its left side (first match, stripped).
    """
    try:
        equation = d1_remove_boxed(d1_last_boxed_only_string(text))  # type: ignore[arg-type]
    except Exception:
        block = d1_first_answer_block(text)
        equation = block.strip() if block is not None else text
    equation = equation.replace(r"\div", "/").replace(r"\times", "*").replace(r"\cdot", "*")
    match = re.search(r"([0-9+\-*/() ]+)=[0-9. ]+", equation)
    if match:
        equation = match.group(1).strip()
    return equation


def d1_evaluate(equation: str) -> float | int | Fraction:
    """d1's eval-time evaluation: whitelist, then ``eval(equation.strip())``; ANY failure gives ``inf``."""
    if not re.match(_D1_ALLOWED, equation):
        return float("inf")
    value = try_evaluate(equation.strip(), "python")
    return float("inf") if value is None else value


def parse_question(question: str) -> tuple[list[int], int | None]:
    """d1's fallback when the ground truth is not ``[numbers, target]``: parse "Numbers: [..]" / "Target: n"."""
    numbers: list[int] = []
    target = None
    m = re.search(r"Numbers: \[([\d, ]+)\]", question, re.IGNORECASE)
    if m:
        numbers = [int(x.strip()) for x in m.group(1).split(",")]
    t = re.search(r"Target: (\d+)", question, re.IGNORECASE)
    if t:
        target = int(t.group(1))
    return numbers, target


# ---- robust grader helpers ----------------------------------------------------------------------------------------

_LATEX_OPS = [("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"), ("×", "*"), ("·", "*"), ("÷", "/"), ("−", "-"), ("–", "-")]


def normalize_expression(text: str) -> str:
    """LaTeX/Unicode operators to ASCII, drop ``$``, ``\\left``/``\\right`` and ``\\(``/``\\)``."""
    for src, dst in _LATEX_OPS:
        text = text.replace(src, dst)
    text = re.sub(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}", r"(\1)/(\2)", text)
    for junk in ("\\left", "\\right", "\\(", "\\)", "\\[", "\\]", "$"):
        text = text.replace(junk, "")
    return text.replace("{", "(").replace("}", ")").strip()


def _pick_side(expression: str, numbers: Sequence[int]) -> str:
    """For "a + b - c = 51" (either side) pick the side that uses exactly the given numbers."""
    if "=" not in expression:
        return expression
    sides = [s.strip() for s in expression.split("=")]
    for side in sides:
        if re.search(r"[+\-*/]", side) and _uses_exactly(side, numbers):
            return side
    return sides[0]


# ---- generator ----------------------------------------------------------------------------------------------------


def _random_expression(rng: random.Random, numbers: Sequence[int]) -> tuple[float, str]:
    """Combine all numbers in a random binary expression tree (float value, fully parenthesised text)."""
    items = [(float(n), str(n)) for n in numbers]
    while len(items) > 1:
        n = len(items)
        i = int(rng.random() * n)
        j = int(rng.random() * (n - 1))
        j += j >= i
        (a, ea), (b, eb) = items[i], items[j]
        op = "+-*/"[int(rng.random() * 4)]
        if op == "/" and b == 0:
            op = "*"
        value = a + b if op == "+" else a - b if op == "-" else a * b if op == "*" else a / b
        items[i] = (value, f"({ea} {op} {eb})")
        items.pop(j)
    return items[0]


def generate_countdown(
    rng: random.Random,
    n_numbers: int = 3,
    max_number: int = 100,
    min_target: int = 1,
    max_target: int = 100,
    max_tries: int = 100000,
) -> tuple[list[int], int, str]:
    """A solvable puzzle: draw numbers in 1..max_number, combine ALL of them in a random expression tree, keep it
    if its value is an integer target in range (checked exactly with the strict evaluator, so intermediate values
    may be fractions as with d1's true division). Returns (numbers, target, expression)."""
    for attempt in range(max_tries):
        if attempt % 16 == 0:  # several trees per draw of numbers: cheaper than redrawing every time
            numbers = [int(rng.random() * max_number) + 1 for _ in range(n_numbers)]
        value, expr = _random_expression(rng, numbers)
        target = round(value)
        if abs(value - target) > 1e-9 or not min_target <= target <= max_target:
            continue
        expr = expr[1:-1] if n_numbers > 1 else expr
        if try_evaluate(expr, "strict") == target:  # exact check (floats can round onto an integer)
            return numbers, int(target), expr
    raise RuntimeError(f"could not generate a Countdown puzzle in {max_tries} tries (target range {min_target}..{max_target})")


@register_task
class CountdownTask(Task):
    """Countdown with d1's prompts, reward (max 1.0) and graders."""

    name = "countdown"
    default_eval_subset = 256
    default_train_holdout = 500
    local_files = {"train": "countdown/train.jsonl", "test": "countdown/test.jsonl"}

    def _load_hub(self, split: str) -> datasets.Dataset:
        if split != "train":
            return super()._load_hub(split)  # d1's test set is a file in its repository, not on the hub
        return self._hub(HUB_ID, None, split)

    def _postprocess(self, ds: datasets.Dataset, split: str) -> datasets.Dataset:
        k = self.cfg.countdown_num_numbers
        if split == "train" and k:
            ds = ds.filter(lambda row: len(row["numbers"]) == k)
            if len(ds) == 0:
                raise ValueError(f"no {k}-number Countdown rows in the train data (task.countdown_num_numbers={k}; 0 keeps all)")
        return ds

    def _convert_row(self, row: Mapping[str, Any], split: str) -> dict[str, Any]:
        if "input" in row:  # d1's countdown_cd3_test.jsonl
            numbers = [int(x) for x in str(row["input"]).split(",")]
            target = int(row["output"])
        else:
            numbers = [int(x) for x in (row["nums"] if "nums" in row else row["numbers"])]
            target = int(row["target"])
        if not numbers:
            raise ValueError("no numbers")
        return {"question": question_text(numbers, target), "answer": str(target), "numbers": numbers, "target": target}

    def _generate(self, split: str) -> datasets.Dataset:
        s = self.cfg.synthetic
        rng = random.Random(self.synthetic_seed(split))
        want = "train" if split == "train" else "test"
        rows, seen = [], set()
        budget = 200 * max(1, self.synthetic_size(split)) + 1000
        while len(rows) < self.synthetic_size(split):
            budget -= 1
            if budget < 0:
                raise RuntimeError(f"countdown generator: cannot find {self.synthetic_size(split)} distinct {split} puzzles with these settings")
            k = rng.randint(s.countdown_min_numbers, s.countdown_max_numbers)
            numbers, target, expr = generate_countdown(rng, k, s.countdown_max_number, s.countdown_min_target, s.countdown_max_target)
            key = f"{sorted(numbers)}|{target}"
            if key in seen or self.synthetic_split_of(key) != want:
                continue
            seen.add(key)
            rows.append({"question": question_text(numbers, target), "answer": str(target), "numbers": numbers, "target": target, "solution": expr})
        if not rows:
            return datasets.Dataset.from_dict({"question": [], "answer": [], "numbers": [], "target": [], "solution": []})
        return datasets.Dataset.from_list(rows)

    def train_prompt(self, row: Mapping[str, Any]) -> list[dict[str, str]]:
        body = COUNTDOWN_TRAIN_TEMPLATE.format(numbers=list(row["numbers"]), target=row["target"])
        return user_turn(TRAIN_SYSTEM_PROMPT + "\n" + body)

    def eval_prompt(self, row: Mapping[str, Any]) -> list[dict[str, str]]:
        return user_turn(COUNTDOWN_EVAL_SYSTEM_PROMPT + "\n\n" + row["question"])

    def _task_rewards(self) -> list[tuple[RewardFn, float]]:
        return [(countdown_reward_func if self.cfg.d1_compat_rewards else countdown_reward, 1.0)]

    def _truth(self, row: Mapping[str, Any]) -> tuple[list[int], Any]:
        numbers = row.get("numbers")
        target = row.get("target")
        if numbers is None or target is None:
            return parse_question(str(row.get("question", "")))
        return list(numbers), target

    def _grade_d1(self, completion: str, row: Mapping[str, Any]) -> Grade:
        numbers, target = self._truth(row)
        equation = d1_extract(completion)
        valid = _uses_exactly(equation, numbers)
        result = d1_evaluate(equation) if valid else None
        correct = False
        if valid and target is not None:
            try:
                correct = bool(abs(result - target) < 1e-5)  # type: ignore[operator]
            except TypeError:
                correct = False
        shown = None if result is None else (float(result) if isinstance(result, Fraction) else result)
        return Grade(correct, equation, float(correct), {"evaluation_result": shown, "numbers_ok": valid})

    def _grade_robust(self, completion: str, row: Mapping[str, Any]) -> Grade:
        numbers, target = self._truth(row)
        text = clean_special_tokens(completion)
        candidate, source = last_boxed_content(text), "boxed"
        if candidate is None:
            block = last_answer_block(text)
            candidate, source = (last_boxed_content(block) or block, "answer_tag") if block is not None else (None, "none")
        if candidate is None:
            return Grade(False, None, 0.0, {"source": source, "reason": "no expression"})
        expression = _pick_side(normalize_expression(candidate), numbers)
        details: dict[str, Any] = {"source": source}
        if "." in expression or not _uses_exactly(expression, numbers):
            details["reason"] = "numbers do not match"
            return Grade(False, expression, 0.0, details)
        value = try_evaluate(expression, "strict")
        if value is None:
            details["reason"] = "not an arithmetic expression"
            return Grade(False, expression, 0.0, details)
        details["evaluation_result"] = float(value)
        correct = target is not None and value == Fraction(int(target))
        return Grade(correct, expression, float(correct), details)

    def row_from_d1_record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        gt = record.get("ground_truth")
        question = record.get("question", "")
        if isinstance(gt, list) and len(gt) == 2:
            numbers, target = list(gt[0]), gt[1]
        else:
            numbers, target = parse_question(question)
        return {"question": question, "answer": None if target is None else str(target), "numbers": numbers, "target": target}
