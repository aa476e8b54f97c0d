"""A small synthetic arithmetic task for the embedded tiny model (learnable on a CPU in minutes).

Why this shape: a ~1-3M-parameter model with a digit-level tokenizer can learn column arithmetic from a few
thousand SFT examples, and still make enough mistakes afterwards for RL to have something to improve. Prompts are
short (one short instruction line + the problem) and completions are ~20-40 tokens:

    prompt:      "Compute column by column.\\n47+85="
    completion:  "<reasoning>7+5+0=12 4+8+1=13</reasoning><answer>132</answer>"

Reasoning works right to left, one column per step, with the carry (or borrow) made explicit:

* addition ``x+y+c=s``: column digits, carry in, column sum (its last digit is written, its first carried);
* subtraction ``x-y-b=d`` with ``x`` shown +10 when the column borrows (``12-7-0=5``); leading zeros of the
  result are dropped in the answer;
* multiplication by one digit ``x*y+c=p`` per digit of the first operand.

Difficulty: ``task.synthetic.digits_min/digits_max`` (operand length) and ``task.synthetic.operations``.
Rewards: :func:`arithmetic_correctness_reward` (``correct_reward``, default 2.0) and :func:`arithmetic_format_reward`
(``format_reward``, default 0.5), plus the opt-in partial credit :func:`arithmetic_digit_reward` (``digit_reward``,
default 0 = off). Grader: the integer in the last ``<answer>`` block equals the result.
"""

from __future__ import annotations

import functools
import random
import re
from typing import Any, Mapping, Sequence

import datasets

from d1rl.tasks.base import Grade, Task, register_task
from d1rl.tasks.parsing import clean_special_tokens, last_answer_block
from d1rl.tasks.prompts import user_turn
from d1rl.tasks.rewards import RewardFn, completion_texts

INSTRUCTION = "Compute column by column."
_FORMAT = re.compile(r"^\s*<reasoning>.*?</reasoning>\s*<answer>\s*-?\d+\s*</answer>\s*$", re.DOTALL)


def arithmetic_steps(a: int, b: int, op: str) -> tuple[int, list[str]]:
    """(result, column steps) for ``a op b`` (non-negative operands; for "-" a >= b; for "*" b is one digit)."""
    if a < 0 or b < 0:
        raise ValueError("operands must be non-negative")
    da = [int(c) for c in str(a)][::-1]
    steps = []
    if op == "+":
        db = [int(c) for c in str(b)][::-1]
        carry = 0
        for i in range(max(len(da), len(db))):
            x = da[i] if i < len(da) else 0
            y = db[i] if i < len(db) else 0
            s = x + y + carry
            steps.append(f"{x}+{y}+{carry}={s}")
            carry = s // 10
        return a + b, steps
    if op == "-":
        if a < b:
            raise ValueError("subtraction needs a >= b")
        db = [int(c) for c in str(b)][::-1]
        borrow = 0
        for i in range(len(da)):
            x = da[i]
            y = db[i] if i < len(db) else 0
            d = x - y - borrow
            new_borrow = 1 if d < 0 else 0
            steps.append(f"{x + 10 * new_borrow}-{y}-{borrow}={d + 10 * new_borrow}")
            borrow = new_borrow
        return a - b, steps
    if op == "*":
        if not 0 <= b <= 9:
            raise ValueError("multiplication is by a single digit")
        carry = 0
        for x in da:
            p = x * b + carry
            steps.append(f"{x}*{b}+{carry}={p}")
            carry = p // 10
        return a * b, steps
    raise ValueError(f"unknown operation {op!r}; use +, - or *")


def arithmetic_completion(a: int, b: int, op: str) -> str:
    """The reference completion: ``<reasoning>steps</reasoning><answer>result</answer>`` (no spaces around tags)."""
    result, steps = arithmetic_steps(a, b, op)
    return f"<reasoning>{' '.join(steps)}</reasoning><answer>{result}</answer>"


def generate_arithmetic_problem(rng: random.Random, digits_min: int = 2, digits_max: int = 2, operations: Sequence[str] = ("+",)) -> dict[str, Any]:
    """One problem as a row: ``question`` ("47+85="), ``answer`` ("132"), ``a``, ``b``, ``op``, ``completion``.

    Operands have between ``digits_min`` and ``digits_max`` digits (no leading zeros); "*" multiplies by 2..9;
    for "-" the larger operand comes first, so results are never negative.
    """
    op = str(rng.choice(list(operations)))
    da = rng.randint(digits_min, digits_max)
    a = rng.randrange(10 ** (da - 1) if da > 1 else 0, 10**da)
    if op == "*":
        b = rng.randint(2, 9)
    else:
        db = rng.randint(digits_min, digits_max)
        b = rng.randrange(10 ** (db - 1) if db > 1 else 0, 10**db)
        if op == "-" and a < b:
            a, b = b, a
    result, _ = arithmetic_steps(a, b, op)
    return {
        "question": f"{a}{op}{b}=",
        "answer": str(result),
        "a": a,
        "b": b,
        "op": op,
        "completion": arithmetic_completion(a, b, op),
    }


def extract_integer_answer(text: str) -> int | None:
    """The integer in the last ``<answer>`` block (special tokens dropped), or None."""
    block = last_answer_block(clean_special_tokens(text))
    if block is None:
        return None
    block = block.strip()
    return int(block) if re.fullmatch(r"-?\d{1,40}", block) else None


def _correctness(completions: Sequence[Any], answer: Sequence[Any], value: float) -> list[float]:
    out = []
    for text, truth in zip(completion_texts(completions), answer, strict=True):
        got = extract_integer_answer(text)
        out.append(value if got is not None and str(got) == str(int(truth)) else 0.0)
    return out


def arithmetic_correctness_reward(prompts: Any = None, completions: Sequence[Any] = (), answer: Sequence[Any] = (), **kwargs: Any) -> list[float]:
    """2.0 when the integer in the last ``<answer>`` block equals ``answer`` (see :func:`make_correctness_reward`)."""
    return _correctness(completions, answer, 2.0)


def arithmetic_format_reward(prompts: Any = None, completions: Sequence[Any] = (), **kwargs: Any) -> list[float]:
    """0.5 when the completion is ``<reasoning>…</reasoning><answer>integer</answer>`` (whitespace between allowed)."""
    return [0.5 if _FORMAT.match(clean_special_tokens(t)) else 0.0 for t in completion_texts(completions)]


def answer_digit_credit(got: int | None, truth: int) -> float:
    """Fraction of the digits of ``truth`` that ``got`` has in the same place, counted from the units digit.

    Divided by the longer of the two lengths, so extra or missing digits cost credit; a wrong sign or no answer
    scores 0. Why: with a weak policy most groups of samples are all wrong, which gives GRPO a zero advantage;
    partial credit still ranks 124 above 900 for 125, so nearly every group carries a signal.
    """
    if got is None or (got < 0) != (truth < 0):
        return 0.0
    a, b = str(abs(got))[::-1], str(abs(truth))[::-1]
    same = sum(1 for x, y in zip(a, b) if x == y)
    return same / max(len(a), len(b))


def arithmetic_digit_reward(prompts: Any = None, completions: Sequence[Any] = (), answer: Sequence[Any] = (), **kwargs: Any) -> list[float]:
    """1.0 times the fraction of answer digits in the right place (:func:`answer_digit_credit`); 0 without an answer."""
    return [
        answer_digit_credit(extract_integer_answer(text), int(truth))
        for text, truth in zip(completion_texts(completions), answer, strict=True)
    ]


class _Scaled:
    """A reward function scaled to a configured value; a class (not a closure) so it pickles, named for logging."""

    def __init__(self, fn: RewardFn, value: float, base: float, name: str) -> None:
        self.fn, self.factor, self.__name__ = fn, value / base, name
        functools.update_wrapper(self, fn, assigned=("__doc__",))

    def __call__(self, *args: Any, **kwargs: Any) -> list[float]:
        return [v * self.factor for v in self.fn(*args, **kwargs)]


def make_correctness_reward(value: float = 2.0) -> RewardFn:
    """:func:`arithmetic_correctness_reward` paying ``value`` instead of 2.0 (logged as arithmetic_correctness_reward)."""
    return arithmetic_correctness_reward if value == 2.0 else _Scaled(arithmetic_correctness_reward, value, 2.0, "arithmetic_correctness_reward")


def make_format_reward(value: float = 0.5) -> RewardFn:
    """:func:`arithmetic_format_reward` paying ``value`` instead of 0.5 (logged as arithmetic_format_reward)."""
    return arithmetic_format_reward if value == 0.5 else _Scaled(arithmetic_format_reward, value, 0.5, "arithmetic_format_reward")


def make_digit_reward(value: float = 1.0) -> RewardFn:
    """:func:`arithmetic_digit_reward` paying up to ``value`` (logged as arithmetic_digit_reward)."""
    return arithmetic_digit_reward if value == 1.0 else _Scaled(arithmetic_digit_reward, value, 1.0, "arithmetic_digit_reward")


@register_task
class SyntheticArithmeticTask(Task):
    """Multi-digit arithmetic with column-wise reasoning: the embedded default task (generated, offline)."""

    name = "synthetic"
    eval_prefill = ""  # train and eval prompts are the same; nothing is prefilled

    def load_split(self, split: str) -> datasets.Dataset:
        explicit = self.cfg.train_file if split == "train" else self.cfg.test_file
        if explicit:
            return super().load_split(split)
        chosen = (self.cfg.train_source if split == "train" else self.cfg.test_source) or self.cfg.source
        if chosen not in ("auto", "synthetic"):
            raise ValueError(
                f"task synthetic is generated: task.source must be 'synthetic' or 'auto', got {chosen!r} "
                "(or give a file of questions with task.train_file / task.test_file)"
            )
        return self._generate(split)

    def _convert_row(self, row: Mapping[str, Any], split: str) -> dict[str, Any]:
        question = str(row["question"]).strip()
        m = re.fullmatch(r"(\d+)([+\-*])(\d+)=", question)
        if not m:
            raise ValueError(f"question {question!r} is not of the form '<a><op><b>='")
        a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
        result, _ = arithmetic_steps(a, b, op)
        return {"question": question, "answer": str(result), "a": a, "b": b, "op": op, "completion": arithmetic_completion(a, b, op)}

    def _generate(self, split: str) -> datasets.Dataset:
        s = self.cfg.synthetic
        rng = random.Random(self.synthetic_seed(split))
        want = "train" if split == "train" else "test"
        size = self.synthetic_size(split)
        rows: list[dict[str, Any]] = []
        seen: set[str] = set()
        # The problem space can be small (two 2-digit operands: 8100 sums, ~7300 of them train), so once fresh
        # problems get rare (many misses in a row) train rows may repeat; test rows are always distinct.
        misses_in_a_row, allow_repeats = 0, False
        while len(rows) < size:
            row = generate_arithmetic_problem(rng, s.digits_min, s.digits_max, s.operations)
            key = row["question"]
            if self.synthetic_split_of(key) != want:
                continue
            if key in seen and not allow_repeats:
                misses_in_a_row += 1
                if misses_in_a_row > 2000:
                    if want == "test":
                        raise RuntimeError(
                            f"synthetic: only {len(rows)} distinct test problems exist for these settings; "
                            "lower task.synthetic.num_test"
                        )
                    allow_repeats = True
                continue
            misses_in_a_row = 0
            seen.add(key)
            rows.append(row)
        if not rows:
            return datasets.Dataset.from_dict({k: [] for k in ("question", "answer", "a", "b", "op", "completion")})
        return datasets.Dataset.from_list(rows)

    def train_prompt(self, row: Mapping[str, Any]) -> list[dict[str, str]]:
        return user_turn(f"{INSTRUCTION}\n{row['question']}")

    def eval_prompt(self, row: Mapping[str, Any]) -> list[dict[str, str]]:
        return self.train_prompt(row)

    def sft_completion(self, row: Mapping[str, Any]) -> str | None:
        completion = row.get("completion")
        if isinstance(completion, str) and completion:
            return completion
        return self._convert_row(row, "train")["completion"]

    def _task_rewards(self) -> list[tuple[RewardFn, float]]:
        s = self.cfg.synthetic
        rewards = [(make_correctness_reward(s.correct_reward), 1.0), (make_format_reward(s.format_reward), 1.0)]
        if s.digit_reward > 0:  # opt-in partial credit (the quickstart's RL uses it)
            rewards.append((make_digit_reward(s.digit_reward), 1.0))
        return rewards

    def _grade(self, completion: str, row: Mapping[str, Any]) -> Grade:
        got = extract_integer_answer(completion)
        truth = int(row["answer"])
        correct = got is not None and got == truth
        return Grade(correct, got, float(correct), {"ground_truth": truth})

    def _grade_d1(self, completion: str, row: Mapping[str, Any]) -> Grade:
        return self._grade(completion, row)  # d1 has no such task: both modes grade alike

    def _grade_robust(self, completion: str, row: Mapping[str, Any]) -> Grade:
        return self._grade(completion, row)

    def row_from_d1_record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return {"question": record.get("question", ""), "answer": str(record.get("ground_truth"))}
