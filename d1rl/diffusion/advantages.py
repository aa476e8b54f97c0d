"""Group-relative advantages for GRPO-style training (d1-reference.md §2.4).

Rewards arrive as one scalar per completion, ordered so that the ``num_generations`` completions of one prompt are
consecutive (TRL's RepeatRandomSampler layout). The advantage is the reward minus its group mean. d1 does NOT
divide by the group std (paper Eq. 2 / Dr. GRPO: the std scaling biases the gradient towards easy or hopeless
prompts); TRL's "group" and "batch" scalings are offered by name for comparison.

Missing rewards: a reward function may return ``None`` for a completion, which d1/TRL turn into NaN; the total
reward is then the NaN-ignoring weighted sum over reward functions (:func:`combine_rewards`), so a completion whose
every function returned None gets 0. :func:`group_advantages` itself requires finite rewards and says so when not.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch

AdvantageScale = Literal["none", "group", "batch"]

__all__ = ["AdvantageScale", "combine_rewards", "group_advantages"]


def combine_rewards(
    rewards_per_func: torch.Tensor, weights: Sequence[float] | torch.Tensor | None = None
) -> torch.Tensor:
    """Total reward per completion: ``nansum_f(w_f · r_f)`` over reward functions (d1/TRL; weights default to 1).

    Args:
        rewards_per_func: (N, F) rewards, NaN where a function returned None.
        weights: F weights, default all 1.
    """
    if rewards_per_func.dim() != 2:
        raise ValueError(f"rewards_per_func must be (N, F), got shape {tuple(rewards_per_func.shape)}")
    n_funcs = rewards_per_func.shape[1]
    if weights is None:
        w = torch.ones(n_funcs, dtype=rewards_per_func.dtype, device=rewards_per_func.device)
    else:
        w = torch.as_tensor(weights, dtype=rewards_per_func.dtype, device=rewards_per_func.device)
        if w.shape != (n_funcs,):
            raise ValueError(f"got {w.numel()} reward weights for {n_funcs} reward functions")
    return torch.nansum(rewards_per_func * w, dim=1)


def group_advantages(
    rewards: torch.Tensor,
    num_generations: int,
    scale: AdvantageScale = "none",
    eps: float = 1e-4,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Advantages ``A_i = r_i − mean(group(i))``, optionally divided by ``(std + eps)``.

    Args:
        rewards: (N,) total rewards, N a multiple of ``num_generations``, groups contiguous. In distributed training
            pass the rewards gathered from all processes (as d1 does) and keep your own slice of the result.
        num_generations: completions per prompt (G ≥ 2; a group of one has no baseline).
        scale: ``"none"`` (d1, paper Eq. 2), ``"group"`` (TRL: divide by the group's unbiased std + eps) or
            ``"batch"`` (TRL: divide by the unbiased std of all N rewards + eps).
        eps: added to the std before dividing (TRL: 1e-4).

    Returns:
        ``(advantages (N,), stats)``; stats (detached 0-dim tensors) as d1 logs them: ``reward`` (mean reward),
        ``reward_std`` (mean over groups of the unbiased group std), ``zero_std_ratio`` (fraction of groups with
        std < 1e-6, i.e. groups that carry no learning signal).
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (N,), got shape {tuple(rewards.shape)}")
    if num_generations < 2:
        raise ValueError(f"num_generations must be >= 2 for group-relative advantages, got {num_generations}")
    n = rewards.shape[0]
    if n % num_generations != 0:
        raise ValueError(f"number of rewards {n} is not a multiple of num_generations={num_generations}")
    if not bool(torch.isfinite(rewards).all()):
        raise ValueError("rewards contain NaN/inf; combine per-function rewards with combine_rewards (nansum) first")
    if not rewards.is_floating_point():
        rewards = rewards.float()
    grouped = rewards.view(-1, num_generations)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, keepdim=True)  # unbiased, as torch/TRL/d1
    adv = grouped - mean
    if scale == "group":
        adv = adv / (std + eps)
    elif scale == "batch":
        adv = adv / (rewards.std() + eps)
    elif scale != "none":
        raise ValueError(f"unknown advantage scale {scale!r}; expected 'none', 'group' or 'batch'")
    stats = {
        "reward": rewards.mean().detach(),
        "reward_std": std.mean().detach(),
        "zero_std_ratio": (std < 1e-6).float().mean().detach(),
    }
    return adv.reshape(n), stats
