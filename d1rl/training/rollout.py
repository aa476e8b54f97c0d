"""One diffu-GRPO rollout: sample G completions per prompt, score them, and turn rewards into advantages.

The pieces (d1-reference §2.4), each a small function so the trainer reads as the flow of an RL step:

* :func:`sample_completions` — every prompt repeated ``num_generations`` times (groups contiguous), decoded in
  chunks of ``generation_batch_size`` with the shared sampler (:func:`d1rl.sampling.generate`, eval mode);
* :func:`score_completions` — the task's reward functions with TRL's signature ``fn(prompts, completions,
  **columns)``; ``None`` → NaN; a (N, F) matrix;
* :func:`rewards_to_advantages` — rewards gathered over processes, the weighted NaN-ignoring sum, group advantages
  and d1's reward metrics; each process keeps its own slice.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import torch

from d1rl.diffusion import combine_rewards, group_advantages

RewardFn = Callable[..., Sequence[float | None]]


def reward_name(fn: Any) -> str:
    """The name a reward function is logged under (``rewards/<name>``; d1 uses ``fn.__name__``)."""
    inner = getattr(fn, "func", fn)  # functools.partial
    return str(getattr(inner, "__name__", type(inner).__name__))


def sample_completions(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor | None,
    *,
    num_generations: int,
    chunk_size: int,
    sampler_kwargs: Mapping[str, Any],
    generator: torch.Generator | None,
    generate_fn: Callable[..., Any] | None = None,
) -> torch.Tensor:
    """(N·G, P + gen_length) sequences: each prompt row repeated ``num_generations`` times, then decoded.

    ``chunk_size`` completions go through the sampler at once (0 = all). With an attention mask a completion does
    not depend on how the batch is chunked or padded; without one (d1 mode) it does, as in d1.
    """
    if generate_fn is None:
        from d1rl.sampling import generate as generate_fn
    ids = prompt_ids.repeat_interleave(num_generations, dim=0)
    mask = None if prompt_mask is None else prompt_mask.repeat_interleave(num_generations, dim=0)
    total = ids.shape[0]
    step = total if chunk_size <= 0 else chunk_size
    outs = []
    for start in range(0, total, step):
        sl = slice(start, start + step)
        out = generate_fn(
            model,
            ids[sl],
            None if mask is None else mask[sl],
            generator=generator,
            **dict(sampler_kwargs),
        )
        outs.append(out.sequences)
    return torch.cat(outs, dim=0)


def score_completions(
    reward_functions: Sequence[tuple[RewardFn, float]],
    prompts: Sequence[Any],
    completions: Sequence[str],
    columns: Mapping[str, Sequence[Any]],
) -> torch.Tensor:
    """(N, F) float32 rewards, NaN where a function returned None (d1/TRL).

    Scoring itself is the tasks package's TRL-compatible caller (conversational completions, dataset columns of
    each completion's row as keyword arguments); this only lays the values out as a matrix for gathering.
    """
    from d1rl.tasks.rewards import call_reward_functions

    per_function, _ = call_reward_functions(reward_functions, prompts, completions, dict(columns))
    out = torch.full((len(completions), len(reward_functions)), math.nan, dtype=torch.float32)
    for j, values in enumerate(per_function):
        for i, v in enumerate(values):
            if v is not None:
                out[i, j] = v
    return out


def rewards_to_advantages(
    local_rewards_per_func: torch.Tensor,
    weights: Sequence[float],
    names: Sequence[str],
    *,
    num_generations: int,
    scale: str,
    gather: Callable[[torch.Tensor], torch.Tensor],
    rank: int,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """Local advantages (n,), local total rewards (n,) and d1's reward metrics.

    The (n, F) local matrix is gathered over processes (rank order), combined with the weights by NaN-sum, turned
    into group advantages over the GLOBAL batch (groups never straddle processes, so this equals per-process
    computation except for ``scale="batch"``), and rank ``rank`` keeps rows ``[rank·n, (rank+1)·n)``.
    Metrics: ``reward``, ``reward_std``, ``zero_std_ratio`` and ``rewards/<name>`` (NaN-mean per function).
    """
    n = local_rewards_per_func.shape[0]
    all_rpf = gather(local_rewards_per_func)
    total = combine_rewards(all_rpf, list(weights))
    adv, stats = group_advantages(total, num_generations, scale=scale)  # type: ignore[arg-type]
    metrics = {k: float(v) for k, v in stats.items()}
    for j, name in enumerate(names):
        col = all_rpf[:, j]
        finite = col[~torch.isnan(col)]
        metrics[f"rewards/{name}"] = float(finite.mean()) if finite.numel() else math.nan
    sl = slice(rank * n, (rank + 1) * n)
    return adv[sl].clone(), total[sl].clone(), metrics
