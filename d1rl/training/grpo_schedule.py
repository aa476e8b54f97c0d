"""Where the diffu-GRPO loop is, derived from the optimizer step alone (pure Python, no torch state).

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
from functools import lru_cache


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
    """

    num_generations: int
    micro_batch_size: int
    grad_accum: int
    world_size: int = 1

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

    Rows ``pool`` (dataset indices available for training, i.e. without the validation hold-out) are visited in a
    fresh seeded permutation every epoch, as one endless stream; rollout step r takes the next ``prompts_per_step``
    items of the stream and process ``rank`` takes its contiguous share. Everything is derived from
    (seed, rollout step), so resume needs only the step counter. (d1 uses TRL's RepeatRandomSampler, seed 42, which
    also visits a random permutation; the exact order is not reproduced.)
    """

    def __init__(self, pool: list[int], prompts_per_step: int, seed: int) -> None:
        if not pool:
            raise ValueError("no training prompts left (the dataset is empty or the validation hold-out takes all)")
        if prompts_per_step < 1:
            raise ValueError(f"prompts_per_step must be >= 1, got {prompts_per_step}")
        self.pool = list(pool)
        self.prompts_per_step = prompts_per_step
        self.seed = seed

    @property
    def steps_per_epoch(self) -> float:
        return len(self.pool) / self.prompts_per_step

    def _permutation(self, epoch: int) -> list[int]:
        return _seeded_permutation(len(self.pool), self.seed, epoch)

    def indices(self, rollout_step: int, rank: int = 0, world_size: int = 1) -> list[int]:
        """Dataset indices of the prompts of ``rank`` at ``rollout_step``."""
        if self.prompts_per_step % world_size:
            raise ValueError(f"prompts_per_step {self.prompts_per_step} not divisible by world size {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        per_rank = self.prompts_per_step // world_size
        n = len(self.pool)
        start = rollout_step * self.prompts_per_step + rank * per_rank
        out = []
        for pos in range(start, start + per_rank):
            epoch, offset = divmod(pos, n)
            out.append(self.pool[self._permutation(epoch)[offset]])
        return out

    def epoch_of(self, rollout_step: int) -> float:
        """Fractional epoch reached after ``rollout_step`` + 1 rollouts (for logging)."""
        return (rollout_step + 1) * self.prompts_per_step / len(self.pool)


@lru_cache(maxsize=8)
def _seeded_permutation(n: int, seed: int, epoch: int) -> list[int]:
    import torch

    from d1rl.training.batching import keyed_generator

    return torch.randperm(n, generator=keyed_generator(seed, "grpo-prompts", epoch)).tolist()


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
    perm = _seeded_permutation(num_rows, seed, -1)  # "epoch" -1: a stream no epoch uses
    held = sorted(perm[:holdout_size])
    held_set = set(held)
    return [i for i in range(num_rows) if i not in held_set], held
