"""Reward-function plumbing and d1's task-independent rewards (format rewards from diffu-grpo/reward_func.py).

Every reward function has TRL's signature ``fn(prompts, completions, **columns) -> list[float | None]``: ``prompts``
and ``completions`` are lists (completions either strings or TRL conversational lists
``[{"role": "assistant", "content": text}]``), ``columns`` are the dataset columns of each completion's row, as lists.
So a function from ``trl.rewards`` plugs in unchanged (``TaskConfig.extra_rewards``), and ours work in TRL.

Naming rule: the d1-compatible variants carry d1's function names (``strict_format_reward_func`` ...), so logged
``rewards/<name>`` curves can be compared with d1's runs; the corrected defaults carry names without ``_func``.
Where d1's definition is not buggy both names compute the same value.
"""

from __future__ import annotations

import importlib
import re
from typing import Any, Callable, Iterable, Sequence

RewardFn = Callable[..., list]


def completion_text(completion: Any) -> str:
    """The text of one completion: a string, a message dict, or a list of messages (contents concatenated)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    if isinstance(completion, (list, tuple)):
        parts = []
        for message in completion:
            if isinstance(message, dict):
                parts.append(str(message.get("content", "")))
            elif isinstance(message, str):
                parts.append(message)
            else:
                raise TypeError(f"completion message must be a dict or str, got {type(message).__name__}")
        return "".join(parts)
    raise TypeError(f"completion must be a string or a list of chat messages, got {type(completion).__name__}")


def completion_texts(completions: Iterable[Any]) -> list[str]:
    """:func:`completion_text` of every completion."""
    return [completion_text(c) for c in completions]


# ---------------------------------------------------------------------------------------------------------------
# d1's format rewards (d1-reference §3.2)
# ---------------------------------------------------------------------------------------------------------------

_STRICT = r"^<reasoning>\n.*?\n</reasoning>\n<answer>\n.*?\n</answer>\n$"
_SOFT = r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>"
# Corrected strict format: multi-line reasoning/answer allowed, the trailing newline optional (decoded completions
# rarely end with one because EOS is stripped).
_STRICT_FIXED = r"^<reasoning>\n.*?\n</reasoning>\n<answer>\n.*?\n</answer>\n?\Z"


def count_xml(text: str) -> float:
    """d1's ``count_xml``: 0.125 per well-placed tag, minus 0.001 per character of trailing text after the answer."""
    score = 0.0
    if text.count("<reasoning>\n") == 1:
        score += 0.125
    if text.count("\n</reasoning>\n") == 1:
        score += 0.125
    if text.count("\n<answer>\n") == 1:
        score += 0.125
        score -= len(text.split("\n</answer>\n")[-1]) * 0.001
    if text.count("\n</answer>") == 1:
        score += 0.125
        score -= (len(text.split("\n</answer>")[-1]) - 1) * 0.001
    return score


def xmlcount_reward_func(prompts: Any = None, completions: Sequence[Any] = (), **kwargs: Any) -> list[float]:
    """d1 xmlcount reward (max 0.5; can go negative with long trailing text). Same value in both modes."""
    return [count_xml(t) for t in completion_texts(completions)]


def xmlcount_reward(prompts: Any = None, completions: Sequence[Any] = (), **kwargs: Any) -> list[float]:
    """Same as :func:`xmlcount_reward_func` (not a d1 bug), under the default naming."""
    return xmlcount_reward_func(prompts, completions, **kwargs)


def strict_format_reward_func(prompts: Any = None, completions: Sequence[Any] = (), **kwargs: Any) -> list[float]:
    """d1 strict format (0.5): whole text ``<reasoning>\\n…\\n</reasoning>\\n<answer>\\n…\\n</answer>\\n`` WITHOUT
    DOTALL (d1 bug: reasoning and answer must be single lines, and the text must end with a newline)."""
    return [0.5 if re.match(_STRICT, t) else 0.0 for t in completion_texts(completions)]


def strict_format_reward(prompts: Any = None, completions: Sequence[Any] = (), **kwargs: Any) -> list[float]:
    """Corrected strict format (0.5): the same layout, multi-line reasoning/answer allowed, final newline optional."""
    return [0.5 if re.match(_STRICT_FIXED, t, flags=re.DOTALL) else 0.0 for t in completion_texts(completions)]


def soft_format_reward_func(prompts: Any = None, completions: Sequence[Any] = (), **kwargs: Any) -> list[float]:
    """d1 soft format (0.5): ``re.match`` (anchored at the start) of ``<reasoning>…</reasoning>\\s*<answer>…</answer>``
    WITHOUT DOTALL (d1 bug: the reasoning must be a single line)."""
    return [0.5 if re.match(_SOFT, t) else 0.0 for t in completion_texts(completions)]


def soft_format_reward(prompts: Any = None, completions: Sequence[Any] = (), **kwargs: Any) -> list[float]:
    """Corrected soft format (0.5): as d1's, with DOTALL so multi-line reasoning counts."""
    return [0.5 if re.match(_SOFT, t, flags=re.DOTALL) else 0.0 for t in completion_texts(completions)]


# ---------------------------------------------------------------------------------------------------------------
# extra reward functions from config
# ---------------------------------------------------------------------------------------------------------------


def load_reward_function(spec: str) -> tuple[RewardFn, float]:
    """``"module:function"`` or ``"module:function=weight"`` → (function, weight), e.g.
    ``"trl.rewards:think_format_reward=0.5"``."""
    target, _, weight_text = spec.partition("=")
    module_name, sep, attr = target.strip().partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"task.extra_rewards entry {spec!r}: expected 'module:function' or 'module:function=weight'")
    try:
        weight = float(weight_text) if weight_text.strip() else 1.0
    except ValueError:
        raise ValueError(f"task.extra_rewards entry {spec!r}: weight {weight_text!r} is not a number") from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"task.extra_rewards entry {spec!r}: cannot import {module_name!r} ({err})") from err
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise ValueError(f"task.extra_rewards entry {spec!r}: {module_name} has no callable {attr!r}")
    return fn, weight


def call_reward_functions(
    reward_functions: Sequence[tuple[RewardFn, float]],
    prompts: Sequence[Any],
    completions: Sequence[str],
    columns: dict[str, Sequence[Any]],
) -> tuple[list[list[float | None]], list[float]]:
    """Score completions the way TRL's GRPOTrainer does: per function values, and the weighted sum ignoring None.

    Completions (strings) are passed in conversational form, as TRL does for conversational prompts. Returns
    (``per_function[j][i]``, ``total[i]``).
    """
    n = len(completions)
    wrapped = [[{"role": "assistant", "content": c}] for c in completions]
    per_function: list[list[float | None]] = []
    for fn, _ in reward_functions:
        values = list(fn(prompts=list(prompts), completions=wrapped, **{k: list(v) for k, v in columns.items()}))
        if len(values) != n:
            name = getattr(fn, "__name__", repr(fn))
            raise ValueError(f"reward function {name} returned {len(values)} values for {n} completions")
        per_function.append([None if v is None else float(v) for v in values])
    totals = []
    for i in range(n):
        totals.append(sum(w * vals[i] for (_, w), vals in zip(reward_functions, per_function) if vals[i] is not None))
    return per_function, totals
