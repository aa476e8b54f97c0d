"""Turning task rows into left-padded prompt token batches for rollouts (chat template, budget, padding).

d1 (d1-reference §2.4) applies the chat template (one user turn + the assistant header), tokenises without extra
special tokens, left-pads with EOS, and then keeps only the LAST ``max_prompt_length`` tokens. For long MATH prompts
that cuts the BOS, the user header and the format instructions (bug 12), silently. Here the over-long prompt policy
is explicit (``algorithm.prompt_overflow``):

* ``error`` (default): stop and name the row, its length and the budget;
* ``truncate_question``: shorten only the question text, keeping its END (where the actual question usually is,
  marked with a leading "..."), and re-render the template around it, so template and instructions survive;
* ``skip``: leave such rows out of training (decided once at start-up, so the prompt schedule stays stateless);
* ``d1_compat_truncation: true``: d1's left truncation of the rendered token sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from d1rl.tasks.prompts import build_prompt_text

ELLIPSIS = "..."


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of an already templated text; the template carries BOS itself, so no special tokens are added."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass
class PromptPolicy:
    """How prompts are encoded (a view of the ``algorithm`` fields that matter here).

    Attributes:
        max_prompt_length: token budget after the chat template.
        prompt_overflow: "error" | "truncate_question" | "skip".
        d1_compat_truncation: keep the last ``max_prompt_length`` tokens like d1 (wins over prompt_overflow).
    """

    max_prompt_length: int
    prompt_overflow: str = "error"
    d1_compat_truncation: bool = False


class PromptTooLong(ValueError):
    """A prompt exceeds ``algorithm.max_prompt_length`` and the policy does not allow fixing it."""


def encode_prompt(
    tokenizer: Any,
    build_messages: Callable[[Mapping[str, Any]], list[dict]],
    row: Mapping[str, Any],
    policy: PromptPolicy,
    *,
    row_name: str = "row",
    prefill: str = "",
) -> list[int] | None:
    """Prompt token ids of ``row`` within the budget, or None when ``prompt_overflow == "skip"`` and it does not fit.

    ``build_messages`` is the task's ``train_prompt`` (or ``eval_prompt``); for ``truncate_question`` it is called
    again with a shortened ``question`` column.
    """
    budget = policy.max_prompt_length
    ids = encode(tokenizer, build_prompt_text(tokenizer, build_messages(row), prefill))
    if len(ids) <= budget:
        return ids
    if policy.d1_compat_truncation:
        return ids[-budget:]
    if policy.prompt_overflow == "skip":
        return None
    if policy.prompt_overflow == "truncate_question":
        return _truncate_question(tokenizer, build_messages, row, budget, len(ids), row_name, prefill)
    raise PromptTooLong(
        f"{row_name}: prompt has {len(ids)} tokens after the chat template, more than "
        f"algorithm.max_prompt_length={budget}. Raise the budget or set algorithm.prompt_overflow to "
        "'truncate_question' (shorten the question, keep the template) or 'skip' (leave such rows out)."
    )


def _truncate_question(
    tokenizer: Any,
    build_messages: Callable[[Mapping[str, Any]], list[dict]],
    row: Mapping[str, Any],
    budget: int,
    full_length: int,
    row_name: str,
    prefill: str,
) -> list[int]:
    question = row.get("question")
    if not isinstance(question, str) or not question:
        raise PromptTooLong(f"{row_name}: prompt too long ({full_length} > {budget}) and it has no 'question' text to shorten")
    q_ids = encode(tokenizer, question)
    keep = len(q_ids) - (full_length - budget)
    # Re-tokenising at the cut can change the count by a token or two, so shrink until it fits.
    while keep > 0:
        short = ELLIPSIS + tokenizer.decode(q_ids[-keep:], skip_special_tokens=False).lstrip()
        ids = encode(tokenizer, build_prompt_text(tokenizer, build_messages({**row, "question": short}), prefill))
        if len(ids) <= budget:
            return ids
        keep -= len(ids) - budget
    raise PromptTooLong(
        f"{row_name}: even with an empty question the prompt exceeds algorithm.max_prompt_length={budget} "
        "(the template and instructions alone are too long); raise the budget"
    )


def fitting_rows(
    tokenizer: Any,
    build_messages: Callable[[Mapping[str, Any]], list[dict]],
    rows: Iterable[tuple[int, Mapping[str, Any]]],
    budget: int,
    prefill: str = "",
    chunk: int = 1024,
) -> list[int]:
    """Indices of rows whose rendered prompt fits ``budget`` (for ``prompt_overflow=skip``, computed once at
    start-up; tokenised in batches because datasets such as Countdown have 10^5 rows)."""
    keep: list[int] = []
    indices: list[int] = []
    texts: list[str] = []

    def flush() -> None:
        if texts:
            lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
            keep.extend(i for i, n in zip(indices, lengths) if n <= budget)
            indices.clear()
            texts.clear()

    for idx, row in rows:
        indices.append(idx)
        texts.append(build_prompt_text(tokenizer, build_messages(row), prefill))
        if len(texts) >= chunk:
            flush()
    flush()
    return keep
