"""Per-token log-probability estimators for masked diffusion LMs, behind a small registry.

A masked diffusion LM has no tractable sequence likelihood, so policy-gradient methods need an estimator of
``log π(o_k | q)`` per completion token. The registry lets new estimators (MC-ELBO, coupled masks, ...) slot in by
name without touching the trainer: ``get_estimator("one_step", mask_id=...)``.

``one_step`` is d1's mean-field estimator (d1-reference.md §2.3): mask EVERY completion token and each prompt token
with probability ``p_mask_prompt``, run ONE forward pass, and read ``log f_θ(o_k | q' ⊕ [MASK]^G)`` for each k.
The random prompt mask acts as a regulariser; the same mask must be used for the old, reference and current
log-probs of one inner iteration so the ratio compares like with like — hence explicit generators from
:func:`mask_generator` rather than d1's global re-seeding.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import torch

__all__ = [
    "mask_generator",
    "selective_log_softmax",
    "LogProbEstimator",
    "OneStepEstimator",
    "register_estimator",
    "get_estimator",
    "available_estimators",
]

_SEED_MASK = (1 << 63) - 1


def mask_generator(
    seed: int, step: int, inner_iteration: int, rank: int, device: torch.device | str = "cpu"
) -> torch.Generator:
    """A fresh ``torch.Generator`` for the estimator's random masks, keyed by ``(seed, step, inner_iteration, rank)``.

    The key is packed as four signed 64-bit little-endian integers, hashed with BLAKE2b (8-byte digest, the fixed
    personalisation ``b"d1rl-mask"``), and the top bit is cleared to give a 63-bit seed. This is stable across
    processes, machines and Python versions (unlike ``hash()``), distinct keys give unrelated streams, and resuming
    at ``(step, inner_iteration)`` reproduces the masks exactly without any global state. Old, reference and
    current log-probs of one inner iteration build the generator from the same key and therefore see the same mask.

    Note: a CUDA generator produces different numbers than a CPU generator with the same seed. Use
    ``device="cpu"`` (the default; the estimator draws on the generator's device and moves the mask) when masks
    must be identical across hardware.
    """
    for name, value in (("seed", seed), ("step", step), ("inner_iteration", inner_iteration), ("rank", rank)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"mask_generator: {name} must be an int, got {type(value).__name__}")
        if not -(1 << 63) <= value < (1 << 63):
            raise ValueError(f"mask_generator: {name}={value} does not fit in 64 bits")
    key = struct.pack("<4q", seed, step, inner_iteration, rank)
    digest = hashlib.blake2b(key, digest_size=8, person=b"d1rl-mask").digest()
    derived = int.from_bytes(digest, "little") & _SEED_MASK
    gen = torch.Generator(device=device)
    gen.manual_seed(derived)
    return gen


def _default_chunk_elements() -> int:
    return 1 << 25  # ~32M elements: 128 MB of float32 per chunk


class _SelectiveLogSoftmax(torch.autograd.Function):
    """log_softmax(logits)[ids] for 3-D logits (A, R, V), computed in chunks along R in float32/float64.

    A custom Function so that neither forward nor backward keeps a full upcast copy of the logits: forward saves
    only the (A, R) log-normalisers, backward rebuilds the softmax chunk by chunk. For bf16 logits of
    (6, 256, 126k) this avoids ~780 MB of float32 copies that autograd would otherwise hold. Chunking along the
    second dim (not over flattened rows) keeps a strided slice such as ``logits[:, P:]`` a view: no copy at all.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, ids: torch.Tensor, chunk: int) -> torch.Tensor:  # type: ignore[override]
        compute_dtype = torch.promote_types(logits.dtype, torch.float32)
        rows = logits.shape[1]
        lse = torch.empty(logits.shape[:2], dtype=compute_dtype, device=logits.device)
        for start in range(0, rows, chunk):
            stop = min(start + chunk, rows)
            lse[:, start:stop] = torch.logsumexp(logits[:, start:stop].to(compute_dtype), dim=-1)
        picked = logits.gather(-1, ids[..., None]).squeeze(-1).to(compute_dtype)
        ctx.save_for_backward(logits, ids, lse)
        ctx.chunk = chunk
        return picked - lse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        logits, ids, lse = ctx.saved_tensors
        chunk = ctx.chunk
        grad = torch.empty_like(logits)
        rows = logits.shape[1]
        for start in range(0, rows, chunk):
            stop = min(start + chunk, rows)
            g = grad_out[:, start:stop].to(lse.dtype)
            # d/dx_j [x_id - lse(x)] = 1[j = id] - softmax(x)_j
            part = torch.exp(logits[:, start:stop].to(lse.dtype) - lse[:, start:stop, None]) * (-g[..., None])
            part.scatter_add_(-1, ids[:, start:stop, None], g[..., None])
            grad[:, start:stop] = part.to(logits.dtype)
        return grad, None, None


def selective_log_softmax(logits: torch.Tensor, ids: torch.Tensor, chunk_rows: int | None = None) -> torch.Tensor:
    """``log_softmax(logits, -1).gather(-1, ids)`` without materialising the log-softmax.

    Computes ``logits[..., id] - logsumexp(logits)`` in at least float32 (bf16/fp16 logits are upcast one chunk
    at a time), so memory stays O(chunk · V) beyond the logits themselves, in forward and backward. A (B, G, V)
    slice of a larger logits tensor is processed in place (no contiguous copy).

    Args:
        logits: (..., V) unnormalised scores.
        ids: (...) int64 token ids, the shape of ``logits`` without the last dim.
        chunk_rows: vectors of V scores per chunk; default keeps a chunk at ~32M elements.

    Returns:
        (...) log-probabilities in ``promote_types(logits.dtype, float32)``.
    """
    if logits.dim() < 2 or logits.shape[:-1] != ids.shape:
        raise ValueError(f"ids shape {tuple(ids.shape)} must equal logits shape without vocab {tuple(logits.shape[:-1])}")
    vocab = logits.shape[-1]
    ids = ids.to(torch.long)
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
        raise ValueError(f"token ids must lie in [0, {vocab}); got range [{int(ids.min())}, {int(ids.max())}]")
    if logits.dim() == 2:  # (N, V) -> (1, N, V)
        x, i = logits.unsqueeze(0), ids.unsqueeze(0)
    else:  # (..., R, V) -> (A, R, V); a view for 3-D inputs
        x, i = logits.reshape(-1, logits.shape[-2], vocab), ids.reshape(-1, ids.shape[-1])
    if chunk_rows is not None and chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    budget_rows = chunk_rows if chunk_rows is not None else _default_chunk_elements() // max(vocab, 1)
    chunk = max(1, budget_rows // max(x.shape[0], 1))  # rows of the second dim per chunk, all of the first dim
    out = _SelectiveLogSoftmax.apply(x, i, chunk)
    return out.reshape(ids.shape)


def _forward_logits(model: Callable[..., Any], input_ids: torch.Tensor, attention_mask: torch.Tensor | None):
    out = model(input_ids) if attention_mask is None else model(input_ids, attention_mask=attention_mask)
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if logits is None and isinstance(out, (tuple, list)):
        logits = out[0]
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"model output has no logits tensor (got {type(out).__name__})")
    return logits


class LogProbEstimator(Protocol):
    """What the trainer needs from an estimator: per-token log-probs of the completion, (B, G)."""

    def log_probs(
        self,
        model: Callable[..., Any],
        input_ids: torch.Tensor,
        prompt_length: int,
        generator: torch.Generator | None = None,
        attention_mask: torch.Tensor | None = None,
        noised_ids: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


@dataclass
class OneStepEstimator:
    """d1's one-step mean-field estimator (d1-reference.md §2.3).

    Attributes:
        mask_id: the model's mask token id (from the model adapter; required, never hard-coded).
        p_mask_prompt: probability of masking each prompt token (d1 train.yaml: 0.15; d1 config default 0.3).
        mask_prompt_padding: whether left-pad prompt positions may be masked too (d1: True — it masks pads like any
            prompt token). False needs an ``attention_mask`` and keeps positions with ``attention_mask == 0``
            unmasked.
        logits_shift: 0 for LLaDA (logits[i] predicts token i); 1 for models with shifted logits (Dream).
        chunk_rows: rows per chunk in :func:`selective_log_softmax` (None = automatic).
    """

    mask_id: int
    p_mask_prompt: float = 0.15
    mask_prompt_padding: bool = True
    logits_shift: int = 0
    chunk_rows: int | None = None

    def __post_init__(self) -> None:
        if self.mask_id is None or int(self.mask_id) < 0:
            raise ValueError(f"OneStepEstimator needs a valid mask_id, got {self.mask_id!r}")
        if not 0.0 <= self.p_mask_prompt <= 1.0:
            raise ValueError(f"p_mask_prompt must be in [0, 1], got {self.p_mask_prompt}")
        if self.logits_shift < 0:
            raise ValueError(f"logits_shift must be >= 0, got {self.logits_shift}")

    def _check(self, input_ids: torch.Tensor, prompt_length: int) -> int:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (B, L), got shape {tuple(input_ids.shape)}")
        prompt_length = int(prompt_length)
        if not self.logits_shift <= prompt_length < input_ids.shape[1]:
            raise ValueError(
                f"prompt_length={prompt_length} must be in [{self.logits_shift}, {input_ids.shape[1]}) "
                f"for input of length {input_ids.shape[1]}"
            )
        return prompt_length

    def prompt_mask(
        self,
        input_ids: torch.Tensor,
        prompt_length: int,
        generator: torch.Generator | None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, prompt_length) bool: which prompt positions get masked.

        The uniforms are drawn over the FULL (B, L) shape on the generator's device, exactly as d1 does, so that a
        CPU ``torch.Generator().manual_seed(s)`` reproduces d1's ``set_seed(s)`` patterns; the completion part of
        the draw is unused (all completion tokens are masked anyway).
        """
        prompt_length = self._check(input_ids, prompt_length)
        batch, length = input_ids.shape
        gen_device = generator.device if generator is not None else input_ids.device
        u = torch.rand((batch, length), generator=generator, device=gen_device).to(input_ids.device)
        pm = u[:, :prompt_length] < self.p_mask_prompt
        if not self.mask_prompt_padding:
            if attention_mask is None:
                raise ValueError("mask_prompt_padding=False needs an attention_mask to know which positions are pads")
            pm &= attention_mask[:, :prompt_length].to(device=pm.device).bool()
        return pm

    def noise(
        self,
        input_ids: torch.Tensor,
        prompt_length: int,
        generator: torch.Generator | None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The noised sequence: completion fully masked, prompt tokens masked per :meth:`prompt_mask`."""
        prompt_length = int(prompt_length)
        pm = self.prompt_mask(input_ids, prompt_length, generator, attention_mask)
        noised = input_ids.clone()
        noised[:, :prompt_length].masked_fill_(pm, self.mask_id)
        noised[:, prompt_length:] = self.mask_id
        return noised

    def log_probs(
        self,
        model: Callable[..., Any],
        input_ids: torch.Tensor,
        prompt_length: int,
        generator: torch.Generator | None = None,
        attention_mask: torch.Tensor | None = None,
        noised_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, G) per-token log p of the original completion tokens ``input_ids[:, prompt_length:]`` from ONE forward.

        ``noised_ids`` overrides the noising (e.g. to reuse a stored pattern); otherwise ``generator`` must be given
        (an explicit generator is required so old/ref/current calls cannot silently get different masks).
        ``attention_mask`` is passed to the model only when given (d1 passes none); with d1's settings it is used
        only for ``mask_prompt_padding=False``. Log-softmax is evaluated only at completion positions. Gradients
        flow to the model when autograd is enabled.
        """
        prompt_length = self._check(input_ids, prompt_length)
        if noised_ids is None:
            if generator is None:
                raise ValueError("OneStepEstimator.log_probs needs a generator (see mask_generator) or noised_ids")
            noised_ids = self.noise(input_ids, prompt_length, generator, attention_mask)
        elif noised_ids.shape != input_ids.shape:
            raise ValueError(f"noised_ids shape {tuple(noised_ids.shape)} != input_ids shape {tuple(input_ids.shape)}")
        logits = _forward_logits(model, noised_ids, attention_mask)
        return self._completion_log_probs(logits, input_ids, prompt_length)

    def log_probs_many(
        self,
        model: Callable[..., Any],
        input_ids: torch.Tensor,
        prompt_length: int,
        generators: Sequence[torch.Generator],
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(K, B, G) log-probs for K mask patterns (one per generator) from ONE stacked forward of K·B rows.

        This is how d1 computes old/ref log-probs for all μ inner iterations at once; each pattern equals what
        :meth:`log_probs` would give with the same generator (rows of a bidirectional model are independent).
        """
        prompt_length = self._check(input_ids, prompt_length)
        if len(generators) == 0:
            raise ValueError("log_probs_many needs at least one generator")
        noised = torch.cat([self.noise(input_ids, prompt_length, g, attention_mask) for g in generators])
        k = len(generators)
        mask_k = None if attention_mask is None else attention_mask.repeat(k, 1)
        logits = _forward_logits(model, noised, mask_k)
        out = self._completion_log_probs(logits, input_ids.repeat(k, 1), prompt_length)
        return out.view(k, input_ids.shape[0], -1)

    def _completion_log_probs(self, logits: torch.Tensor, input_ids: torch.Tensor, prompt_length: int) -> torch.Tensor:
        length = input_ids.shape[1]
        if logits.shape[:2] != input_ids.shape:
            raise ValueError(f"logits shape {tuple(logits.shape)} does not match input_ids {tuple(input_ids.shape)}")
        s = self.logits_shift
        comp_logits = logits[:, prompt_length - s : length - s]
        return selective_log_softmax(comp_logits, input_ids[:, prompt_length:], self.chunk_rows)


_REGISTRY: dict[str, Callable[..., Any]] = {}


def register_estimator(name: str, factory: Callable[..., Any] | None = None):
    """Register an estimator factory under ``name``; usable as ``register_estimator("x", Cls)`` or as a decorator."""

    def _do(f: Callable[..., Any]):
        if name in _REGISTRY and _REGISTRY[name] is not f:
            raise ValueError(f"estimator {name!r} is already registered")
        _REGISTRY[name] = f
        return f

    return _do(factory) if factory is not None else _do


def get_estimator(name: str, **kwargs: Any):
    """Build the estimator registered as ``name`` with ``kwargs`` (e.g. ``mask_id``, ``p_mask_prompt``)."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown log-prob estimator {name!r}; available: {sorted(_REGISTRY)}") from None
    return factory(**kwargs)


def available_estimators() -> list[str]:
    return sorted(_REGISTRY)


register_estimator("one_step", OneStepEstimator)
