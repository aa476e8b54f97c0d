"""The clipped policy objective with a k3 KL penalty (d1-reference.md §2.5), plus the completion mask rule (§2.4).

Per token, with ``ρ = exp(logp − old_logp)`` and the sequence advantage ``A`` broadcast over its tokens:

    ℓ = −min(ρ·A, clip(ρ, 1 − ε, 1 + ε_high)·A) + β·(exp(ref − logp) − (ref − logp) − 1)

Aggregation over the micro-batch (three published choices, selectable so each recipe can reproduce its source):

* ``"token_mean"`` (d1 code, TRL "bnpo"-style): ``Σ ℓ·m / Σ m`` over all tokens of the micro-batch;
* ``"sequence_mean"`` (d1 paper Eq. 3, original GRPO): mean over sequences of each sequence's token mean;
* ``"constant"`` (Dr. GRPO): ``Σ ℓ·m / (B · max_completion_length)``, no length-dependent weighting.
"""

from __future__ import annotations

from typing import Literal

import torch

LossAggregation = Literal["token_mean", "sequence_mean", "constant"]

__all__ = ["LossAggregation", "completion_mask_from_ids", "k3_kl", "policy_loss"]


def completion_mask_from_ids(completion_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """d1/TRL completion mask: 1 up to and INCLUDING the first ``eos_id``, 0 after it; all 1 when no EOS.

    Other end-of-turn tokens (LLaDA's ``<|eot_id|>``) are ordinary tokens under this rule. Returns int64 (B, G).
    """
    if completion_ids.dim() != 2:
        raise ValueError(f"completion_ids must be (B, G), got shape {tuple(completion_ids.shape)}")
    batch, length = completion_ids.shape
    is_eos = completion_ids == eos_id
    first = torch.where(
        is_eos.any(dim=1),
        is_eos.int().argmax(dim=1),  # argmax returns the first maximal index
        torch.full((batch,), length, device=completion_ids.device, dtype=torch.long),
    )
    positions = torch.arange(length, device=completion_ids.device)
    return (positions[None, :] <= first[:, None]).long()


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(π‖π_ref) per token: ``exp(ref − logp) − (ref − logp) − 1`` (≥ 0, 0 iff equal)."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1.0


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor | None,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    completion_mask: torch.Tensor,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    beta: float = 0.04,
    aggregation: LossAggregation = "token_mean",
    max_completion_length: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate + β·KL loss for one micro-batch.

    Args:
        logp: (B, G) current per-token log-probs (with grad).
        old_logp: (B, G) log-probs of the policy that generated the batch, or None = ``logp.detach()`` (μ = 1: ρ ≡ 1).
        ref_logp: (B, G) reference log-probs; may be None when ``beta == 0``.
        advantages: (B,) sequence advantages (or (B, G) per token).
        completion_mask: (B, G) 1/True for tokens that count (see :func:`completion_mask_from_ids`).
        epsilon: lower clip range, ρ ≥ 1 − ε (TRL/d1 default 0.2; d1 recipes use 0.5).
        epsilon_high: upper clip range, ρ ≤ 1 + ε_high (DAPO clip-higher); None = ``epsilon``.
        beta: KL coefficient (d1: 0.04).
        aggregation: ``"token_mean"`` | ``"sequence_mean"`` | ``"constant"`` (module docstring).
        max_completion_length: the constant of ``"constant"``; default G.

    Returns:
        ``(loss, metrics)`` with detached 0-dim metrics, all token means over masked tokens of the micro-batch:
        ``kl`` (k3; computed whenever ``ref_logp`` is given, also with β = 0; 0 without a reference); ``clip_ratio`` (tokens where the clipped branch is active, i.e. the gradient is cut: A > 0 and
        ρ > 1 + ε_high, or A < 0 and ρ < 1 − ε) and its parts ``clip_ratio_low`` / ``clip_ratio_high``;
        ``clip_ratio_d1`` (d1/TRL-dev's flag ``ρ·A < clip(ρ)·A``, which marks the UNclipped branch winning strictly —
        kept only to compare logs with d1); ``ratio_mean``.
    """
    if logp.dim() != 2:
        raise ValueError(f"logp must be (B, G), got shape {tuple(logp.shape)}")
    if completion_mask.shape != logp.shape:
        raise ValueError(f"completion_mask shape {tuple(completion_mask.shape)} != logp shape {tuple(logp.shape)}")
    if epsilon < 0 or (epsilon_high is not None and epsilon_high < 0):
        raise ValueError(f"clip ranges must be >= 0, got epsilon={epsilon}, epsilon_high={epsilon_high}")
    eps_high = epsilon if epsilon_high is None else epsilon_high
    if old_logp is None:
        old_logp = logp.detach()
    elif old_logp.shape != logp.shape:
        raise ValueError(f"old_logp shape {tuple(old_logp.shape)} != logp shape {tuple(logp.shape)}")
    if beta != 0.0 and ref_logp is None:
        raise ValueError(f"beta={beta} != 0 needs ref_logp (pass beta=0 to train without a reference)")
    if advantages.dim() == 1:
        if advantages.shape[0] != logp.shape[0]:
            raise ValueError(f"{advantages.shape[0]} advantages for a batch of {logp.shape[0]} sequences")
        adv = advantages[:, None]
    elif advantages.shape == logp.shape:
        adv = advantages
    else:
        raise ValueError(f"advantages must be (B,) or (B, G), got shape {tuple(advantages.shape)}")
    adv = adv.to(logp.dtype)

    mask = completion_mask.to(logp.dtype)
    ratio = torch.exp(logp - old_logp)
    clipped_ratio = torch.clamp(ratio, 1.0 - epsilon, 1.0 + eps_high)
    unclipped_term = ratio * adv
    clipped_term = clipped_ratio * adv
    per_token = -torch.min(unclipped_term, clipped_term)
    kl = None
    if ref_logp is not None:  # with beta = 0 a given reference is still monitored (metric only)
        if ref_logp.shape != logp.shape:
            raise ValueError(f"ref_logp shape {tuple(ref_logp.shape)} != logp shape {tuple(logp.shape)}")
        kl = k3_kl(logp, ref_logp.to(logp.dtype))
    if beta != 0.0:
        per_token = per_token + beta * kl

    batch, length = logp.shape
    n_tokens = mask.sum().clamp(min=1.0)
    if aggregation == "token_mean":
        loss = (per_token * mask).sum() / n_tokens
    elif aggregation == "sequence_mean":
        loss = ((per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)).mean()
    elif aggregation == "constant":
        denom = length if max_completion_length is None else int(max_completion_length)
        if denom < 1:
            raise ValueError(f"max_completion_length must be >= 1, got {denom}")
        loss = (per_token * mask).sum() / (batch * denom)
    else:
        raise ValueError(
            f"unknown loss aggregation {aggregation!r}; expected 'token_mean', 'sequence_mean' or 'constant'"
        )

    with torch.no_grad():

        def token_mean(x: torch.Tensor) -> torch.Tensor:
            return (x.to(mask.dtype) * mask).sum() / n_tokens

        low = (ratio < 1.0 - epsilon) & (adv < 0)
        high = (ratio > 1.0 + eps_high) & (adv > 0)
        metrics = {
            "kl": token_mean(kl) if kl is not None else torch.zeros((), dtype=logp.dtype, device=logp.device),
            "clip_ratio": token_mean(low | high),
            "clip_ratio_low": token_mean(low),
            "clip_ratio_high": token_mean(high),
            "clip_ratio_d1": token_mean(unclipped_term < clipped_term),
            "ratio_mean": token_mean(ratio),
        }
    return loss, {k: v.detach() for k, v in metrics.items()}
