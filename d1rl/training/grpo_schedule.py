"""Where the diffu-GRPO loop is, derived from the optimizer step and the seed alone (no model state).

One *rollout step* samples a batch of completions and is followed by μ = ``num_iterations`` optimizer steps over
that same buffered batch (each optimizer step = one pass over the buffer, split into gradient-accumulation
micro-batches). Everything that decides "which rollout, which inner iteration, which prompts" is a function of the
optimizer-step counter and the seed, so a resumed run needs no extra sampler state: the checkpoint's global step
says where we are.

Why the optimizer step and not a micro-batch counter: d1 takes the inner-iteration index as
``micro_batch_counter % μ``; with gradient accumulation 2 and even μ each buffered micro-batch then sees only μ/2
distinct estimator masks, each twice (d1-reference §2.6, bug 1). Here inner iteration ``k = optimizer_step % μ`` is
shared by every micro-batch of that optimizer step, so the μ passes over a batch use μ distinct masks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StepPosition:
    """Position of one optimizer step inside the rollout / inner-iteration loop.

    Attributes:
        optimizer_step: 0-based index of the optimizer step about to run (= optimizer steps already completed).
        rollout_step: index of the rollout batch this step trains on (``optimizer_step // μ``).
        inner_iteration: k in [0, μ): which pass over the buffered batch (``optimizer_step % μ``).
        num_iterations: μ.
    """

    optimizer_step: int
    rollout_step: int
    inner_iteration: int
    num_iterations: int

    @property
    def needs_rollout(self) -> bool:
        """True when this step starts a new rollout batch (generation + scoring happen before it)."""
        return self.inner_iteration == 0


def step_position(optimizer_step: int, num_iterations: int) -> StepPosition:
    """Map an optimizer-step counter to (rollout step, inner iteration)."""
    if num_iterations < 1:
        raise ValueError(f"algorithm.num_iterations must be >= 1, got {num_iterations}")
    if optimizer_step < 0:
        raise ValueError(f"optimizer step must be >= 0, got {optimizer_step}")
    return StepPosition(
        optimizer_step=optimizer_step,
        rollout_step=optimizer_step // num_iterations,
        inner_iteration=optimizer_step % num_iterations,
        num_iterations=num_iterations,
    )


def check_shared_mask_layout(micro_batch_size: int, num_generations: int) -> None:
    """``algorithm.share_prompt_mask`` needs every micro-batch to hold whole groups of ``num_generations``.

    A shared prompt mask means one model input per prompt, so all G completions of a prompt must be in the same
    forward/backward: with groups contiguous in the buffer and micro-batches cut every ``micro_batch_size`` rows,
    that is exactly ``micro_batch_size % G == 0`` (whole groups per process is checked by :class:`BatchGeometry`).
    """
    if micro_batch_size % num_generations:
        raise ValueError(
            f"algorithm.share_prompt_mask=true needs trainer.per_device_train_batch_size ({micro_batch_size}) to be "
            f"a multiple of algorithm.num_generations ({num_generations}), so that the completions of each prompt "
            "share one micro-batch (d1: 6 with 6 generations); change either key or set "
            "algorithm.share_prompt_mask=false"
        )


@dataclass(frozen=True)
class BatchGeometry:
    """How one rollout batch is shaped on each process, checked once at start-up.

    d1 (§2.6/§2.7): per-device micro-batch 6 completions, num_generations 6, gradient accumulation 2, 8 GPUs →
    each GPU holds 2 prompts × 6 completions = 12 completions, the global batch is 16 prompts (96 completions) per
    optimizer step. We keep every group of ``num_generations`` completions of a prompt on ONE process, so group
    advantages never need another rank's completions (rewards are still gathered for logging and "batch" scaling).

    Attributes:
        num_generations: G, completions per prompt.
        micro_batch_size: completions per forward/backward (trainer per-device batch size).
        grad_accum: micro-batches per optimizer step.
        world_size: number of processes.
        whole_groups_per_micro_batch: require each micro-batch to hold whole groups (shared prompt mask).
    """

    num_generations: int
    micro_batch_size: int
    grad_accum: int
    world_size: int = 1
    whole_groups_per_micro_batch: bool = False

    def __post_init__(self) -> None:
        for name in ("num_generations", "micro_batch_size", "grad_accum", "world_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.completions_per_process % self.num_generations:
            raise ValueError(
                "per-device batch size × gradient_accumulation_steps "
                f"({self.micro_batch_size} × {self.grad_accum} = {self.completions_per_process}) must be a multiple "
                f"of algorithm.num_generations ({self.num_generations}) so that every prompt's group of completions "
                "stays on one process (d1: 6 × 2 with 6 generations)"
            )
        if self.whole_groups_per_micro_batch:
            check_shared_mask_layout(self.micro_batch_size, self.num_generations)

    @property
    def group_size(self) -> int:
        """Rows that share one estimator input: num_generations with a shared prompt mask, else 1."""
        return self.num_generations if self.whole_groups_per_micro_batch else 1

    @property
    def completions_per_process(self) -> int:
        """Completions buffered per process per rollout step."""
        return self.micro_batch_size * self.grad_accum

    @property
    def prompts_per_process(self) -> int:
        """Distinct prompts sampled per process per rollout step."""
        return self.completions_per_process // self.num_generations

    @property
    def prompts_per_step(self) -> int:
        """Distinct prompts per rollout step over all processes (d1: 16)."""
        return self.prompts_per_process * self.world_size

    def micro_batch_slices(self) -> list[slice]:
        """Slices of the local buffer, one per gradient-accumulation micro-batch, in order."""
        m = self.micro_batch_size
        return [slice(i * m, (i + 1) * m) for i in range(self.grad_accum)]


class PromptSchedule:
    """Stateless prompt order: which dataset rows each process uses at each rollout step.

    The engine's :class:`~d1rl.training.batching.GlobalBatchSchedule` over the ``pool`` of usable rows (the train
    split minus the validation hold-out): one seeded permutation per epoch, each rollout step takes the next
    ``prompts_per_process × world_size`` rows and each rank its own slice; rows left over at the end of an epoch
    wait for a later permutation, like the full batches of d1's TRL RepeatRandomSampler (whose exact order is not
    reproduced). Everything is a function of (seed, rollout step), so resume needs only the step counter.
    """

    def __init__(self, pool: list[int], prompts_per_process: int, *, world_size: int = 1, rank: int = 0,
                 seed: int = 42) -> None:
        from d1rl.training.batching import GlobalBatchSchedule

        if not pool:
            raise ValueError("no training prompts left (the dataset is empty or the validation hold-out takes all)")
        self.pool = list(pool)
        self._batches = GlobalBatchSchedule(
            len(self.pool), per_device_batch=prompts_per_process, world_size=world_size, rank=rank, grad_accum=1,
            seed=seed,
        )

    @property
    def steps_per_epoch(self) -> int:
        """Rollout steps per pass over the pool."""
        return self._batches.steps_per_epoch

    def indices(self, rollout_step: int) -> list[int]:
        """Dataset indices of this rank's prompts at ``rollout_step``."""
        from d1rl.training.batching import DataPosition

        epoch, step = divmod(rollout_step, self.steps_per_epoch)
        return [self.pool[j] for j in self._batches.micro_batches(DataPosition(epoch, step))[0]]

    def epoch_of(self, rollout_step: int) -> float:
        """Epochs completed after rollout ``rollout_step`` (for logging)."""
        return (rollout_step + 1) / self.steps_per_epoch


def split_holdout(num_rows: int, holdout_size: int, seed: int) -> tuple[list[int], list[int]]:
    """Split row indices [0, num_rows) into (training pool, held-out validation rows), seeded.

    The held-out rows come from the TRAIN split (never the test split) and are excluded from RL prompts, so the
    periodic validation accuracy measures generalisation rather than memorisation.
    """
    if holdout_size < 0:
        raise ValueError(f"validation.holdout_size must be >= 0, got {holdout_size}")
    if holdout_size >= num_rows:
        raise ValueError(
            f"validation.holdout_size={holdout_size} leaves no training prompts (train split has {num_rows} rows)"
        )
    import torch

    from d1rl.training.batching import keyed_generator

    perm = torch.randperm(num_rows, generator=keyed_generator(seed, "grpo-validation-holdout")).tolist()
    held = sorted(perm[:holdout_size])
    held_set = set(held)
    return [i for i in range(num_rows) if i not in held_set], held
