"""Compute the logits for the current x: the one place the sampler calls the model.

Kept separate from the choice of positions (``remasking.py``) so that KV caches (Fast-dLLM style) can later
replace this function without touching the selection logic.
"""

from __future__ import annotations

from typing import Any

import torch


def _logits_of(output: Any) -> torch.Tensor:
    """Accept a model output with ``.logits`` (Hugging Face style), a tuple, or a bare tensor."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, (tuple, list)):
        logits = output[0]
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"model output has no logits tensor (got {type(output).__name__})")
    return logits


def _positions(logits: torch.Tensor, start: int, stop: int, logits_shift: int) -> torch.Tensor:
    """Logits that predict positions ``start..stop-1``.

    With ``logits_shift = 0`` (LLaDA) ``logits[:, i]`` predicts the token at ``i``. With a shift ``s`` (Dream-style
    autoregressive heads) position ``i`` is predicted by ``logits[:, i - s]``; positions before ``s`` reuse the
    first logits row, as Dream's own sampler does.
    """
    if logits_shift == 0:
        return logits[:, start:stop]
    index = (torch.arange(start, stop, device=logits.device) - logits_shift).clamp_(min=0)
    return logits.index_select(1, index)


def compute_logits(
    model: torch.nn.Module,
    x: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    start: int,
    stop: int,
    cfg_scale: float = 0.0,
    prompt_index: torch.Tensor | None = None,
    mask_id: int | None = None,
    logits_shift: int = 0,
) -> tuple[torch.Tensor, int]:
    """Run the model on ``x`` and return the logits for positions ``[start, stop)`` plus the forward count.

    Args:
        model: called as ``model(x, attention_mask=mask)``; ``.logits`` is (B, T, V).
        x: (B, T) current sequences.
        attention_mask: (B, T) 1 = real token, 0 = pad, or None (no masking, d1's behaviour).
        start, stop: the positions whose logits the caller needs (the current block). Only these are returned,
            and the classifier-free-guidance combination is only computed there: the combination is elementwise,
            so this equals slicing the full-sequence result.
        cfg_scale: unsupervised classifier-free guidance (LLaDA ``generate.py``; 0 = off, the default everywhere
            in d1). When > 0, the unconditional input is ``x`` with every prompt position set to ``mask_id`` and
            ONE forward runs on the stacked batch ``[x; un_x]`` (the attention mask, if any, is stacked too);
            logits = un + (cfg_scale + 1) * (cond - un).
        prompt_index: (B, T) bool, positions that were not mask at the start (pads included); needed for CFG.
        mask_id: the mask token id; needed for CFG.
        logits_shift: 0 for LLaDA (logits[:, i] predicts position i), see ``_positions``.

    Returns:
        ``(logits[:, start:stop], nfe)`` where ``nfe`` is the number of model forward calls made: 1, also with CFG
        (one forward on a doubled batch; the compute is that of 2B rows).
    """
    if cfg_scale > 0.0:
        if prompt_index is None or mask_id is None:
            raise ValueError("classifier-free guidance needs prompt_index and mask_id")
        un_x = x.masked_fill(prompt_index, mask_id)
        both = torch.cat([x, un_x], dim=0)
        both_mask = None if attention_mask is None else torch.cat([attention_mask, attention_mask], dim=0)
        logits = _positions(_logits_of(model(both, attention_mask=both_mask)), start, stop, logits_shift)
        cond, uncond = logits.chunk(2, dim=0)
        return uncond + (cfg_scale + 1.0) * (cond - uncond), 1
    logits = _logits_of(model(x, attention_mask=attention_mask))
    return _positions(logits, start, stop, logits_shift), 1
