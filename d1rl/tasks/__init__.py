"""Tasks: one module per task (gsm8k, math, countdown, sudoku, synthetic), each the single place that knows it.

A task loads its data (d1's hub ids, local files, or a seeded generator), builds d1's training and evaluation
prompts as chat messages, provides d1's reward functions with TRL's signature, and grades completions either
exactly as d1's evaluation parser does (``mode="d1"``) or with our robust grader (``mode="robust"``).

    from d1rl.tasks import TaskConfig, build_prompt_text, get_task
    task = get_task("gsm8k", TaskConfig(name="gsm8k", data_dir="/work/shared/data"))
    rows = task.load_eval_split("test")
    text = build_prompt_text(tokenizer, task.eval_prompt(rows[0]), prefill=task.eval_prefill)
    grade = task.grade(completion, rows[0], mode="d1")
"""

from __future__ import annotations

from d1rl.tasks.base import Grade, Task, d1_eval_subset, get_task, register_task, task_names
from d1rl.tasks.config import SyntheticConfig, TaskConfig
from d1rl.tasks.data import DataUnavailableError
from d1rl.tasks.prompts import D1_EVAL_PREFILL, build_prompt_text
from d1rl.tasks.rewards import call_reward_functions, completion_text, completion_texts, load_reward_function
from d1rl.tasks.safe_eval import UnsafeExpression, evaluate, try_evaluate

__all__ = [
    "D1_EVAL_PREFILL",
    "DataUnavailableError",
    "Grade",
    "SyntheticConfig",
    "Task",
    "TaskConfig",
    "UnsafeExpression",
    "build_prompt_text",
    "call_reward_functions",
    "completion_text",
    "completion_texts",
    "d1_eval_subset",
    "evaluate",
    "get_task",
    "load_reward_function",
    "register_task",
    "task_names",
    "try_evaluate",
]
