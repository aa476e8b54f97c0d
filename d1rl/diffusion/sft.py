"""Masked-diffusion SFT: forward noising of (prompt, answer) sequences and the 1/t-weighted NELBO loss.

The forward process of a masked diffusion LM replaces every answer token independently with the mask token with
probability ``t`` (one ``t`` per sequence); the model is trained to recover the original tokens at the masked
positions, with the cross-entropy weighted by ``1/t`` (the ELBO weight of the linear schedule).

Two normalisations are offered because the two public references disagree (d1-reference.md §4):

* ``"d1"`` (d1 ``dLLMTrainer.compute_loss``): ``Σ_batch Σ_masked CE/t`` divided by the number of answer positions
  in the batch, ``B·L − Σ prompt_lengths`` (EOS padding counts as answer).
* ``"per_sample"`` (LLaDA GUIDELINES.md): per sequence ``Σ_masked CE / (t · answer_length)``, then the mean over the
  batch. Identical to ``"d1"`` when the batch has one sequence.

Randomness always flows through an explicit ``torch.Generator`` (never a global re-seed). The uniform draws have
the full ``(B, L)`` shape, like d1's collator, so ``torch.Generator().manual_seed(s)`` reproduces d1's masks that
were drawn after ``torch.manual_seed(s)`` on CPU.
"""

from __future__ import annotations

from typing import Literal

import torch

SFTNormalization = Literal["d1", "per_sample"]

__all__ = [
    "SFTNormalization",
    "apply_t_eps",
    "sample_t",
    "linspace_t",
    "noise_for_sft",
    "sft_labels",
    "masked_cross_entropy",
    "reduce_sft_loss",
    "sft_loss",
]


def apply_t_eps(t: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Map raw times ``t ∈ [0, 1]`` to ``(1 − eps)·t + eps`` so no sequence gets ``t = 0`` (which would mask nothing
    and divide the loss by zero).

    The arithmetic stays in ``t``'s dtype: d1 does it in float32, and the float32 rounding of ``t_eff`` is visible in
    its loss at the 2e-8 relative level (fixtures README §3.4), so we keep it bit-compatible.
    """
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"eps must be in [0, 1), got {eps}")
    return (1.0 - eps) * t + eps


def sample_t(
    batch: int,
    generator: torch.Generator | None = None,
    eps: float = 1e-3,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Draw one diffusion time per sequence, ``t ~ U(0, 1)`` mapped through :func:`apply_t_eps` (d1 collator).

    The draw uses ``generator``'s device (CPU generators give the same numbers on every machine) and the result is
    moved to ``device``. d1's collator draws ``t`` *before* the mask uniforms from the same stream; calling
    ``sample_t`` then :func:`noise_for_sft` with one generator keeps that order.
    """
    if batch < 0:
        raise ValueError(f"batch must be >= 0, got {batch}")
    gen_device = generator.device if generator is not None else device
    t = torch.rand((batch,), generator=generator, device=gen_device, dtype=dtype)
    t = apply_t_eps(t, eps)
    return t.to(device) if device is not None else t


def linspace_t(batch: int, eps: float = 1e-3, *, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Deterministic times for evaluation batches, ``linspace(0, 1, batch)`` through :func:`apply_t_eps`.

    d1 evaluates its SFT loss with fixed, evenly spread times so that eval losses are comparable between steps.
    """
    return apply_t_eps(torch.linspace(0.0, 1.0, batch, device=device, dtype=dtype), eps)


def _as_lengths(prompt_lengths: torch.Tensor | list[int] | int, batch: int, device) -> torch.Tensor:
    pl = torch.as_tensor(prompt_lengths, device=device, dtype=torch.long)
    if pl.dim() == 0:
        pl = pl.expand(batch)
    if pl.shape != (batch,):
        raise ValueError(f"prompt_lengths must have shape ({batch},), got {tuple(pl.shape)}")
    return pl


def noise_for_sft(
    input_ids: torch.Tensor,
    prompt_lengths: torch.Tensor | list[int] | int,
    t: torch.Tensor,
    mask_id: int,
    generator: torch.Generator | None = None,
    answer_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the SFT forward process: mask each answer token independently with probability ``t[b]``.

    Args:
        input_ids: (B, L) right-padded ``[prompt | answer | padding]`` token ids.
        prompt_lengths: (B,) number of prompt tokens per row (an int applies to all rows); prompt tokens are
            never masked.
        t: (B,) masking probability per row (already through :func:`apply_t_eps`).
        mask_id: the model's mask token id (from the model adapter; never hard-coded).
        generator: source of the uniforms. They are drawn as ONE ``(B, L)`` tensor on the generator's device (as
            d1's collator does), so the mask of a row depends on the batch shape, and a CPU generator seeded with
            ``s`` reproduces d1's ``torch.manual_seed(s)`` masks exactly.
        answer_mask: optional (B, L) bool, True where a position is a real answer token. ``None`` = d1 behaviour:
            every non-prompt position, padding EOS included, is a candidate target (LLaDA teaches the model to emit
            the EOS padding). When given, positions where it is False (padding) are never masked, never targets.

    Returns:
        ``(noisy_ids, masked)``: ``noisy_ids`` is ``input_ids`` with ``mask_id`` at the masked positions;
        ``masked`` (B, L) bool marks them (these are exactly the loss targets).
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (B, L), got shape {tuple(input_ids.shape)}")
    batch, length = input_ids.shape
    device = input_ids.device
    pl = _as_lengths(prompt_lengths, batch, device)
    t = torch.as_tensor(t, device=device)
    if t.shape != (batch,):
        raise ValueError(f"t must have shape ({batch},), got {tuple(t.shape)}")
    gen_device = generator.device if generator is not None else device
    # Uniforms over the FULL (B, L) shape like d1, then compared in the uniforms' dtype against t.
    u = torch.rand((batch, length), generator=generator, device=gen_device).to(device)
    masked = u < t.to(u.dtype)[:, None]
    positions = torch.arange(length, device=device)
    masked &= positions[None, :] >= pl[:, None]  # d1 restores the prompt after masking; same result
    if answer_mask is not None:
        if answer_mask.shape != input_ids.shape:
            raise ValueError(
                f"answer_mask must have the shape of input_ids {tuple(input_ids.shape)}, got {tuple(answer_mask.shape)}"
            )
        masked &= answer_mask.to(device=device, dtype=torch.bool)
    noisy = torch.where(masked, torch.full_like(input_ids, mask_id), input_ids)
    return noisy, masked


def sft_labels(input_ids: torch.Tensor, masked: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Hugging Face-style labels: the original id where masked, ``ignore_index`` elsewhere (d1 collator output)."""
    return torch.where(masked, input_ids, torch.full_like(input_ids, ignore_index))


def masked_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, positions: torch.Tensor, logits_shift: int = 0
) -> torch.Tensor:
    """Cross-entropy of ``targets`` at the selected ``positions`` only.

    The selected rows of ``logits`` are gathered first, so a full-vocabulary log-softmax is never materialised for
    unmasked positions (at 4096 tokens × 126k vocabulary that would be gigabytes). Computed in at least float32
    (bf16 logits are upcast row-chunk-wise inside :func:`selective_log_softmax`).

    Args:
        logits: (B, L, V); ``logits[:, i - logits_shift]`` predicts the token at position ``i``.
        targets: (B, L) token ids.
        positions: (B, L) bool, the positions whose target is scored.
        logits_shift: 0 for LLaDA (logits[i] predicts token i); 1 for models whose logits are shifted (Dream).

    Returns:
        1-D tensor of CE values, in the row-major order of ``positions.nonzero()``.
    """
    from d1rl.diffusion.estimators import selective_log_softmax

    if positions.shape != targets.shape or logits.shape[:2] != targets.shape:
        raise ValueError(
            f"shape mismatch: logits {tuple(logits.shape)}, targets {tuple(targets.shape)}, "
            f"positions {tuple(positions.shape)}"
        )
    rows, cols = positions.nonzero(as_tuple=True)
    src_cols = cols - logits_shift
    if logits_shift and bool((src_cols < 0).any()):
        raise ValueError("a scored position has no logits row with this logits_shift (position < shift)")
    picked = logits[rows, src_cols]  # (N, V) — only the masked rows
    return -selective_log_softmax(picked, targets[rows, cols])


def reduce_sft_loss(
    ce: torch.Tensor,
    masked: torch.Tensor,
    t: torch.Tensor,
    prompt_lengths: torch.Tensor | list[int] | int,
    normalization: SFTNormalization = "d1",
    answer_lengths: torch.Tensor | list[int] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Reduce per-position cross-entropy to the SFT loss (see module docstring for the two normalisations).

    Args:
        ce: (B, L) cross-entropy per position; only entries where ``masked`` is True are read (others may hold
            anything, e.g. the 0 that d1 puts there).
        masked: (B, L) bool target positions.
        t: (B,) the masking probabilities used for noising. Divided in the dtype given after promotion with ``ce``
            (d1 divides float64/bf16 CE by its float32 ``t``; keep ``t`` float32 to match it bit for bit).
        prompt_lengths: (B,) prompt tokens per row.
        normalization: ``"d1"`` or ``"per_sample"``.
        answer_lengths: (B,) answer positions per row. Default ``L − prompt_length`` (includes EOS padding, as both
            references do); pass the real answer lengths when padding is excluded from the targets.

    Returns:
        ``(loss, metrics)``; metrics are detached 0-dim tensors: ``unscaled_loss`` (ΣCE / #masked, what d1 logs;
        0 when nothing is masked), ``num_masked``, ``num_answer_tokens``, ``mean_t``.
    """
    if ce.shape != masked.shape or ce.dim() != 2:
        raise ValueError(f"ce and masked must both be (B, L); got {tuple(ce.shape)} and {tuple(masked.shape)}")
    batch, length = ce.shape
    device = ce.device
    pl = _as_lengths(prompt_lengths, batch, device)
    if answer_lengths is None:
        ans = length - pl
    else:
        ans = _as_lengths(answer_lengths, batch, device)
    t = torch.as_tensor(t, device=device)
    if t.shape != (batch,):
        raise ValueError(f"t must have shape ({batch},), got {tuple(t.shape)}")
    masked = masked.to(torch.bool)
    ce_masked = torch.where(masked, ce, torch.zeros((), dtype=ce.dtype, device=device))
    weighted = ce_masked / t[:, None]  # type promotion: float32 t with float64 CE stays exact
    num_answer = ans.sum()
    if normalization == "d1":
        loss = weighted.sum() / num_answer.clamp(min=1)
    elif normalization == "per_sample":
        loss = (weighted.sum(dim=1) / ans.clamp(min=1)).mean()
    else:
        raise ValueError(f"unknown SFT loss normalization {normalization!r}; expected 'd1' or 'per_sample'")
    num_masked = masked.sum()
    with torch.no_grad():
        unscaled = ce_masked.sum() / num_masked.clamp(min=1)
    metrics = {
        "unscaled_loss": unscaled.detach(),
        "num_masked": num_masked.detach(),
        "num_answer_tokens": num_answer.detach(),
        "mean_t": t.detach().float().mean(),
    }
    return loss, metrics


def sft_loss(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    masked: torch.Tensor,
    t: torch.Tensor,
    prompt_lengths: torch.Tensor | list[int] | int,
    normalization: SFTNormalization = "d1",
    answer_lengths: torch.Tensor | list[int] | None = None,
    logits_shift: int = 0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The masked-diffusion SFT loss from model logits: :func:`masked_cross_entropy` at the masked positions, then
    :func:`reduce_sft_loss`. ``input_ids`` are the ORIGINAL (clean) ids; ``logits`` come from the noisy ids."""
    ce_values = masked_cross_entropy(logits, input_ids, masked, logits_shift=logits_shift)
    ce = torch.zeros(input_ids.shape, dtype=ce_values.dtype, device=ce_values.device)
    ce = ce.masked_scatter(masked.to(torch.bool), ce_values)
    return reduce_sft_loss(ce, masked, t, prompt_lengths, normalization, answer_lengths)
