"""Log-probs of a buffered rollout batch under the old, reference and current policy, with one shared mask.

The estimator's random mask for inner iteration k is drawn ONCE per (rollout step, k, rank) for the whole local
buffer, from ``mask_generator(seed, rollout_step, k, rank)``, and the resulting noised sequence is handed to every
forward of that iteration (old, reference, current) — so the three log-probs compare the same masked inputs by
construction, not by re-seeding a global RNG as d1 does (bug 8).

Reference policy (d1-reference §2.2): with LoRA, the same network with its adapters disabled (PEFT
``disable_adapter``): the hub base, or the merged SFT model for SFT-initialised runs. Without LoRA, a frozen copy of
the initial weights. β = 0 builds none.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Iterator

import torch

from d1rl.diffusion import mask_generator
from d1rl.training.engine import evaluation_mode
from d1rl.training.rollout_buffer import RolloutBuffer


def noised_inputs(
    estimator: Any,
    buffer: RolloutBuffer,
    *,
    seed: int,
    inner_iteration: int,
    rank: int,
    random_masking: bool = True,
    group_size: int = 1,
) -> torch.Tensor:
    """(N, P + G) noised ids of the whole local buffer for inner iteration ``inner_iteration``.

    ``random_masking=False`` uses the mask of iteration 0 for every iteration (d1's fixed-seed mode: same mask for
    all μ passes; unlike d1 it still differs between rollout steps). ``group_size`` = num_generations draws one
    prompt mask per prompt (``algorithm.share_prompt_mask``) from the same keyed generator, so the rows of a group
    are identical.
    """
    k = inner_iteration if random_masking else 0
    gen = mask_generator(int(seed), int(buffer.rollout_step), int(k), int(rank))
    if group_size == 1:  # keep the per-row call exactly as before (estimators without group support)
        return estimator.noise(buffer.input_ids, buffer.prompt_length, gen, buffer.attention_mask)
    return estimator.noise(buffer.input_ids, buffer.prompt_length, gen, buffer.attention_mask, group_size=group_size)


class ReferencePolicy:
    """Log-probs under the reference policy (β > 0 only).

    Modes: ``"disable_adapter"`` (the model is a PEFT model: run it with adapters off), ``"copy"`` (a frozen deep
    copy of the initial model, for full fine-tuning). Always eval mode, no grad.
    """

    def __init__(self, model: torch.nn.Module, mode: str) -> None:
        if mode not in ("disable_adapter", "copy"):
            raise ValueError(f"unknown reference mode {mode!r}")
        self.mode = mode
        if mode == "copy":
            frozen = copy.deepcopy(model)
            frozen.eval()
            frozen.requires_grad_(False)
            self.model = frozen
        else:
            if not hasattr(model, "disable_adapter"):
                raise ValueError("reference mode 'disable_adapter' needs a PEFT model (model.lora.enabled=true)")
            self.model = model

    @classmethod
    def for_model(cls, model: torch.nn.Module, beta: float) -> "ReferencePolicy | None":
        """None when β = 0; adapters-off for a PEFT model; else a frozen copy."""
        if beta == 0:
            return None
        return cls(model, "disable_adapter" if hasattr(model, "disable_adapter") else "copy")

    @contextlib.contextmanager
    def active(self) -> Iterator[torch.nn.Module]:
        """The module to call for reference forwards."""
        with evaluation_mode(self.model):
            if self.mode == "disable_adapter":
                with self.model.disable_adapter():
                    yield self.model
            else:
                yield self.model
