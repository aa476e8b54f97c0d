"""AdamW over the trainable parameters and the learning-rate schedules (as multipliers of the peak rate).

The schedules are written as plain ``LambdaLR`` multipliers so their state is one integer (``last_epoch``) that
checkpoints exactly; their shapes follow the Hugging Face schedules d1 used (linear decay to 0 after warm-up;
cosine half-wave; constant with an optional linear warm-up).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from d1rl.training.config import TrainerConfig


def trainable_named_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """Parameters with ``requires_grad`` (for a LoRA model: the adapters only), in registration order."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def build_optimizer(model: torch.nn.Module, cfg: TrainerConfig) -> torch.optim.AdamW:
    """AdamW with decoupled weight decay on the trainable parameters.

    1-D parameters (biases, norm weights) get no decay unless ``cfg.decay_norms_and_biases`` — see
    :class:`~d1rl.training.config.TrainerConfig` for how this relates to d1/HF.
    """
    params = trainable_named_parameters(model)
    if not params:
        raise ValueError("the model has no trainable parameters (requires_grad=False everywhere); nothing to optimise")
    decay = [p for n, p in params if cfg.decay_norms_and_biases or p.ndim >= 2]
    no_decay = [p for n, p in params if not (cfg.decay_norms_and_biases or p.ndim >= 2)]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return torch.optim.AdamW(
        groups,
        lr=cfg.learning_rate,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_epsilon,
    )


def warmup_steps_for(cfg: TrainerConfig, total_steps: int) -> int:
    """Warm-up length: ``warmup_steps`` if set, else ``ceil(warmup_ratio · total_steps)`` (HF's rule)."""
    if cfg.warmup_steps > 0:
        return cfg.warmup_steps
    return math.ceil(cfg.warmup_ratio * total_steps)


def lr_multiplier(name: str, total_steps: int, warmup: int, min_ratio: float = 0.0) -> Callable[[int], float]:
    """The multiplier of the peak learning rate used for optimizer step ``s`` (0-based; s=0 is the first update).

    * constant: 1.
    * constant_with_warmup: s/warmup during warm-up, then 1.
    * linear: warm-up, then decays linearly to 0 at ``total_steps`` (d1 SFT: no warm-up, so step 0 uses the
      full rate and the last step uses lr/total_steps).
    * cosine: warm-up, then half a cosine from 1 to ``min_ratio``.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")

    def warm(s: int) -> float | None:
        if s < warmup:
            return s / max(1, warmup)
        return None

    if name == "constant":
        return lambda s: 1.0
    if name == "constant_with_warmup":
        return lambda s: w if (w := warm(s)) is not None else 1.0
    if name == "linear":

        def linear(s: int) -> float:
            w = warm(s)
            if w is not None:
                return w
            return max(0.0, (total_steps - s) / max(1, total_steps - warmup))

        return linear
    if name == "cosine":

        def cosine(s: int) -> float:
            w = warm(s)
            if w is not None:
                return w
            progress = min(1.0, (s - warmup) / max(1, total_steps - warmup))
            return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

        return cosine
    raise ValueError(f"unknown trainer.lr_scheduler {name!r}")


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainerConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` stepping once per optimizer step with the multiplier of :func:`lr_multiplier`."""
    fn = lr_multiplier(cfg.lr_scheduler, total_steps, warmup_steps_for(cfg, total_steps), cfg.min_lr_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
