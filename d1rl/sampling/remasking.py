"""Per-step decisions of the sampler: candidate tokens, their confidence, and which positions to unmask.

All functions work on the logits of the CURRENT BLOCK only, shape (B, K, V). That gives the same result as the
official samplers, which compute over the whole sequence: there, positions right of the block get confidence
-inf and already-decoded positions keep their token with confidence -inf, so no position outside the block's
masked positions can ever be written. (Checked against every sampler fixture.)

Kept apart from ``forward.py`` (how logits are computed). Two selection rules: a fixed number of positions per
step (:func:`choose_positions`, LLaDA/d1) and confidence-threshold parallel decoding (:func:`threshold_positions`,
Fast-dLLM).
"""

from __future__ import annotations

import torch

REMASKING_STRATEGIES = ("low_confidence", "random")

# Confidences produced here are probabilities or Uniform[0, 1) draws, so every real candidate has a value in
# [0, 1]; subtracting this ranks a demoted candidate below all others while keeping the order among demoted ones.
_DEMOTION = 2.0


def propose_tokens(logits: torch.Tensor, temperature: float, uniform: torch.Tensor | None = None) -> torch.Tensor:
    """Candidate token x0 for every position (B, K).

    ``temperature == 0``: greedy ``argmax(logits)`` in the logits' own dtype (all official samplers).
    Otherwise Gumbel-max in LLaDA's form ``argmax(exp(logits) / (-log U) ** temperature)`` with ``U`` the given
    uniform noise; both the logits and the noise are used in ``uniform.dtype`` (LLaDA: float64, because
    low-precision Gumbel noise lowers generation quality, arXiv 2409.02908; d1 eval: float32; d1 trainer: the model
    dtype). This equals sampling from softmax(logits / temperature); we keep the exp form rather than the log form
    on purpose, so float32/bf16 runs overflow exactly like d1's do.
    """
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    if uniform is None:
        raise ValueError("temperature > 0 needs uniform noise")
    scores = logits.to(uniform.dtype).exp() / (-torch.log(uniform)) ** temperature
    return scores.argmax(dim=-1)


def token_confidence(
    logits: torch.Tensor,
    x0: torch.Tensor,
    remasking: str,
    *,
    dtype: torch.dtype | None = torch.float64,
    uniform: torch.Tensor | None = None,
) -> torch.Tensor:
    """Confidence of every candidate (B, K), used to rank positions.

    ``low_confidence``: softmax(logits)[x0] over the full vocabulary WITHOUT temperature (LLaDA/d1), computed in
    ``dtype`` (LLaDA Mar-2025: float64; None = the logits' dtype, as d1). ``random``: the given Uniform[0, 1)
    draws (LLaDA's "random" remasking).
    """
    if remasking == "low_confidence":
        source = logits if dtype is None else logits.to(dtype)
        probs = torch.softmax(source, dim=-1)
        return probs.gather(-1, x0.unsqueeze(-1)).squeeze(-1)
    if remasking == "random":
        if uniform is None:
            raise ValueError("random remasking needs uniform draws")
        return uniform if dtype is None else uniform.to(dtype)
    raise ValueError(f"unknown remasking {remasking!r}; expected one of {REMASKING_STRATEGIES}")


def ranking_key(
    confidence: torch.Tensor,
    candidates: torch.Tensor,
    demoted: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sort key for the top-k choice: -inf where a position may not be chosen.

    Args:
        confidence: (B, K) values in [0, 1].
        candidates: (B, K) bool, positions that may be unmasked now (still masked, inside the block, not a pad).
        demoted: (B, K) bool or None; such candidates rank below every other candidate but stay choosable, so a
            block can always finish. Used for ``confidence_eos_eot_inf``: LLaDA's newer generate.py means to give
            EOS/EOT candidates confidence -inf (so they are written last); a real -inf would tie with the forbidden
            positions and could let top-k pick a forbidden one, hence the finite demotion.
    """
    key = confidence
    if demoted is not None:
        key = torch.where(demoted, key - _DEMOTION, key)
    return key.masked_fill(~candidates, float("-inf"))


def choose_positions(key: torch.Tensor, num_transfer: torch.Tensor, max_transfer: int | None = None) -> torch.Tensor:
    """Per row, the ``num_transfer[r]`` positions with the highest key (never one whose key is -inf).

    Batched: one stable descending sort per row, then each row keeps its first ``num_transfer[r]`` entries -- the
    same set as the official per-row ``topk(k_r)``. Ties (e.g. several probabilities that round to exactly 1.0) go
    to the leftmost position, deterministically on every device; ``topk`` leaves that unspecified (the official
    fixtures contain no ties).

    Args:
        key: (B, K) from ``ranking_key``.
        num_transfer: (B,) int tensor, tokens to unmask in each row at this step (0 allowed; d1 then skips the row).
        max_transfer: ``int(num_transfer.max())`` if the caller knows it already (avoids a device sync).

    Returns:
        (B, K) bool, the positions to unmask.
    """
    if max_transfer is None:
        max_transfer = int(num_transfer.max()) if num_transfer.numel() else 0
    max_transfer = min(max_transfer, key.shape[-1])
    chosen = torch.zeros_like(key, dtype=torch.bool)
    if max_transfer <= 0:
        return chosen
    values, index = key.sort(dim=-1, descending=True, stable=True)
    values, index = values[:, :max_transfer], index[:, :max_transfer]
    rank = torch.arange(max_transfer, device=key.device).unsqueeze(0)
    keep = (rank < num_transfer.unsqueeze(-1)) & (values > float("-inf"))
    return chosen.scatter(-1, index, keep)


def threshold_positions(key: torch.Tensor, threshold: float) -> torch.Tensor:
    """Confidence-threshold parallel decoding (Fast-dLLM, arXiv 2505.22618): every position whose key exceeds
    ``threshold`` (strictly), plus each row's best candidate, so that every row with a candidate advances.

    Why: when the model is sure of several positions at once, decoding them together costs one forward instead
    of several, and Fast-dLLM shows that tokens above a high threshold (0.9) rarely conflict. A key of -inf
    (not a candidate) is never chosen; demoted candidates (keys below 0) never pass a threshold in (0, 1] and are
    only taken as a row's best when nothing else is left. Ties for the best go to the leftmost position.

    Args:
        key: (B, K) from :func:`ranking_key`.
        threshold: in (0, 1]; 1.0 is never exceeded by a probability, so exactly one position per row per step.

    Returns:
        (B, K) bool, the positions to unmask.
    """
    best = key.argmax(dim=-1, keepdim=True)
    top = torch.zeros_like(key, dtype=torch.bool).scatter(-1, best, True) & (key > float("-inf"))
    return top | (key > threshold)
