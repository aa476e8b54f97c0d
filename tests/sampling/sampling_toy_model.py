"""A tiny stand-in mask predictor for sampler unit tests (no dependency on d1rl.models).

One bidirectional attention layer with a symmetric distance bias (so outputs depend on positions, but only on
RELATIVE positions, like RoPE: a left-padded prompt with its pads masked gives the same logits as the prompt alone),
a dropout layer (to see whether sampling really runs in eval mode) and a call log (to count forwards).
"""

from __future__ import annotations

from types import SimpleNamespace

import torch


class ToyDiffusionLM(torch.nn.Module):
    def __init__(self, vocab: int = 48, dim: int = 16, seed: int = 0, dropout: float = 0.0,
                 favour: tuple[int, ...] = (), favour_bias: float = 0.0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)

        def param(*shape: int, scale: float) -> torch.nn.Parameter:
            return torch.nn.Parameter(scale * torch.randn(*shape, generator=g, dtype=torch.float64))

        self.embed = param(vocab, dim, scale=1.0)
        self.wq = param(dim, dim, scale=0.5)
        self.wk = param(dim, dim, scale=0.5)
        self.wv = param(dim, dim, scale=0.5)
        self.head = param(vocab, dim, scale=0.6)
        bias = torch.zeros(vocab, dtype=torch.float64)
        bias[list(favour)] = favour_bias
        self.register_buffer("out_bias", bias)
        self.dropout = torch.nn.Dropout(dropout)
        self.calls: list[tuple[int, ...]] = []

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> SimpleNamespace:
        self.calls.append(tuple(input_ids.shape))
        h = self.embed[input_ids]
        q, k, v = h @ self.wq.T, h @ self.wk.T, h @ self.wv.T
        length = input_ids.shape[1]
        pos = torch.arange(length, dtype=torch.float64)
        scores = q @ k.transpose(1, 2) / h.shape[-1] ** 0.5 - 0.3 * (pos[None, :] - pos[:, None]).abs()
        if attention_mask is not None:
            scores = scores.masked_fill(attention_mask[:, None, :] == 0, float("-inf"))
        h = self.dropout(h + scores.softmax(-1) @ v)
        return SimpleNamespace(logits=2.0 * h @ self.head.T + self.out_bias)
