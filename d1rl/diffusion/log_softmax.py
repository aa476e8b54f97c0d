"""Log-softmax at a few selected token ids, without materialising the full-vocabulary log-softmax.

Policy-gradient losses need ``log softmax(z)[id]`` for one (or a few) ids per position, but over LLaDA's vocabulary
of 126,464 the full log-softmax of a (B, C, V) logits tensor — and its gradient — are the largest tensors of an RL
step. Two kernels, both chunked custom autograd functions:

* :func:`selective_log_softmax` — from logits that already exist (any model): saves only the logits (which the
  caller holds anyway) and the (rows,) log-normalisers, and rebuilds the softmax chunk by chunk in backward.
* :func:`fused_linear_log_softmax` — from the output head's INPUT (hidden states, head weight and bias): computes
  the logits of one chunk of rows at a time, keeps only the log-normaliser and the picked entries, and recomputes
  the chunk's logits in backward. Neither the (B, C, V) logits nor their gradient ever exist; the extra memory is
  O(chunk · V) plus one weight-sized gradient accumulator.

Both accept several ids per position (``ids`` with a trailing K dimension): the completions of one prompt that share
a model input (``algorithm.share_prompt_mask``) read their log-probs from the SAME logits, so the log-normaliser is
computed once and the gradient of all K picks flows back through one softmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["selective_log_softmax", "fused_linear_log_softmax", "default_chunk_rows"]

# Element budgets per chunk (a chunk is ``rows x V`` scores). The logits kernel works on logits that exist anyway,
# so its chunks only bound the float32 upcast; the fused kernel's chunks are the ONLY logits alive, so they are
# kept smaller (8M elements = 32 MB of float32: 66 rows at LLaDA's vocabulary, still a large matmul on a GPU).
_LOGITS_CHUNK_ELEMENTS = 1 << 25
_FUSED_CHUNK_ELEMENTS = 1 << 23


def default_chunk_rows(vocab: int, fused: bool) -> int:
    """Rows of V scores per chunk when the caller gives none (see the budgets above)."""
    budget = _FUSED_CHUNK_ELEMENTS if fused else _LOGITS_CHUNK_ELEMENTS
    return max(1, budget // max(int(vocab), 1))


def _check_ids(ids: torch.Tensor, vocab: int) -> torch.Tensor:
    ids = ids.to(torch.long)
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
        raise ValueError(f"token ids must lie in [0, {vocab}); got range [{int(ids.min())}, {int(ids.max())}]")
    return ids


class _SelectiveLogSoftmax(torch.autograd.Function):
    """log_softmax(logits)[ids] for logits (A, R, V) and ids (A, R, K), chunked along R, in >= float32.

    Forward saves only the (A, R) log-normalisers besides its inputs; backward rebuilds the softmax chunk by chunk.
    For bf16 logits of (6, 256, 126k) this avoids ~780 MB of float32 copies that autograd would otherwise hold.
    Chunking along the second dim (not over flattened rows) keeps a strided slice such as ``logits[:, P:]`` a view.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, ids: torch.Tensor, chunk: int) -> torch.Tensor:  # type: ignore[override]
        compute_dtype = torch.promote_types(logits.dtype, torch.float32)
        rows = logits.shape[1]
        lse = torch.empty(logits.shape[:2], dtype=compute_dtype, device=logits.device)
        for start in range(0, rows, chunk):
            stop = min(start + chunk, rows)
            lse[:, start:stop] = torch.logsumexp(logits[:, start:stop].to(compute_dtype), dim=-1)
        picked = logits.gather(-1, ids).to(compute_dtype)
        ctx.save_for_backward(logits, ids, lse)
        ctx.chunk = chunk
        return picked - lse[..., None]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        logits, ids, lse = ctx.saved_tensors
        chunk = ctx.chunk
        grad = torch.empty_like(logits)
        rows = logits.shape[1]
        for start in range(0, rows, chunk):
            stop = min(start + chunk, rows)
            g = grad_out[:, start:stop].to(lse.dtype)  # (A, r, K)
            # d/dz_j Σ_k g_k [z_{id_k} - lse(z)] = Σ_k g_k 1[j = id_k] - (Σ_k g_k) softmax(z)_j
            part = torch.exp(logits[:, start:stop].to(lse.dtype) - lse[:, start:stop, None])
            part.mul_(-g.sum(-1, keepdim=True))
            part.scatter_add_(-1, ids[:, start:stop], g)
            grad[:, start:stop] = part.to(logits.dtype)
        return grad, None, None


def selective_log_softmax(logits: torch.Tensor, ids: torch.Tensor, chunk_rows: int | None = None) -> torch.Tensor:
    """``log_softmax(logits, -1).gather(-1, ids)`` without materialising the log-softmax.

    Computes ``logits[..., id] - logsumexp(logits)`` in at least float32 (bf16/fp16 logits are upcast one chunk
    at a time), so memory stays O(chunk · V) beyond the logits themselves, in forward and backward. A (B, G, V)
    slice of a larger logits tensor is processed in place (no contiguous copy).

    Args:
        logits: (..., V) unnormalised scores.
        ids: int64 token ids, either the shape of ``logits`` without the last dim (one id per position) or that
            shape plus a trailing K (K ids per position, all read from the same distribution).
        chunk_rows: vectors of V scores per chunk; default keeps a chunk at ~32M elements.

    Returns:
        log-probabilities of shape ``ids.shape`` in ``promote_types(logits.dtype, float32)``.
    """
    if logits.dim() < 2:
        raise ValueError(f"logits must have at least 2 dims (..., V), got shape {tuple(logits.shape)}")
    multi = ids.dim() == logits.dim() and ids.shape[:-1] == logits.shape[:-1]
    if not multi and ids.shape != logits.shape[:-1]:
        raise ValueError(
            f"ids shape {tuple(ids.shape)} must equal logits shape without vocab {tuple(logits.shape[:-1])} "
            "(optionally with a trailing K dimension)"
        )
    vocab = logits.shape[-1]
    ids = _check_ids(ids, vocab)
    if not multi:
        ids = ids[..., None]
    k = ids.shape[-1]
    if logits.dim() == 2:  # (N, V) -> (1, N, V)
        x, i = logits.unsqueeze(0), ids.unsqueeze(0)
    else:  # (..., R, V) -> (A, R, V); a view for 3-D inputs
        x, i = logits.reshape(-1, logits.shape[-2], vocab), ids.reshape(-1, ids.shape[-2], k)
    if chunk_rows is not None and chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    budget_rows = chunk_rows if chunk_rows is not None else default_chunk_rows(vocab, fused=False)
    chunk = max(1, budget_rows // max(x.shape[0], 1))  # rows of the second dim per chunk, all of the first dim
    out = _SelectiveLogSoftmax.apply(x, i, chunk)
    out = out.reshape(ids.shape)
    return out if multi else out.squeeze(-1)


def _linear_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype the output head's matmul runs in: autocast's when autocast is on (as for the model's own head),
    else the promoted dtype of its inputs (what ``nn.Linear`` would do)."""
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return torch.promote_types(hidden.dtype, weight.dtype)


def _chunk_logits(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, scale: float) -> torch.Tensor:
    """Logits of one chunk exactly as the model's head computes them (matmul, bias, then scale, all in the head's
    dtype), so the fused kernel reproduces the logits path to rounding."""
    z = F.linear(h, w, b)
    return z * scale if scale != 1.0 else z


class _FusedLinearLogSoftmax(torch.autograd.Function):
    """log_softmax(scale · (h Wᵀ + b))[ids] for h (N, d), W (V, d), ids (N, K), chunked over the N rows.

    Forward keeps (N,) log-normalisers; backward recomputes each chunk's logits from the saved h and W. The matmul
    runs in ``lin_dtype`` (chosen once in forward, with autocast disabled inside, so forward and backward agree even
    though backward runs outside the caller's autocast region); softmax statistics in >= float32.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, ids, scale, chunk, lin_dtype):  # type: ignore[override]
        compute_dtype = torch.promote_types(lin_dtype, torch.float32)
        n = hidden.shape[0]
        out = torch.empty(ids.shape, dtype=compute_dtype, device=hidden.device)
        lse = torch.empty(n, dtype=compute_dtype, device=hidden.device)
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.to(lin_dtype)
            b = None if bias is None else bias.to(lin_dtype)
            for start in range(0, n, chunk):
                stop = min(start + chunk, n)
                z = _chunk_logits(hidden[start:stop].to(lin_dtype), w, b, scale).to(compute_dtype)
                lse[start:stop] = torch.logsumexp(z, dim=-1)
                out[start:stop] = z.gather(-1, ids[start:stop]) - lse[start:stop, None]
        ctx.save_for_backward(hidden, weight, bias, ids, lse)
        ctx.scale, ctx.chunk, ctx.lin_dtype = scale, chunk, lin_dtype
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        hidden, weight, bias, ids, lse = ctx.saved_tensors
        scale, chunk, lin_dtype = ctx.scale, ctx.chunk, ctx.lin_dtype
        need_h, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        n = hidden.shape[0]
        # Weight/bias gradients are summed over chunks in >= float32 (one rounding at the end, not one per chunk).
        acc_dtype = torch.promote_types(weight.dtype, torch.float32)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=acc_dtype, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=acc_dtype, device=bias.device) if need_b else None
        g_all = grad_out.to(lse.dtype)
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.to(lin_dtype)
            b = None if bias is None else bias.to(lin_dtype)
            for start in range(0, n, chunk):
                stop = min(start + chunk, n)
                h = hidden[start:stop].to(lin_dtype)
                g = g_all[start:stop]  # (r, K)
                gz = torch.exp(_chunk_logits(h, w, b, scale).to(lse.dtype) - lse[start:stop, None])
                gz.mul_(-g.sum(-1, keepdim=True))
                gz.scatter_add_(-1, ids[start:stop], g)
                gz = gz.to(lin_dtype)  # the logits path casts the logits' gradient to the logits dtype here too
                if scale != 1.0:
                    gz = gz * scale
                if need_h:
                    grad_h[start:stop] = (gz @ w).to(hidden.dtype)
                if need_w:
                    grad_w.addmm_(gz.t().to(acc_dtype), h.to(acc_dtype))
                if need_b:
                    grad_b += gz.sum(0).to(acc_dtype)
        return (
            grad_h,
            None if grad_w is None else grad_w.to(weight.dtype),
            None if grad_b is None else grad_b.to(bias.dtype),
            None, None, None, None,
        )


def fused_linear_log_softmax(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    ids: torch.Tensor,
    bias: torch.Tensor | None = None,
    scale: float = 1.0,
    chunk_rows: int | None = None,
    matmul_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``log_softmax(scale · (hidden @ weight.T + bias), -1).gather(-1, ids)`` without the full logits.

    Args:
        hidden: (..., d) input of the output head (after the final norm).
        weight: (V, d) head weight; ``bias``: (V,) or None.
        ids: the shape of ``hidden`` without d (one id per position), or that plus a trailing K.
        scale: multiplier applied to the head output (LLaDA's ``scale_logits`` option: 1/sqrt(d_model)).
        chunk_rows: rows of V logits alive at a time; default 8M elements per chunk.
        matmul_dtype: dtype of the head matmul; default: the autocast dtype when autocast is on here, else the
            promoted dtype of ``hidden`` and ``weight`` (what the model's ``nn.Linear`` head would use).

    Returns:
        log-probabilities of shape ``ids.shape`` in ``promote_types(matmul dtype, float32)``; gradients flow to
        ``hidden``, ``weight`` and ``bias``.
    """
    if weight.dim() != 2 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(f"head weight {tuple(weight.shape)} does not fit hidden states {tuple(hidden.shape)}")
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"head bias {tuple(bias.shape)} does not fit head weight {tuple(weight.shape)}")
    lead = hidden.shape[:-1]
    multi = ids.dim() == hidden.dim() and ids.shape[:-1] == lead
    if not multi and ids.shape != lead:
        raise ValueError(
            f"ids shape {tuple(ids.shape)} must equal hidden shape without d {tuple(lead)} "
            "(optionally with a trailing K dimension)"
        )
    vocab = weight.shape[0]
    ids = _check_ids(ids, vocab)
    if not multi:
        ids = ids[..., None]
    if chunk_rows is not None and chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    chunk = chunk_rows if chunk_rows is not None else default_chunk_rows(vocab, fused=True)
    flat_h = hidden.reshape(-1, hidden.shape[-1])
    flat_ids = ids.reshape(-1, ids.shape[-1])
    lin_dtype = matmul_dtype if matmul_dtype is not None else _linear_dtype(hidden, weight)
    out = _FusedLinearLogSoftmax.apply(flat_h, weight, bias, flat_ids, float(scale), chunk, lin_dtype)
    out = out.reshape(ids.shape)
    return out if multi else out.squeeze(-1)
