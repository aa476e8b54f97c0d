"""Compute the logits for the current x: the one place the sampler calls the model.

Kept separate from the choice of positions (``remasking.py``): :class:`BlockLogits` picks the forward scheme
(exact full forwards, or Fast-dLLM's prefix / dual KV cache) without touching the selection logic.
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


CACHE_MODES = ("none", "prefix", "dual")


def supports_kv_cache(model: Any) -> bool:
    """Whether ``model``'s forward takes ``kv_cache`` / ``position_ids`` / ``return_kv_cache``.

    ``d1rl.models.LLaDAModelLM`` says so with a class flag; PEFT wrappers pass attribute look-ups through to it,
    and DDP-style wrappers keep it as ``.module``.
    """
    for candidate in (model, getattr(model, "module", None)):
        if candidate is not None and bool(getattr(candidate, "supports_diffusion_kv_cache", False)):
            return True
    return False


class BlockLogits:
    """The logits of the current block at every sampler step, from one of three forward schemes, and their cost.

    ``cache="none"`` (exact; LLaDA/d1): one full forward of the whole sequence per step (:func:`compute_logits`).

    ``cache="prefix"`` and ``cache="dual"`` (approximate; Fast-dLLM, arXiv 2505.22618): the FIRST step of every
    block runs one full forward, which also returns every layer's keys/values (``return_kv_cache``); its logits
    serve that step. The keys/values of the prompt and all finished blocks (``prefix``), or of every position
    outside the current block (``dual``), are kept, and the later steps of the block feed only the current block
    plus everything after it (``prefix``) or only the current block (``dual``), at their true RoPE positions,
    attending to the kept keys/values. Those are STALE: they were computed when the current block was still
    fully masked, which is the approximation (exact for a one-layer model, whose keys/values depend on their own
    token only). ``cache_refresh = r > 0`` also recomputes them with a full forward at every r-th step of a block
    (steps 0, r, 2r, ...), trading compute for freshness; r = 1 is a full forward every step, i.e. exact.
    Only the current block's logits are computed (``logits_to_keep``).

    Counters: ``nfe`` = model forward calls (one per step; a CFG step is one forward of a doubled batch);
    ``token_forwards`` = the sum over forwards of the query positions fed, rows x positions (CFG's doubled rows
    included), i.e. a number proportional to the transformer compute.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        attention_mask: torch.Tensor | None,
        *,
        cache: str = "none",
        cfg_scale: float = 0.0,
        prompt_index: torch.Tensor | None = None,
        mask_id: int | None = None,
        logits_shift: int = 0,
        cache_refresh: int = 0,
    ) -> None:
        if cache not in CACHE_MODES:
            raise ValueError(f"unknown cache mode {cache!r}; expected one of {CACHE_MODES}")
        if cache_refresh < 0:
            raise ValueError(f"cache_refresh must be >= 0 (0 = only at block boundaries), got {cache_refresh}")
        if cache != "none":
            if not supports_kv_cache(model):
                raise ValueError(
                    f"cache={cache!r} needs a model whose forward takes kv_cache/position_ids/return_kv_cache "
                    f"(d1rl.models.LLaDAModelLM); {type(model).__name__} does not say it does. Use cache='none'"
                )
            if logits_shift != 0:
                raise ValueError(f"cache={cache!r} supports logits_shift=0 (LLaDA) only, got {logits_shift}")
        self.model = model
        self.attention_mask = attention_mask
        self.cache = cache
        self.cfg_scale = cfg_scale
        self.prompt_index = prompt_index
        self.mask_id = mask_id
        self.logits_shift = logits_shift
        self.cache_refresh = cache_refresh
        self.nfe = 0
        self.token_forwards = 0
        self._kv: Any = None

    def _model_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x, or with CFG the stacked batch [x; x with every prompt position masked] (and its mask)."""
        if self.cfg_scale <= 0.0:
            return x, self.attention_mask
        if self.prompt_index is None or self.mask_id is None:
            raise ValueError("classifier-free guidance needs prompt_index and mask_id")
        both = torch.cat([x, x.masked_fill(self.prompt_index, self.mask_id)], dim=0)
        mask = None if self.attention_mask is None else torch.cat([self.attention_mask, self.attention_mask], 0)
        return both, mask

    def _guided(self, logits: torch.Tensor) -> torch.Tensor:
        if self.cfg_scale <= 0.0:
            return logits
        cond, uncond = logits.chunk(2, dim=0)
        return uncond + (self.cfg_scale + 1.0) * (cond - uncond)

    def __call__(self, x: torch.Tensor, start: int, stop: int, step_in_block: int) -> torch.Tensor:
        """(B, stop - start, V) logits for the block ``[start, stop)`` of the current ``x`` (B, T), at the
        ``step_in_block``-th step of that block (0 = its first: the cache is (re)built)."""
        rows = x.shape[0] * (2 if self.cfg_scale > 0.0 else 1)
        length = x.shape[1]
        self.nfe += 1
        if self.cache == "none":
            self.token_forwards += rows * length
            logits, _ = compute_logits(
                self.model, x, self.attention_mask, start=start, stop=stop, cfg_scale=self.cfg_scale,
                prompt_index=self.prompt_index, mask_id=self.mask_id, logits_shift=self.logits_shift,
            )
            return logits
        inputs, mask = self._model_input(x)
        refresh = step_in_block == 0 or (self.cache_refresh > 0 and step_in_block % self.cache_refresh == 0)
        if refresh:
            self.token_forwards += rows * length
            out = self.model(inputs, attention_mask=mask, return_kv_cache=True, logits_to_keep=slice(start, stop))
            full = out.kv_cache
            if self.cache == "prefix":
                self._kv = full.select(slice(0, start))
            else:
                device = full.keys[0].device
                self._kv = full.select(torch.cat([torch.arange(0, start, device=device),
                                                  torch.arange(stop, length, device=device)]))
            return self._guided(_logits_of(out))
        if self._kv is None:
            raise RuntimeError("BlockLogits: a cached step came before the first step of its block")
        # Generated positions are never pads, so the fed positions need no attention mask; the cache keeps the
        # prompt's pad mask.
        feed_stop = length if self.cache == "prefix" else stop
        self.token_forwards += rows * (feed_stop - start)
        positions = torch.arange(start, feed_stop, device=x.device)
        out = self.model(inputs[:, start:feed_stop], position_ids=positions, kv_cache=self._kv,
                         logits_to_keep=slice(0, stop - start))
        return self._guided(_logits_of(out))
