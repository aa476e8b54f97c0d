"""A dense reward for fast RL tests from an untrained tiny model (used through ``task.extra_rewards``).

The synthetic task's own rewards (correctness, format) are 0 for a random model, so they carry no signal. The
fraction of digit characters is sparse but not rare under a random policy (10 of the tiny vocabulary's 740 tokens
are digits, so about a third of 32-token completions contain one) and diffu-GRPO can only raise it by making digit
tokens more likely at masked positions — a real end-to-end check of the policy-gradient sign and plumbing.
"""

from __future__ import annotations

from typing import Any, Sequence

from d1rl.tasks.rewards import completion_texts


def digit_reward(prompts: Any = None, completions: Sequence[Any] = (), **kwargs: Any) -> list[float]:
    """min(1, number of digit characters / 8)."""
    return [min(1.0, sum(c.isdigit() for c in text) / 8.0) for text in completion_texts(completions)]


def length_reward(prompts: Any = None, completions: Sequence[Any] = (), **kwargs: Any) -> list[float]:
    """Characters in the completion / 100: differs between almost any two random completions, so every group has
    non-zero advantages (tests that need the parameters to move at every step)."""
    return [len(text) / 100.0 for text in completion_texts(completions)]
