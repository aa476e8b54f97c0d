"""Left padding of token lists into one batch: the layout every sampler call in d1rl uses.

Why left: the diffusion sampler appends the completion's masked positions after the prompt, so prompts of a batch
must end at the same column; the attention mask (1 = real token) keeps the pad positions out of attention. The
evaluation runner, the diffu-GRPO rollouts and ``d1rl generate`` all build their batches here, so a prompt is laid
out the same way whichever of them samples it.
"""

from __future__ import annotations

from typing import Sequence

import torch


def left_pad(
    sequences: Sequence[Sequence[int]],
    pad_id: int,
    device: torch.device | str | None = None,
    *,
    allow_empty_rows: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack token lists right-aligned: ``(input_ids, attention_mask)``, both ``(B, longest)`` int64.

    Args:
        sequences: one token-id list per row.
        pad_id: id written into the pad positions (LLaDA: EOS; the mask keeps them out of attention anyway).
        device: where the two tensors go (None: CPU).
        allow_empty_rows: False makes an empty row an error naming it (``d1rl generate``: a prompt that tokenised
            to nothing is a bad input line); True lets it through as a row of pads.
    """
    if not sequences:
        raise ValueError("left_pad: no sequences to pad")
    width = max(len(s) for s in sequences)
    if width == 0:
        raise ValueError("left_pad: every sequence is empty")
    ids = torch.full((len(sequences), width), int(pad_id), dtype=torch.int64)
    mask = torch.zeros((len(sequences), width), dtype=torch.int64)
    for row, seq in enumerate(sequences):
        if len(seq) == 0:
            if not allow_empty_rows:
                raise ValueError(f"left_pad: prompt {row} is empty (nothing left after tokenisation)")
            continue
        ids[row, width - len(seq) :] = torch.as_tensor(list(seq), dtype=torch.int64)
        mask[row, width - len(seq) :] = 1
    if device is not None:
        ids, mask = ids.to(device), mask.to(device)
    return ids, mask
