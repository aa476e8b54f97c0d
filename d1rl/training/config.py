"""Config schemas of the training engine: the ``trainer=`` group and the ``logger=`` group.

Both are shared by SFT and diffu-GRPO. The dataclass defaults are d1's masked-SFT values (d1-reference.md §4,
``SFT/sft_train.py`` + HF ``TrainingArguments`` defaults of transformers 4.49); the RL values live in the preset
``configs/trainer/d1_grpo.yaml`` (§2.7). Because the groups merge into these structured nodes, an unknown key or a
wrong type fails at start-up with Hydra's message naming the key; :meth:`TrainerConfig.validate` then checks values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine")
MIXED_PRECISION = ("no", "bf16", "fp16")


@dataclass
class TrainerConfig:
    """Optimiser, schedule, batching, checkpointing and resume settings (the ``trainer=`` group).

    Attributes:
        learning_rate: peak learning rate of AdamW (d1 SFT: 1e-5; d1 RL: 3e-6).
        lr_scheduler: "constant", "constant_with_warmup", "linear" or "cosine" (d1 SFT: HF default "linear").
        warmup_steps: linear warm-up length in optimizer steps; wins over warmup_ratio when > 0 (HF default 0).
        warmup_ratio: warm-up as a fraction of the total optimizer steps, rounded up (d1 SFT 0.0; d1 RL 1e-4).
        min_lr_ratio: floor of the cosine schedule as a fraction of learning_rate (0.0 = HF cosine).
        adam_beta1: AdamW β1 (HF default 0.9, used by d1 SFT and RL).
        adam_beta2: AdamW β2 (HF default 0.999 for d1 SFT; d1 RL sets 0.99).
        adam_epsilon: AdamW ε (HF default 1e-8).
        weight_decay: decoupled weight decay (d1 SFT and RL: 0.1).
        decay_norms_and_biases: also decay 1-D parameters (biases, norm weights). HF excludes biases and
            nn.LayerNorm weights; LLaDA's RMSNorm is not an nn.LayerNorm, so d1 decays its weights. False = the
            common "no decay for 1-D parameters" rule; it makes no difference under LoRA (only adapters train).
        max_grad_norm: global gradient-norm clip; 0 or negative = no clipping, norm still logged (d1 SFT: 1.0,
            d1 RL: 0.2). Under DeepSpeed, clipping is DeepSpeed's: keep its `gradient_clipping` equal to this.
        per_device_train_batch_size: sequences per process per micro-batch (d1 SFT: 1).
        per_device_eval_batch_size: sequences per process per evaluation forward (HF default 8).
        gradient_accumulation_steps: micro-batches per optimizer step (d1 SFT: 4).
        num_train_epochs: passes over the training set (d1 SFT: 20). Ignored when max_steps > 0.
        max_steps: total optimizer steps; > 0 overrides num_train_epochs (HF default -1).
        mixed_precision: "no", "bf16" or "fp16" autocast through Accelerate; overrides the launcher's setting
            (d1 SFT and RL: bf16).
        seed: seed of data order, noise and initialisation (d1: 42).
        save_steps: write a checkpoint every N optimizer steps; 0 = only the final model (d1: 100).
        save_total_limit: keep the newest K checkpoints; 0 = keep all (d1 SFT: 20; d1 RL: 500).
        resume: "auto" = continue from the newest complete checkpoint in <output_dir>/checkpoints if any (else
            start fresh); "never" = start fresh (fails if checkpoints exist, so nothing is overwritten silently);
            or a path to one checkpoint directory. d1 has no resume option (HF default: never).
        eval_steps: evaluate every N optimizer steps; 0 = only at the end (d1 SFT: 100).
        ddp_find_unused_parameters: passed to DistributedDataParallel (HF default under gradient checkpointing
            False).
        ddp_timeout_s: collective timeout in seconds for the process group (HF default 1800).
    """

    learning_rate: float = 1.0e-5
    lr_scheduler: str = "linear"
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    min_lr_ratio: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1.0e-8
    weight_decay: float = 0.1
    decay_norms_and_biases: bool = False
    max_grad_norm: float = 1.0
    per_device_train_batch_size: int = 1
    per_device_eval_batch_size: int = 8
    gradient_accumulation_steps: int = 4
    num_train_epochs: float = 20.0
    max_steps: int = -1
    mixed_precision: str = "bf16"
    seed: int = 42
    save_steps: int = 100
    save_total_limit: int = 20
    resume: str = "auto"
    eval_steps: int = 100
    ddp_find_unused_parameters: bool = False
    ddp_timeout_s: int = 1800

    def validate(self) -> None:
        """Raise ``ValueError`` naming the ``trainer.<key>`` whose value is out of range."""
        problems: list[str] = []
        if self.lr_scheduler not in LR_SCHEDULERS:
            problems.append(f"trainer.lr_scheduler={self.lr_scheduler!r} is not one of {list(LR_SCHEDULERS)}")
        if self.mixed_precision not in MIXED_PRECISION:
            problems.append(f"trainer.mixed_precision={self.mixed_precision!r} is not one of {list(MIXED_PRECISION)}")
        if self.learning_rate < 0:
            problems.append(f"trainer.learning_rate={self.learning_rate} must be >= 0")
        if not 0.0 <= self.warmup_ratio < 1.0:
            problems.append(f"trainer.warmup_ratio={self.warmup_ratio} must be in [0, 1)")
        if self.warmup_steps < 0:
            problems.append(f"trainer.warmup_steps={self.warmup_steps} must be >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            problems.append(f"trainer.min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")
        for key in ("adam_beta1", "adam_beta2"):
            if not 0.0 <= getattr(self, key) < 1.0:
                problems.append(f"trainer.{key}={getattr(self, key)} must be in [0, 1)")
        for key in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            if getattr(self, key) < 1:
                problems.append(f"trainer.{key}={getattr(self, key)} must be >= 1")
        for key in ("save_steps", "save_total_limit", "eval_steps"):
            if getattr(self, key) < 0:
                problems.append(f"trainer.{key}={getattr(self, key)} must be >= 0")
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            problems.append("trainer.max_steps and trainer.num_train_epochs are both <= 0: nothing to train")
        if not self.resume:
            problems.append("trainer.resume is empty; use 'auto', 'never' or a checkpoint path")
        if problems:
            raise ValueError("invalid trainer config: " + "; ".join(problems))


@dataclass
class LoggerConfig:
    """Where metrics go (the ``logger=`` group). A local ``metrics.jsonl`` is always written on the main process.

    Attributes:
        report_to: Accelerate trackers to enable, any of "wandb", "tensorboard" (d1: wandb; default none so runs
            work offline without accounts).
        project: tracker project name (wandb project / tensorboard sub-folder).
        run_name: tracker run name; None = the output folder's name.
        wandb_entity: wandb entity (team); None = the user's default.
        tags: wandb tags.
        logging_steps: log (and average training metrics over) every N optimizer steps (d1 SFT: 2; d1 RL: 1).
        metrics_file: name of the JSONL metrics file inside the output folder.
        progress_bar: show a tqdm bar with ETA on the main process.
    """

    report_to: list[str] = field(default_factory=list)
    project: str = "d1rl"
    run_name: str | None = None
    wandb_entity: str | None = None
    tags: list[str] = field(default_factory=list)
    logging_steps: int = 2
    metrics_file: str = "metrics.jsonl"
    progress_bar: bool = True

    def validate(self) -> None:
        """Raise ``ValueError`` naming the ``logger.<key>`` whose value is not allowed."""
        unknown = [r for r in self.report_to if r not in ("wandb", "tensorboard")]
        if unknown:
            raise ValueError(f"logger.report_to has unknown tracker(s) {unknown}; allowed: wandb, tensorboard")
        if self.logging_steps < 1:
            raise ValueError(f"logger.logging_steps={self.logging_steps} must be >= 1")
        if not self.metrics_file or "/" in self.metrics_file:
            raise ValueError(f"logger.metrics_file={self.metrics_file!r} must be a plain file name")
