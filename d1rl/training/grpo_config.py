"""Config schema of diffu-GRPO: the ``algorithm=`` group and the ``validation`` node of ``d1rl train``.

Defaults are the values d1 actually ran with (d1-reference §2.7: ``slurm_scripts/train.yaml`` + sbatch files), except
where d1's code has a bug we fix by default; each such field says so. Optimizer, schedule, batch size, accumulation,
clipping, steps and checkpointing belong to the engine's ``trainer=`` group; the sampler used for rollouts is the
``sampler=`` group (d1 rollout preset: 256 tokens, block 32, 128 steps, temperature 0.9).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from d1rl.diffusion.model_head import HEAD_MODES
from d1rl.models import ModelConfig
from d1rl.sampling.config import SamplerConfig
from d1rl.tasks.config import TaskConfig
from d1rl.training.config import LoggerConfig, TrainerConfig

PROMPT_OVERFLOW = ("error", "truncate_question", "skip")
ADVANTAGE_SCALES = ("none", "group", "batch")
LOSS_AGGREGATIONS = ("token_mean", "sequence_mean", "constant")
PROMPT_STYLES = ("train", "eval")
GRADE_MODES = ("d1", "robust")


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{key}={value!r} is not one of {list(choices)}")


@dataclass
class GRPOConfig:
    """diffu-GRPO hyper-parameters (the ``algorithm=`` group; preset ``configs/algorithm/diffu_grpo.yaml``).

    Attributes:
        name: algorithm name, "diffu_grpo" (the only one so far).
        num_generations: G completions sampled per prompt (d1 train.yaml: 6).
        num_iterations: μ optimizer passes over each rollout batch (d1 sbatch: gsm8k/math 12, countdown/sudoku 8;
            TRL default 1). Inner iteration k = optimizer_step % μ, NOT d1's micro-batch counter (§2.6 bug).
        beta: KL coefficient of the k3 estimator against the reference policy (d1 train.yaml: 0.04). 0 loads no
            reference model at all.
        epsilon: lower clip range ε of the ratio (d1 train.yaml: 0.5; TRL default 0.2).
        epsilon_high: upper clip range; None = epsilon (d1: symmetric).
        estimator: log-prob estimator name in d1rl.diffusion's registry (d1: "one_step", mean-field).
        p_mask_prompt: probability of masking each prompt token in the estimator (d1 train.yaml: 0.15; config
            default 0.3).
        random_masking: True = a fresh estimator mask per inner iteration (d1 train.yaml: True); False = the same
            mask for every inner iteration (d1 uses seed 42 then).
        advantage_scale: group-advantage normalisation: "none" = r − group mean (d1 / paper Eq. 2, no std),
            "group" = divide by group std, "batch" = divide by batch std.
        loss_aggregation: how per-token losses are averaged: "token_mean" = Σ over tokens of the micro-batch / Σ
            completion mask (d1 code); "sequence_mean" = per-sequence mean then mean (paper Eq. 3/4);
            "constant" = Σ / (batch × max completion length) (Dr. GRPO).
        max_prompt_length: prompt token budget after the chat template (d1 train.yaml: 200).
        prompt_overflow: what to do with a prompt longer than max_prompt_length when d1_compat_truncation is off:
            "error" (default; fail naming the row), "truncate_question" (shorten the question text, keep the chat
            template and instructions), "skip" (leave the row out of training, counted in the log).
        d1_compat_truncation: True = keep only the LAST max_prompt_length tokens like d1 (§2.4; this can cut the
            BOS, the user header and the instructions of long prompts, bug 12). Off by default.
        use_attention_mask: pass the padding attention mask to the sampler and the estimator (d1: none, so left
            padding is attended, bug 11). Default on.
        generation_batch_size: completions generated per sampler call (d1 generation_batch_size: 6); 0 = the whole
            local rollout batch at once.
        old_logprob_eval_mode: compute old-policy log-probs in eval mode (no LoRA dropout), as the rollouts
            themselves (sampler.force_eval). d1 computes them in train mode, so dropout alone makes ρ ≠ 1 (bug 9).
        log_completions: number of completions per rollout step appended to ``completions.jsonl`` (rank 0).
        share_prompt_mask: ESTIMATOR CHANGE vs d1 (off by default = d1): draw the estimator's random prompt mask
            once per prompt instead of once per completion, so the num_generations completions of a prompt share
            one model input and ONE forward/backward per prompt serves the group (old, reference and current
            log-probs alike; num_generations x fewer sequences through the model). The G mask draws of a group are
            then identical instead of independent. Needs trainer.per_device_train_batch_size to be a multiple of
            num_generations (whole groups per micro-batch).
        logprob_head: how the estimator evaluates the output head (ours; d1 always computes full (B, L, V)
            logits and a full log-softmax): "auto" (fused hidden -> head -> log-softmax for LLaDA, else
            logits_to_keep, else full logits with a warning), "fused", "keep" or "full". Same numbers, less memory.
    """

    name: str = "diffu_grpo"
    num_generations: int = 6
    num_iterations: int = 12
    beta: float = 0.04
    epsilon: float = 0.5
    epsilon_high: Optional[float] = None
    estimator: str = "one_step"
    p_mask_prompt: float = 0.15
    random_masking: bool = True
    advantage_scale: str = "none"
    loss_aggregation: str = "token_mean"
    max_prompt_length: int = 200
    prompt_overflow: str = "error"
    d1_compat_truncation: bool = False
    use_attention_mask: bool = True
    generation_batch_size: int = 6
    old_logprob_eval_mode: bool = True
    log_completions: int = 2
    share_prompt_mask: bool = False
    logprob_head: str = "auto"

    def __post_init__(self) -> None:
        if self.name != "diffu_grpo":
            raise ValueError(f"algorithm.name={self.name!r}: only 'diffu_grpo' is implemented")
        if self.num_generations < 2:
            raise ValueError(
                f"algorithm.num_generations={self.num_generations}: group advantages need at least 2 completions "
                "per prompt"
            )
        if self.num_iterations < 1:
            raise ValueError(f"algorithm.num_iterations={self.num_iterations} must be >= 1")
        if self.beta < 0:
            raise ValueError(f"algorithm.beta={self.beta} must be >= 0")
        if not self.epsilon > 0:
            raise ValueError(f"algorithm.epsilon={self.epsilon} must be > 0")
        if self.epsilon_high is not None and not self.epsilon_high > 0:
            raise ValueError(f"algorithm.epsilon_high={self.epsilon_high} must be > 0 (or null)")
        if not 0.0 <= self.p_mask_prompt <= 1.0:
            raise ValueError(f"algorithm.p_mask_prompt={self.p_mask_prompt} must be in [0, 1]")
        if self.max_prompt_length < 1:
            raise ValueError(f"algorithm.max_prompt_length={self.max_prompt_length} must be >= 1")
        if self.generation_batch_size < 0:
            raise ValueError(f"algorithm.generation_batch_size={self.generation_batch_size} must be >= 0")
        if self.log_completions < 0:
            raise ValueError(f"algorithm.log_completions={self.log_completions} must be >= 0")
        _check_choice("algorithm.advantage_scale", self.advantage_scale, ADVANTAGE_SCALES)
        _check_choice("algorithm.loss_aggregation", self.loss_aggregation, LOSS_AGGREGATIONS)
        _check_choice("algorithm.prompt_overflow", self.prompt_overflow, PROMPT_OVERFLOW)
        _check_choice("algorithm.logprob_head", self.logprob_head, HEAD_MODES)


@dataclass
class ValidationConfig:
    """Periodic held-out validation during RL (the ``validation`` node of ``d1rl train``).

    d1 has none: it evaluated test-set checkpoints afterwards and reported the best one (bug 20). Here a few rows of
    the TRAIN split are held out from RL prompts and graded every ``trainer.eval_steps`` optimizer steps and after
    the last one; the test split is never touched.

    Attributes:
        holdout_size: rows of the (task-shuffled) train split held out from RL prompts, chosen with the trainer
            seed; 0 = no validation.
        num_items: rows of the hold-out graded each time (<= holdout_size; 0 = all of it).
        batch_size: prompts per sampler call on each process.
        temperature: sampling temperature (0 = greedy, as d1 eval).
        gen_length: completion length; null = the rollout sampler's.
        steps: diffusion steps; null = gen_length / 2 (d1 eval protocol).
        prompt_style: "train" = the task's training prompt (what the policy is trained on), "eval" = the task's
            evaluation prompt + prefill (d1 eval; differs from training, bug 14).
        grade_mode: the task grader mode, "robust" or "d1".
    """

    holdout_size: int = 0
    num_items: int = 0
    batch_size: int = 8
    temperature: float = 0.0
    gen_length: Optional[int] = None
    steps: Optional[int] = None
    prompt_style: str = "train"
    grade_mode: str = "robust"

    def __post_init__(self) -> None:
        for key in ("holdout_size", "num_items"):
            if getattr(self, key) < 0:
                raise ValueError(f"validation.{key}={getattr(self, key)} must be >= 0")
        if self.batch_size < 1:
            raise ValueError(f"validation.batch_size={self.batch_size} must be >= 1")
        if self.num_items > self.holdout_size:
            raise ValueError(
                f"validation.num_items={self.num_items} exceeds validation.holdout_size={self.holdout_size}"
            )
        if self.temperature < 0:
            raise ValueError(f"validation.temperature={self.temperature} must be >= 0")
        _check_choice("validation.prompt_style", self.prompt_style, PROMPT_STYLES)
        _check_choice("validation.grade_mode", self.grade_mode, GRADE_MODES)

    @property
    def enabled(self) -> bool:
        return self.holdout_size > 0


@dataclass
class TrainJobConfig:
    """The whole ``d1rl train`` job (primary config ``configs/train.yaml``; d1 recipes in ``recipes/d1/``).

    Attributes:
        model: what to train (``model=`` group; LoRA / 4-bit / SFT checkpoint or adapter are model settings).
        task: prompts, reward functions and grader (``task=`` group).
        sampler: rollout decoding (``sampler=`` group; d1: the ``d1_rollout`` preset).
        algorithm: diffu-GRPO hyper-parameters (``algorithm=`` group, :class:`GRPOConfig`).
        trainer: optimiser, schedule, batch/accumulation, steps, checkpoints (``trainer=`` group; d1: ``d1_grpo``).
            ``per_device_train_batch_size`` is the micro-batch in completions, and per-device micro-batch ×
            accumulation must hold whole groups of ``num_generations`` (d1: 6 × 2, 6 generations).
        logger: metrics sinks (``logger=`` group).
        validation: periodic held-out validation (:class:`ValidationConfig`).
        output_dir: run folder (metrics.jsonl, completions.jsonl, checkpoints/, final/); deterministic so that
            every rank of an ``accelerate launch`` agrees on it.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=lambda: TaskConfig(name="synthetic"))
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    algorithm: GRPOConfig = field(default_factory=GRPOConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    output_dir: str = "runs/train"

    def __post_init__(self) -> None:
        from d1rl.training.grpo_schedule import check_shared_mask_layout

        if self.algorithm.share_prompt_mask:
            check_shared_mask_layout(self.trainer.per_device_train_batch_size, self.algorithm.num_generations)


__all__ = ["GRPOConfig", "TrainJobConfig", "ValidationConfig"]
