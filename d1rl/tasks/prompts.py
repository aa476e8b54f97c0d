"""d1's prompt strings (training and evaluation differ; d1-reference §3.1 and §3.3), and the chat-template helper.

The strings are data that d1 recipes must reproduce exactly, whitespace included: the training SYSTEM_PROMPT starts
and ends with a newline (the LLaDA chat template trims message content, so only inner whitespace matters), the GSM8K
eval prompt has a space after ``\\boxed{}.``, the MATH eval prompt has none there but a stray ``" `` after
``</answer>``, and the Countdown eval prompt runs straight into "Respond in the following format:" without a space.

Every prompt is a single user turn (the system text is part of the user content, as in d1). Callers render it with
:func:`build_prompt_text`, which applies the tokenizer's chat template with the assistant header and appends the
prefill (``"<reasoning>"`` for d1 evaluation, nothing for d1 training).
"""

from __future__ import annotations

from typing import Any, Sequence

# --- training (diffu-grpo/data_utils.py) -----------------------------------------------------------------------

TRAIN_SYSTEM_PROMPT = "\nRespond in the following format:\n<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>\n"

SUDOKU_SYSTEM_PROMPT = (
    "\nPlease solve the following 4x4 Sudoku puzzle. The puzzle is provided as a 16-character string reading "
    "left-to-right, top-to-bottom, where '0' represents empty cells.\n"
    "\n"
    "Rules:\n"
    "- Fill empty cells with digits 1-4\n"
    "- Each row must contain digits 1-4 exactly once\n"
    "- Each column must contain digits 1-4 exactly once\n"
    "- Each 2x2 box must contain digits 1-4 exactly once\n"
    "\n"
    "Important: Your solution must be a COMPLETE 16-character string with only the digits 1-4, representing your "
    "final solved grid.\n"
    "\n"
    "Respond in this exact format:\n"
    "<reasoning>\n"
    "Your step-by-step solving process\n"
    "</reasoning>\n"
    "<answer>\n"
    "[16-character solution string with no spaces or separators]\n"
    "</answer>\n"
)

MATH_TRAIN_INSTRUCTION = (
    "You are a math expert. You will be given a question to solve. Solve it step by step. "
    "Wrap the final answer in a \\boxed{}. "
)

COUNTDOWN_TRAIN_TEMPLATE = (
    "Using only the numbers {numbers}, create an arithmetic expression that evaluates to exactly {target}. "
    "You must use all numbers from the list, and each number must be used exactly once. You may use the operations "
    "+, -, *, and / as needed. After reasoning, provide only your final expression inside <answer></answer> tags "
    "without including an equals sign or the target number. For example, if the numbers are [2, 3, 4] and the "
    "target is 5, a valid answer is: <answer>\n2*4-3\n</answer>"
)

# --- evaluation (eval/gsm8k.py, math500.py, countdown.py, sudoku.py) ----------------------------------------------

_EVAL_FORMAT = "Respond in the following format:\n<reasoning>\nYour reasoning here\n</reasoning>\n<answer>\n\\boxed{...}\n</answer>"

GSM8K_EVAL_SYSTEM_PROMPT = (
    "You are a math expert. You will be given a question to solve. Solve it step by step. "
    "Wrap the final answer in a \\boxed{}. \n" + _EVAL_FORMAT
)

MATH_EVAL_SYSTEM_PROMPT = (
    "You are a math expert. You will be given a question to solve. Solve it step by step. "
    "Wrap the final answer in a \\boxed{}.\n" + _EVAL_FORMAT + '" \n'
)

COUNTDOWN_EVAL_SYSTEM_PROMPT = (
    "Using only the provided numbers, create an arithmetic expression that evaluates to exactly the provided target "
    "number. You may use the operations +, -, *, and / as needed, but each number must be used exactly once. Think "
    "step-by-step. After reasoning, provide only your final expression inside \\boxed{} tags without including an "
    "equals sign or the target number. For example: \\boxed{a + b * c}" + _EVAL_FORMAT
)

SUDOKU_EVAL_SYSTEM_PROMPT = SUDOKU_SYSTEM_PROMPT

#: What d1's evaluation appends after the chat template (``add_reasoning=True`` is hard-coded in eval.py).
D1_EVAL_PREFILL = "<reasoning>"


def user_turn(content: str) -> list[dict[str, str]]:
    """A conversation of one user message (the form TRL calls "conversational")."""
    return [{"role": "user", "content": content}]


def build_prompt_text(tokenizer: Any, messages: Sequence[dict[str, str]], prefill: str = "") -> str:
    """Render ``messages`` with the tokenizer's chat template, add the assistant header, then append ``prefill``.

    This is what d1 feeds the model: ``apply_chat_template(..., add_generation_prompt=True, tokenize=False)``
    followed by ``"<reasoning>"`` at evaluation time. Tokenise the result with ``add_special_tokens=False``: the
    template already contains BOS.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} has no chat_template; d1 prompts are chat messages. "
            "Use an instruct tokenizer (LLaDA-8B-Instruct or the embedded tiny one) or set tokenizer.chat_template."
        )
    text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    if not isinstance(text, str):
        raise TypeError(f"apply_chat_template returned {type(text).__name__}, expected str")
    return text + prefill
