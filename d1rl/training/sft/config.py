"""Config schemas of ``d1rl sft``: the ``data=`` group (what to train on), the ``loss`` node, and the job.

Defaults are d1's masked-SFT values (d1-reference.md §4); presets in ``configs/data/`` name their sources.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from d1rl.models import ModelConfig
from d1rl.tasks.config import TaskConfig
from d1rl.training.config import LoggerConfig, TrainerConfig

DATA_SOURCES = ("s1k", "json", "task")
DATA_FORMATS = ("chat", "prompt_completion")
PADDINGS = ("max_length", "longest")
NORMALIZATIONS = ("d1", "per_sample")
EVAL_T = ("linspace", "random")

#: d1 SFT/sft_utils.py SYSTEM_PROMPT (d1-reference §4), prepended to every s1K question with "\n\n".
D1_SFT_SYSTEM_PROMPT = (
    "Respond in the following format:\n<reasoning>\nYour reasoning here\n</reasoning>\n<answer>\n...\n</answer>"
)


@dataclass
class SFTDataConfig:
    """What the SFT stage trains on and how rows become token sequences (the ``data=`` group).

    Attributes:
        source: "s1k" (the s1K reasoning set formatted as d1 does), "json" (a local chat or prompt-completion
            file) or "task" (the job's ``task`` config, using ``Task.sft_completion``; e.g. the synthetic task).
        path: s1k: hub id or local .json/.jsonl/.parquet file (d1: simplescaling/s1K); json: the local file.
        hub_split: split name when ``path`` is a hub id (d1: train).
        format: json only: "chat" (a list of role/content messages ending with the assistant turn) or
            "prompt_completion" (a prompt column, string or messages, plus a completion column).
        messages_column: json chat: the column holding the messages (TRL convention: messages).
        prompt_column: json prompt_completion: the prompt column (TRL: prompt).
        completion_column: json prompt_completion: the completion column (TRL: completion).
        system_prompt: text put before every user prompt, joined with "\\n\\n" (d1 s1K: its SFT SYSTEM_PROMPT;
            None = nothing). Put inside the user turn as d1 does, not as a system message.
        question_column: s1k: the question column (s1K: question).
        reasoning_column: s1k: the reasoning column, a list whose first element is used (s1K:
            thinking_trajectories).
        attempt_column: s1k: the final-answer column (s1K: attempt).
        task_split: source=task: the split used for training (train).
        eval_split: a separate split/file for the held-out loss: for source=task a task split name (e.g. test);
            for json/s1k a local file. None = hold out ``eval_size`` rows of the training data (d1).
        eval_size: rows held out when eval_split is None: a fraction in (0, 1) or a count >= 1 (d1: 0.01 of s1K =
            10 rows); 0 = no evaluation.
        max_eval_rows: cap on the evaluation rows (None = all).
        max_rows: use only the first N training rows after shuffling (None = all).
        split_seed: seed of the shuffle before holding out eval rows (d1: 42). The permutation is ours, so the
            10 held-out s1K rows are not the same rows as d1's.
        max_length: sequence length; longer rows are truncated at the end, rows whose prompt alone fills it are
            dropped with a warning (d1: 4096).
        padding: "max_length" pads every row to max_length (d1; the padding EOS are answer positions of the d1
            loss) or "longest" (pad to the longest row of the batch; cheaper when padding is not a target).
        d1_compat: reproduce d1's tokenisation quirks: the chat template's extra assistant header after the answer
            stays in the target, and prompt_length is counted on the prompt text + "\\n" (d1-reference §4, §8.19).
            False (default) ends the target at the assistant's end-of-turn token and uses the exact prompt length.
    """

    source: str = "s1k"
    path: Optional[str] = "simplescaling/s1K"
    hub_split: str = "train"
    format: str = "chat"
    messages_column: str = "messages"
    prompt_column: str = "prompt"
    completion_column: str = "completion"
    system_prompt: Optional[str] = D1_SFT_SYSTEM_PROMPT
    question_column: str = "question"
    reasoning_column: str = "thinking_trajectories"
    attempt_column: str = "attempt"
    task_split: str = "train"
    eval_split: Optional[str] = None
    eval_size: float = 0.01
    max_eval_rows: Optional[int] = None
    max_rows: Optional[int] = None
    split_seed: int = 42
    max_length: int = 4096
    padding: str = "max_length"
    d1_compat: bool = False

    def validate(self) -> None:
        """Raise ``ValueError`` naming the ``data.<key>`` that is not allowed."""
        problems = []
        if self.source not in DATA_SOURCES:
            problems.append(f"data.source={self.source!r} is not one of {list(DATA_SOURCES)}")
        if self.format not in DATA_FORMATS:
            problems.append(f"data.format={self.format!r} is not one of {list(DATA_FORMATS)}")
        if self.padding not in PADDINGS:
            problems.append(f"data.padding={self.padding!r} is not one of {list(PADDINGS)}")
        if self.source in ("s1k", "json") and not self.path:
            problems.append(f"data.path is required for data.source={self.source}")
        if self.max_length < 2:
            problems.append(f"data.max_length={self.max_length} must be >= 2")
        if self.eval_size < 0 or (1 <= self.eval_size and self.eval_size != int(self.eval_size)):
            problems.append(f"data.eval_size={self.eval_size} must be a fraction in [0, 1) or a whole count")
        if self.max_rows is not None and self.max_rows < 1:
            problems.append(f"data.max_rows={self.max_rows} must be >= 1 or null")
        if problems:
            raise ValueError("invalid data config: " + "; ".join(problems))


@dataclass
class SFTLossConfig:
    """The masked-diffusion SFT objective (the ``loss`` node of ``d1rl sft``).

    Attributes:
        normalization: "d1" = Σ CE/t over the micro-batch ÷ its number of answer positions (d1
            dLLMTrainer.compute_loss) or "per_sample" = each row's Σ CE/t ÷ its answer length, averaged (LLaDA
            GUIDELINES.md). Equal at one row per micro-batch (d1's recipe).
        pad_is_target: the EOS padding after the answer is masked/predicted like answer tokens and visible to
            attention (d1/LLaDA: true). False: padding is never a target and is hidden by the attention mask.
        t_eps: t is mapped to (1 − eps)·t + eps so no row has t = 0 (d1 collator: 1e-3).
        eval_t: times of the held-out rows: "linspace" = row i of N gets linspace(0, 1, N)[i] (d1), "random" =
            drawn like training (from a fixed stream, so every evaluation sees the same t and masks).
    """

    normalization: str = "d1"
    pad_is_target: bool = True
    t_eps: float = 1.0e-3
    eval_t: str = "linspace"

    def validate(self) -> None:
        """Raise ``ValueError`` naming the ``loss.<key>`` that is not allowed."""
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"loss.normalization={self.normalization!r} is not one of {list(NORMALIZATIONS)}")
        if self.eval_t not in EVAL_T:
            raise ValueError(f"loss.eval_t={self.eval_t!r} is not one of {list(EVAL_T)}")
        if not 0.0 <= self.t_eps < 1.0:
            raise ValueError(f"loss.t_eps={self.t_eps} must be in [0, 1)")


@dataclass
class SFTJobConfig:
    """The whole ``d1rl sft`` job (primary config ``configs/sft.yaml``).

    Attributes:
        model: the model to fine-tune (``model=`` group, :class:`d1rl.models.ModelConfig`; LoRA via model.lora).
        trainer: optimiser/schedule/checkpoint settings (``trainer=`` group).
        logger: trackers and metrics file (``logger=`` group).
        data: the SFT data (``data=`` group).
        loss: the masked-diffusion loss options.
        task: the task used when data.source=task (``task=`` group; default: the synthetic task from its
            generator).
        output_dir: run folder: checkpoints/, metrics.jsonl, final/ (must be the same on every rank).
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    data: SFTDataConfig = field(default_factory=SFTDataConfig)
    loss: SFTLossConfig = field(default_factory=SFTLossConfig)
    task: TaskConfig = field(default_factory=lambda: TaskConfig(name="synthetic", source="synthetic"))
    output_dir: str = "runs/sft"
