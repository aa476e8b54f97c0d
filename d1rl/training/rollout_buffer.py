"""The per-process buffer of one rollout batch, reused by the μ optimizer passes that follow it.

It holds what the loss needs (sequences, masks, advantages) and the old-policy log-probs of every inner iteration
whose mask differs from the current pass. It is part of a checkpoint: a run killed between two inner iterations
resumes on the same batch (the model that generated it is gone, so it cannot be regenerated).

Old log-probs: PPO's ratio needs log π_θold, the policy that sampled the batch. For inner iteration 0 the
parameters have not moved yet, so ``old = current.detach()`` (exactly ρ = 1, and no extra forward). For k ≥ 1 the
parameters have moved, so the old log-probs under mask k must be computed BEFORE the first update — once per
rollout, one no-grad pass per mask, and only for masks that are actually used (d1 precomputes all μ, half of which
its iteration-index bug never uses, §2.6). Reference log-probs do not depend on θ and are computed lazily, in the
pass that uses them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class RolloutBuffer:
    """One rollout batch on one process (N = prompts_per_process × num_generations rows, groups contiguous).

    Attributes:
        rollout_step: which rollout produced it.
        input_ids: (N, P + G) prompt (left-padded) + completion ids.
        attention_mask: (N, P + G) 1 = real token, or None when attention masks are off (d1 mode).
        prompt_length: P, the padded prompt width.
        completion_mask: (N, G) 1 up to and including the first EOS.
        advantages: (N,) float32.
        rewards: (N,) total reward of each local completion (for logging).
        old_logps: inner iteration k → (N, G) float32 old-policy log-probs under mask k (k ≥ 1 only).
    """

    rollout_step: int
    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    prompt_length: int
    completion_mask: torch.Tensor
    advantages: torch.Tensor
    rewards: torch.Tensor
    old_logps: dict[int, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, length = self.input_ids.shape
        gen = length - self.prompt_length
        if gen < 1:
            raise ValueError(f"buffer has no completion tokens (length {length}, prompt length {self.prompt_length})")
        if self.completion_mask.shape != (n, gen):
            raise ValueError(f"completion_mask shape {tuple(self.completion_mask.shape)} != {(n, gen)}")
        if self.advantages.shape != (n,) or self.rewards.shape != (n,):
            raise ValueError("advantages and rewards must be (N,)")
        if self.attention_mask is not None and self.attention_mask.shape != self.input_ids.shape:
            raise ValueError("attention_mask shape must equal input_ids shape")

    @property
    def size(self) -> int:
        return self.input_ids.shape[0]

    @property
    def completion_ids(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_length :]

    def micro_batch(self, rows: slice) -> dict[str, Any]:
        """Tensors of one gradient-accumulation micro-batch."""
        return {
            "input_ids": self.input_ids[rows],
            "attention_mask": None if self.attention_mask is None else self.attention_mask[rows],
            "completion_mask": self.completion_mask[rows],
            "advantages": self.advantages[rows],
        }

    def state_dict(self) -> dict[str, Any]:
        """CPU tensors + ints, for ``torch.save`` inside a checkpoint."""
        state: dict[str, Any] = {
            "rollout_step": self.rollout_step,
            "prompt_length": self.prompt_length,
            "input_ids": self.input_ids.cpu(),
            "attention_mask": None if self.attention_mask is None else self.attention_mask.cpu(),
            "completion_mask": self.completion_mask.cpu(),
            "advantages": self.advantages.cpu(),
            "rewards": self.rewards.cpu(),
            "old_logps": {int(k): v.cpu() for k, v in self.old_logps.items()},
        }
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], device: torch.device | str = "cpu") -> "RolloutBuffer":
        def dev(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return cls(
            rollout_step=int(state["rollout_step"]),
            input_ids=dev(state["input_ids"]),
            attention_mask=dev(state["attention_mask"]),
            prompt_length=int(state["prompt_length"]),
            completion_mask=dev(state["completion_mask"]),
            advantages=dev(state["advantages"]),
            rewards=dev(state["rewards"]),
            old_logps={int(k): dev(v) for k, v in state["old_logps"].items()},
        )
