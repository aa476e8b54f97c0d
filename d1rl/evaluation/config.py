"""``EvalJobConfig``: the schema of ``d1rl eval`` (primary config ``configs/eval.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from d1rl.models.loading import ModelConfig
from d1rl.sampling.config import SamplerConfig
from d1rl.tasks.config import GRADER_MODES, TaskConfig

D1_EVAL_TASKS = ["gsm8k", "math", "countdown", "sudoku"]


@dataclass
class EvalJobConfig:
    """Evaluate one model (or every checkpoint of a run) on tasks x generation lengths.

    Defaults are d1's evaluation protocol (dllm-reasoning/d1 ``eval/eval.py`` + ``run_eval.sh`` @837888f):
    0-shot, eval prompts with the ``<reasoning>`` prefill, block 32, steps = gen_length / 2, greedy,
    low-confidence remasking, Countdown/Sudoku on d1's 256-item subsets and the full GSM8K / MATH500 test sets.

    Attributes:
        model: model to evaluate (``model=`` group): hub id, local directory, or "tiny"; a LoRA adapter on top via
            ``model.lora.adapter_path`` (d1 eval.py --checkpoint_path).
        sampler: diffusion sampler settings (``sampler=`` group, preset d1_eval). ``sampler.gen_length`` is
            replaced by each entry of ``gen_lengths``; ``sampler.steps: null`` means gen_length // 2 for each
            length (d1 eval.py forces it).
        tasks: task names to evaluate (d1 run_eval.sh: countdown, sudoku, math, gsm8k).
        gen_lengths: generation lengths in tokens (d1 paper Table 1: 128, 256, 512; run_eval.sh: 128, 256).
        batch_size: prompts per sampler call (d1 run_eval.sh: 8; 4 at 512). Results do not depend on it
            (left padding with an attention mask); only speed and memory do.
        limit: evaluate only the first N items of each task's evaluated list (debugging; null = all).
        graders: grading modes scored side by side: "d1" (d1's parsers, quirks included) and "robust" (ours).
        split: dataset split to evaluate (d1: test).
        output_dir: where records-rank*.jsonl, results.json, accuracy_vs_length.png go (one sub-directory
            checkpoint-<step>/ per checkpoint with ``ckpts``). Must be the same path on every rank.
        resume: true = keep the records already in output_dir and evaluate only the missing items (the run's
            settings must match, see eval_config.json); false = delete earlier records there and start over.
        seed: seed of the per-batch sampling generators (d1 eval.py init_seed: 42); unused when greedy.
        task_defaults: task settings applied to every task in ``tasks`` (its ``name`` is ignored), e.g.
            ``task_defaults.data_dir=/path/to/data`` to read local files instead of the hub.
        task_overrides: per-task settings on top of task_defaults, {task name: {TaskConfig field: value}}, e.g.
            ``+task_overrides.sudoku.test_file=/path/sudoku.csv``.
        ckpts: evaluate every checkpoint of a run instead of ``model``: a run directory, one checkpoint-<step>
            directory, or a glob. Adapter checkpoints are applied to ``model``; full ones replace it.
        record_token_ids: also store the completion token ids in each record (exact comparisons between runs).
        plot: write the PNG plots (accuracy vs length; accuracy vs step with ``ckpts``).
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    tasks: List[str] = field(default_factory=lambda: list(D1_EVAL_TASKS))
    gen_lengths: List[int] = field(default_factory=lambda: [128, 256, 512])
    batch_size: int = 8
    limit: Optional[int] = None
    graders: List[str] = field(default_factory=lambda: ["d1", "robust"])
    split: str = "test"
    output_dir: str = "runs/eval"
    resume: bool = True
    seed: int = 42
    task_defaults: TaskConfig = field(default_factory=TaskConfig)
    task_overrides: Dict[str, Any] = field(default_factory=dict)
    ckpts: Optional[str] = None
    record_token_ids: bool = True
    plot: bool = True

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("eval: tasks is empty; name at least one task, e.g. tasks=[gsm8k]")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"eval: tasks lists a task twice: {list(self.tasks)}")
        if not self.gen_lengths or any(int(L) <= 0 for L in self.gen_lengths):
            raise ValueError(f"eval: gen_lengths must be a non-empty list of positive ints, got {list(self.gen_lengths)}")
        if len(set(self.gen_lengths)) != len(self.gen_lengths):
            raise ValueError(f"eval: gen_lengths lists a length twice: {list(self.gen_lengths)}")
        if self.batch_size < 1:
            raise ValueError(f"eval: batch_size must be >= 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"eval: limit must be >= 1 or null, got {self.limit}")
        bad = [g for g in self.graders if g not in GRADER_MODES]
        if not self.graders or bad:
            raise ValueError(f"eval: graders must be a non-empty subset of {list(GRADER_MODES)}, got {list(self.graders)}")
