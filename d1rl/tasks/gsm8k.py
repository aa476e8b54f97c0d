"""GSM8K: grade-school math word problems (openai/gsm8k "main"; d1-reference §2.9, §3, §5.2, §7).

Columns: ``question``; ``answer`` = the text after "####", stripped (d1's training ground truth, e.g. "1,080" or
"-3"); ``solution`` = the full original answer text (d1's evaluation ground truth is parsed from it).
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any, Mapping, Sequence

import datasets

from d1rl.tasks.base import Grade, Task, register_task
from d1rl.tasks.parsing import (
    clean_special_tokens,
    d1_extract_xml_answer,
    last_answer_block,
    last_boxed_content,
    math_verify_equal,
    numbers_in,
    to_fraction,
)
from d1rl.tasks.prompts import GSM8K_EVAL_SYSTEM_PROMPT, TRAIN_SYSTEM_PROMPT, user_turn
from d1rl.tasks.rewards import (
    RewardFn,
    completion_texts,
    soft_format_reward,
    soft_format_reward_func,
    strict_format_reward,
    strict_format_reward_func,
    xmlcount_reward,
    xmlcount_reward_func,
)

HUB_ID = "openai/gsm8k"
HUB_CONFIG = "main"


def extract_hash_answer(text: str) -> str | None:
    """d1's training ground truth: the text between the first "####" and the next one (if any), stripped."""
    if "####" not in text:
        return None
    return text.split("####")[1].strip()


def d1_ground_truth(solution: str) -> float | None:
    """d1's evaluation ground truth: regex ``####\\s*\\$?([\\d,]+(?:\\.\\d+)?)``, commas removed, as float.

    The regex has no minus sign, so negative answers give None — and such questions always count as wrong in d1
    (test items 489 "-10" and 1113 "-3").
    """
    match = re.search(r"####\s*\$?([\d,]+(?:\.\d+)?)", solution)
    if not match:
        return None
    try:
        return float(match.group(1).replace(",", ""))
    except ValueError:
        return None


def d1_extract(text: str) -> tuple[float | None, str]:
    """d1's GSM8K answer parser (parse_and_get_acc.py), returning (value, where it came from).

    1. ``\\boxed{(.*?)}`` matches (no DOTALL; stops at the FIRST "}"), in order; skip empty, "..." and dots-only;
       the first one that yields a number wins: ``float(content)`` or else the FIRST ``-?\\d+\\.?\\d*`` in it.
    2. Otherwise the FIRST ``<answer>(.*?)</answer>`` (DOTALL), stripped: ``float`` of it, or else its LAST number.
    """
    for content in re.findall(r"\\boxed{(.*?)}", text):
        content = content.strip()
        if not content or content == "..." or re.match(r"^\.+$", content):
            continue
        try:
            return float(content), "boxed"
        except ValueError:
            numbers = re.findall(r"-?\d+\.?\d*", content)
            if numbers:
                try:
                    return float(numbers[0]), "boxed"
                except ValueError:
                    pass
    match = re.search(r"<answer>(.*?)</answer>", text, re.DOTALL)
    if match:
        answer_text = match.group(1).strip()
        if answer_text:
            try:
                return float(answer_text), "answer_tag"
            except ValueError:
                numbers = re.findall(r"-?\d+\.?\d*", answer_text)
                if numbers:
                    try:
                        return float(numbers[-1]), "answer_tag"
                    except ValueError:
                        pass
    return None, "none"


def _format_float(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


# ---- rewards (diffu-grpo/reward_func.py) ------------------------------------------------------------------------


def correctness_reward_func(prompts: Any = None, completions: Sequence[Any] = (), answer: Sequence[Any] = (), **kwargs: Any) -> list[float]:
    """d1 GSM8K correctness (2.0): the last ``<answer>`` block, stripped, equals the ``answer`` string EXACTLY
    (no number parsing: "1080" ≠ "1,080"). Not a bug, so the same in both modes."""
    texts = completion_texts(completions)
    return [2.0 if d1_extract_xml_answer(t) == a else 0.0 for t, a in zip(texts, answer, strict=True)]


def correctness_reward(prompts: Any = None, completions: Sequence[Any] = (), answer: Sequence[Any] = (), **kwargs: Any) -> list[float]:
    """Same as :func:`correctness_reward_func`, under the default naming."""
    return correctness_reward_func(prompts, completions, answer, **kwargs)


def int_reward_func(prompts: Any = None, completions: Sequence[Any] = (), **kwargs: Any) -> list[float]:
    """d1 int reward (0.5): the extracted answer ``.isdigit()`` (negatives, decimals and "1,080" get 0)."""
    return [0.5 if d1_extract_xml_answer(t).isdigit() else 0.0 for t in completion_texts(completions)]


def int_reward(prompts: Any = None, completions: Sequence[Any] = (), **kwargs: Any) -> list[float]:
    """Same as :func:`int_reward_func`, under the default naming."""
    return int_reward_func(prompts, completions, **kwargs)


@register_task
class GSM8KTask(Task):
    """GSM8K with d1's prompts, rewards (max 4.0) and graders."""

    name = "gsm8k"
    local_files = {"train": "gsm8k/train.jsonl", "test": "gsm8k/test.jsonl"}

    def _load_hub(self, split: str) -> datasets.Dataset:
        return self._hub(HUB_ID, HUB_CONFIG, split)

    def _convert_row(self, row: Mapping[str, Any], split: str) -> dict[str, Any]:
        question, raw = row["question"], row["answer"]
        if not isinstance(question, str) or not isinstance(raw, str):
            raise ValueError("'question' and 'answer' must be strings")
        answer = extract_hash_answer(raw)
        if answer is None:  # a file that stores only the final answer
            answer, raw = raw.strip(), f"#### {raw.strip()}"
        return {"question": question, "answer": answer, "solution": raw}

    def train_prompt(self, row: Mapping[str, Any]) -> list[dict[str, str]]:
        return user_turn(TRAIN_SYSTEM_PROMPT + "\n\n" + row["question"])

    def eval_prompt(self, row: Mapping[str, Any]) -> list[dict[str, str]]:
        return user_turn(GSM8K_EVAL_SYSTEM_PROMPT + "\n\n" + row["question"])

    def _task_rewards(self) -> list[tuple[RewardFn, float]]:
        if self.cfg.d1_compat_rewards:
            fns = [xmlcount_reward_func, soft_format_reward_func, strict_format_reward_func, int_reward_func, correctness_reward_func]
        else:
            fns = [xmlcount_reward, soft_format_reward, strict_format_reward, int_reward, correctness_reward]
        return [(fn, 1.0) for fn in fns]

    # ---- grading --------------------------------------------------------------------------------------------------

    def _d1_truth(self, row: Mapping[str, Any]) -> float | None:
        if "d1_ground_truth" in row:  # read from a d1 generation file
            gt = row["d1_ground_truth"]
            return None if gt is None else gt
        solution = row.get("solution")
        if isinstance(solution, str) and solution:
            return d1_ground_truth(solution)
        answer = row.get("answer")
        return d1_ground_truth(f"#### {answer}") if isinstance(answer, str) else None

    def _grade_d1(self, completion: str, row: Mapping[str, Any]) -> Grade:
        truth = self._d1_truth(row)
        value, source = d1_extract(completion)
        correct = value is not None and value == truth
        return Grade(correct, value, float(correct), {"source": source, "ground_truth": truth})

    def _grade_robust(self, completion: str, row: Mapping[str, Any]) -> Grade:
        answer = row.get("answer")
        truth = to_fraction(answer) if isinstance(answer, str) and answer.strip() else None
        if truth is None and isinstance(answer, str) and numbers_in(answer):
            truth = numbers_in(answer)[-1]
        text = clean_special_tokens(completion)
        candidate, source = last_boxed_content(text), "boxed"
        if candidate is None:
            candidate, source = last_answer_block(text), "answer_tag"
        if candidate is None:
            candidate, source = text, "text"
        numbers = numbers_in(candidate)
        value: Fraction | None = numbers[-1] if numbers else None
        details: dict[str, Any] = {"source": source, "ground_truth": answer}
        if truth is None:
            details["error"] = "no ground truth"
            return Grade(False, _show(value), 0.0, details)
        correct = value is not None and value == truth
        if not correct and source != "text" and candidate.strip():
            correct = math_verify_equal(str(answer).replace(",", ""), candidate)
            if correct:
                details["via"] = "math_verify"
        return Grade(correct, _show(value) if value is not None else candidate.strip() or None, float(correct), details)

    def row_from_d1_record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        gt = record.get("ground_truth")
        if gt is not None and not isinstance(gt, (int, float)):
            raise ValueError(f"gsm8k record ground_truth must be a number or null, got {gt!r}")
        return {
            "question": record.get("question", ""),
            "answer": None if gt is None else _format_float(float(gt)),
            "d1_ground_truth": gt,
        }


def _show(value: Fraction | None) -> str | None:
    """A readable form of an extracted number ("18", "-3", "0.5", "1/3")."""
    if value is None:
        return None
    if value.denominator == 1:
        return str(value.numerator)
    as_float = float(value)
    return repr(as_float) if Fraction(repr(as_float)) == value else f"{value.numerator}/{value.denominator}"
