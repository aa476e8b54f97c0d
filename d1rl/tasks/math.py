"""MATH: competition math (train: ankner/math-500 "train"; test: HuggingFaceH4/MATH-500; d1-reference §2.9, §3, §5.2).

Columns: ``question`` (the problem), ``answer`` (ground-truth answer string: MATH-500's ``answer`` column, or the last
``\\boxed{}`` of the solution when a source has no such column), ``solution`` (full solution text, kept for d1's
reward, which reads its ground truth from the solution's last box), ``subject``, ``level``, ``unique_id``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import datasets

from d1rl.tasks.base import Grade, Task, register_task
from d1rl.tasks.parsing import (
    clean_special_tokens,
    d1_first_answer_block,
    d1_is_equiv,
    d1_last_boxed_only_string,
    d1_remove_boxed,
    last_answer_block,
    last_boxed_content,
    math_verify_equal,
)
from d1rl.tasks.prompts import MATH_EVAL_SYSTEM_PROMPT, MATH_TRAIN_INSTRUCTION, TRAIN_SYSTEM_PROMPT, user_turn
from d1rl.tasks.rewards import RewardFn, completion_texts

TRAIN_HUB_ID = "ankner/math-500"
TEST_HUB_ID = "HuggingFaceH4/MATH-500"


def d1_boxed_answer(text: str) -> str | None:
    """``remove_boxed(last_boxed_only_string(text))``, None where d1's helpers raise (unbalanced braces)."""
    try:
        return d1_remove_boxed(d1_last_boxed_only_string(text))  # type: ignore[arg-type]
    except Exception:
        return None


def d1_extract(text: str) -> str | None:
    """d1's MATH evaluation parser: last box (whole text if none), then — only if that fails or is empty — the
    FIRST ``<answer>`` block, stripped."""
    parsed = d1_boxed_answer(text)
    if not parsed:
        block = d1_first_answer_block(text)
        if block is not None:
            parsed = block.strip()
    return parsed


def _reward_truths(answer: Sequence[Any], solution: Sequence[Any] | None) -> list[Any]:
    # d1's dataset keeps the full solution as its "answer" and extracts the last box from it; we keep both
    # columns, so extract from the solution when we have it.
    src = solution if solution is not None else answer
    return [d1_boxed_answer(s) if isinstance(s, str) else s for s in src]


def _math_correctness(completions: Sequence[Any], truths: Sequence[Any]) -> list[float]:
    rewards = []
    for text, truth in zip(completion_texts(completions), truths, strict=True):
        try:
            text = d1_remove_boxed(d1_last_boxed_only_string(text))  # type: ignore[arg-type]
        except Exception:
            pass  # d1: keep the whole response when the helpers raise
        rewards.append(2.0 if d1_is_equiv(text, truth, float_branch=False) else 0.0)
    return rewards


def correctness_reward_func_math(
    prompts: Any = None, completions: Sequence[Any] = (), answer: Sequence[Any] = (), solution: Sequence[Any] | None = None, **kwargs: Any
) -> list[float]:
    """d1 MATH correctness (2.0): last box of the response (the whole response if none) ``is_equiv`` the last box of
    the solution, with the reward copy of is_equiv (no float branch). Not a bug; identical in both modes."""
    return _math_correctness(completions, _reward_truths(answer, solution))


def correctness_reward_math(
    prompts: Any = None, completions: Sequence[Any] = (), answer: Sequence[Any] = (), solution: Sequence[Any] | None = None, **kwargs: Any
) -> list[float]:
    """Same as :func:`correctness_reward_func_math`, under the default naming."""
    return _math_correctness(completions, _reward_truths(answer, solution))


def _boxed_in_answer(text: str, box_literal: str) -> float:
    segment, score = text, 0.0
    parts = text.split("<answer>")
    if len(parts) >= 2:
        segment, score = parts[1].split("</answer>")[0], 1.0
    return score + (1.0 if box_literal in segment else 0.5)


def boxed_and_answer_tags_format_reward(prompts: Any = None, completions: Sequence[Any] = (), **kwargs: Any) -> list[float]:
    """d1 MATH format reward WITH d1's bug: 0.5 × (1 if an ``<answer>`` tag + (1 if "\\boxed" in the first answer
    segment else 0.5)), but d1 wrote the literal as "\\b" = BACKSPACE + "oxed", which never occurs, so the value
    is 0.75 with an ``<answer>`` tag and 0.25 without."""
    return [0.5 * _boxed_in_answer(t, "\boxed") for t in completion_texts(completions)]  # "\b" on purpose


def boxed_in_answer_format_reward(prompts: Any = None, completions: Sequence[Any] = (), **kwargs: Any) -> list[float]:
    """Corrected MATH format reward: 0.5 × (1 if ``<answer>`` + (1 if ``\\boxed`` inside it else 0.5)); max 1.0."""
    return [0.5 * _boxed_in_answer(t, "\\boxed") for t in completion_texts(completions)]


@register_task
class MathTask(Task):
    """MATH with d1's prompts, rewards (max 2.75 in d1, 3.0 corrected) and graders."""

    name = "math"
    local_files = {"train": "math/train.jsonl", "test": "math500/test.jsonl"}

    def _load_hub(self, split: str) -> datasets.Dataset:
        if split == "train":
            return self._hub(TRAIN_HUB_ID, None, split)
        return self._hub(TEST_HUB_ID, None, split, hub_split="test")

    def _convert_row(self, row: Mapping[str, Any], split: str) -> dict[str, Any]:
        question = row["problem"] if "problem" in row else row["question"]
        solution = row.get("solution")
        answer = row.get("answer")
        if answer is None:
            if not isinstance(solution, str):
                raise ValueError("row has neither an 'answer' nor a 'solution' column")
            answer = d1_boxed_answer(solution)
            if answer is None or answer == solution:
                raise ValueError("no 'answer' column and no balanced \\boxed{} in the solution")
        if not isinstance(question, str) or not isinstance(answer, str):
            raise ValueError("'problem' and 'answer' must be strings")
        level = row.get("level")
        return {
            "question": question,
            "answer": answer,
            "solution": solution if isinstance(solution, str) else None,
            "subject": row.get("subject"),
            "level": None if level is None else str(level),
            "unique_id": row.get("unique_id"),
        }

    def train_prompt(self, row: Mapping[str, Any]) -> list[dict[str, str]]:
        return user_turn(TRAIN_SYSTEM_PROMPT + "\n\n" + MATH_TRAIN_INSTRUCTION + "\n\n" + row["question"])

    def eval_prompt(self, row: Mapping[str, Any]) -> list[dict[str, str]]:
        return user_turn(MATH_EVAL_SYSTEM_PROMPT + "\n\n" + row["question"])

    def _task_rewards(self) -> list[tuple[RewardFn, float]]:
        if self.cfg.d1_compat_rewards:
            return [(correctness_reward_func_math, 1.0), (boxed_and_answer_tags_format_reward, 1.0)]
        return [(correctness_reward_math, 1.0), (boxed_in_answer_format_reward, 1.0)]

    def _grade_d1(self, completion: str, row: Mapping[str, Any]) -> Grade:
        truth = row.get("answer")
        parsed = d1_extract(completion)
        correct = parsed is not None and d1_is_equiv(parsed, truth, float_branch=True)
        return Grade(bool(correct), parsed, float(bool(correct)), {"ground_truth": truth})

    def _grade_robust(self, completion: str, row: Mapping[str, Any]) -> Grade:
        truth = row.get("answer")
        text = clean_special_tokens(completion)
        candidate, source = last_boxed_content(text), "boxed"
        if candidate is None:
            block = last_answer_block(text)
            candidate, source = (last_boxed_content(block) or block, "answer_tag") if block is not None else (None, "none")
        details: dict[str, Any] = {"source": source, "ground_truth": truth}
        if candidate is None or not isinstance(truth, str):
            if not isinstance(truth, str):
                details["error"] = "no ground truth"
            return Grade(False, candidate, 0.0, details)
        correct = d1_is_equiv(candidate, truth, float_branch=False)
        if correct:
            details["via"] = "strip_string"
        else:
            correct = math_verify_equal(truth, candidate)
            if correct:
                details["via"] = "math_verify"
        return Grade(correct, candidate, float(correct), details)

    def row_from_d1_record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        gt = record.get("ground_truth")
        return {"question": record.get("question", ""), "answer": gt}
