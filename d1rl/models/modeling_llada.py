"""Native PyTorch implementation of the LLaDA masked-diffusion transformer.

Weight- and config-compatible with the official hub checkpoints (``GSAI-ML/LLaDA-8B-Instruct`` / ``-Base``): the
parameter names are exactly the official ones (``model.transformer.wte``, ``model.transformer.blocks.N.q_proj`` ...),
so ``LLaDAModelLM.from_pretrained`` reads an official safetensors checkpoint without any renaming and without
running the hub's remote code.

What the forward computes (see also ``shared/fixtures/README.md`` section 2):

* token embedding, no scaling and no absolute position embedding;
* per block (llama flavour): RMSNorm -> q/k/v projections -> RoPE on q, k at ABSOLUTE positions 0..T-1 (left
  padding is not compensated, as in the official code) -> bidirectional attention (no causal mask; pad KEYS are
  masked for every query when an ``attention_mask`` with zeros is given) -> ``attn_out`` -> residual;
  RMSNorm -> ``ff_out(act(ff_proj(h)) * up_proj(h))`` -> residual;
* final RMSNorm and the output head ``transformer.ff_out``. ``logits[:, i]`` predicts the token AT position i
  (a masked LM: no shift).

Approximate KV cache for diffusion sampling (Fast-dLLM style, arXiv 2505.22618; used by ``d1rl.sampling`` with
``cache: prefix | dual``). A bidirectional model has no exact KV cache: every position's keys/values depend on the
whole sequence, so they change whenever any token is unmasked. Fast-dLLM's observation is that the keys/values of
positions far from the block being decoded change little between neighbouring steps, so they can be computed once
per block and reused. Two pieces make this possible here:

* ``model(ids, attention_mask=m, return_kv_cache=True)`` also returns a :class:`LLaDAKVCache` with every layer's
  keys/values (after RoPE, before the grouped-query repeat) of all positions it was given;
* ``model(sub_ids, position_ids=pos, kv_cache=cache)`` runs the forward for a SUBSET of positions only: their
  queries/keys/values are computed at their true RoPE positions ``pos`` and every layer attends to the cached
  keys/values of the other positions plus their own. Pad keys stay masked through ``cache.attention_mask``.

With a cache computed from the same tokens, the subset's logits equal those positions of a full forward (up to
summation order); the approximation only enters when the cache is reused after tokens changed.

Numerics. By default norms and RoPE run in the model's dtype, except in bf16/fp16 where the RMSNorm statistics and
the RoPE tables/rotation are computed in float32 (low-precision rsqrt/sin/cos lose several bits and RoPE angles at
position ~4k are large). In float64 this gives a "pure" float64 model. The official code always does these in float32,
even for a float64 model; ``config.official_fp32_norm_rope = True`` replicates those casts exactly, which is what the
reference fixtures need to match bit-for-bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

from d1rl.models.configuration_llada import LLaDAConfig

_LOW_PRECISION = (torch.bfloat16, torch.float16)
_ACTIVATIONS = {"silu": F.silu, "gelu": F.gelu, "relu": F.relu}


def _stats_dtype(dtype: torch.dtype, official: bool) -> torch.dtype:
    """dtype in which RMSNorm statistics / RoPE tables are computed (see module docstring)."""
    if official or dtype in _LOW_PRECISION:
        return torch.float32
    return dtype


class LLaDARMSNorm(nn.Module):
    """RMSNorm ``w * (x / sqrt(mean(x^2) + eps)) (+ b)``.

    The normalisation is computed in ``_stats_dtype`` and cast back to the input dtype BEFORE the weight multiply,
    exactly in the order the official code uses (this order matters for bit-equality in the official mode).
    """

    def __init__(self, size: int, eps: float, affine: bool, bias: bool, official: bool) -> None:
        super().__init__()
        self.eps = eps
        self.official = official
        self.weight = nn.Parameter(torch.ones(size)) if affine else None
        self.bias = nn.Parameter(torch.zeros(size)) if (affine and bias) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        in_dtype = x.dtype
        h = x.to(_stats_dtype(in_dtype, self.official))
        variance = h.pow(2).mean(-1, keepdim=True)
        h = (h * torch.rsqrt(variance + self.eps)).to(in_dtype)
        if self.weight is not None:
            h = self.weight * h
            if self.bias is not None:
                h = h + self.bias
        return h


def rope_tables(
    positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables of shape (B or 1, 1, T, head_dim) for integer ``positions`` of shape (T,) or (B, T).

    angles = [p * inv_freq, p * inv_freq] with inv_freq_j = 1 / theta^(2j/hd): the "half-split" RoPE layout that
    pairs dimension i with i + hd/2 (not the interleaved GPT-J layout).
    """
    device = positions.device
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=dtype) / head_dim))
    pos = positions.to(dtype)
    if pos.dim() == 1:
        pos = pos[None]
    freqs = pos[..., :, None] * inv_freq  # (B, T, hd/2): one multiply per entry, like an outer product
    angles = torch.cat((freqs, freqs), dim=-1)[:, None]  # (B, 1, T, hd)
    return angles.cos(), angles.sin()


def _rotate_half(t: torch.Tensor) -> torch.Tensor:
    half = t.shape[-1] // 2
    return torch.cat((-t[..., half:], t[..., :half]), dim=-1)


def apply_rope(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rotate_dtype: torch.dtype) -> torch.Tensor:
    """Rotate ``t`` (B, H, T, hd) in ``rotate_dtype`` and return it in its own dtype."""
    t_ = t.to(rotate_dtype)
    out = (t_ * cos.to(rotate_dtype)) + (_rotate_half(t_) * sin.to(rotate_dtype))
    return out.to(t.dtype)


@dataclass
class LLaDAKVCache:
    """Keys/values of a set of positions for every layer: what a cached forward attends to besides its own tokens.

    Produced by ``LLaDAModelLM(..., return_kv_cache=True)`` (it covers exactly the positions of that forward, in
    order); narrowed with :meth:`select`; consumed by ``LLaDAModelLM(..., kv_cache=cache, position_ids=...)``.
    The cached positions must be DIFFERENT from the ones fed with it (a position fed again would be attended
    twice, once stale); attention is order-free over keys, so the cached positions need not be contiguous.

    Attributes:
        keys: one (B, n_kv_heads, C, head_dim) tensor per layer, RoPE already applied at the positions the keys
            were computed for (so they stay valid wherever they are attended from).
        values: one (B, n_kv_heads, C, head_dim) tensor per layer.
        attention_mask: (B, C), 1 = real token, 0 = pad (never attended), or None when no cached key is a pad.
    """

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    attention_mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if len(self.keys) != len(self.values) or not self.keys:
            raise ValueError(f"LLaDAKVCache needs one keys and one values tensor per layer "
                             f"(got {len(self.keys)} and {len(self.values)})")
        shape = tuple(self.keys[0].shape)
        if len(shape) != 4 or any(tuple(t.shape) != shape for t in (*self.keys, *self.values)):
            raise ValueError(f"LLaDAKVCache tensors must all be (B, n_kv_heads, C, head_dim); got "
                             f"{[tuple(t.shape) for t in self.keys[:2]]} ...")
        if self.attention_mask is not None and tuple(self.attention_mask.shape) != (shape[0], shape[2]):
            raise ValueError(f"LLaDAKVCache.attention_mask must be (B, C) = {(shape[0], shape[2])}, "
                             f"got {tuple(self.attention_mask.shape)}")

    @property
    def batch_size(self) -> int:
        return int(self.keys[0].shape[0])

    @property
    def length(self) -> int:
        """Number of cached positions C."""
        return int(self.keys[0].shape[2])

    def select(self, index: slice | torch.Tensor) -> LLaDAKVCache:
        """The cache of a subset of its positions: a slice, or a 1-D tensor of indices into its C positions.

        E.g. Fast-dLLM's prefix cache is ``full.select(slice(0, start))``, its dual cache
        ``full.select(torch.cat([arange(0, start), arange(stop, T)]))`` (everything except the decoded block).
        """
        if isinstance(index, slice):
            keys = tuple(k[:, :, index] for k in self.keys)
            values = tuple(v[:, :, index] for v in self.values)
            mask = None if self.attention_mask is None else self.attention_mask[:, index]
        elif isinstance(index, torch.Tensor) and index.dim() == 1:
            index = index.to(device=self.keys[0].device, dtype=torch.long)
            keys = tuple(k.index_select(2, index) for k in self.keys)
            values = tuple(v.index_select(2, index) for v in self.values)
            mask = None if self.attention_mask is None else self.attention_mask.index_select(1, index.to(
                self.attention_mask.device))
        else:
            raise TypeError(f"LLaDAKVCache.select takes a slice or a 1-D index tensor, got {type(index).__name__}")
        return LLaDAKVCache(keys, values, mask)


@dataclass
class LLaDAMaskedLMOutput(MaskedLMOutput):
    """``MaskedLMOutput`` plus ``kv_cache`` (a :class:`LLaDAKVCache`, only with ``return_kv_cache=True``)."""

    kv_cache: LLaDAKVCache | None = None


class LLaDABlock(nn.Module):
    """One "llama"-type LLaDA block; attribute names are the official parameter names."""

    def __init__(self, config: LLaDAConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads = config.n_heads
        self.n_kv_heads = config.effective_n_kv_heads
        self.head_dim = config.head_dim
        self.attention_dropout = config.attention_dropout
        self.act = _ACTIVATIONS[str(config.activation_type)]
        official = bool(config.official_fp32_norm_rope)
        norm_bias = config.include_bias if config.bias_for_layer_norm is None else config.bias_for_layer_norm
        qkv_bias = bool(config.include_bias or config.include_qkv_bias)
        d, kv_dim, hidden = config.d_model, self.n_kv_heads * config.head_dim, config.mlp_width

        self.attn_norm = LLaDARMSNorm(d, config.rms_norm_eps, config.layer_norm_with_affine, norm_bias, official)
        self.ff_norm = LLaDARMSNorm(d, config.rms_norm_eps, config.layer_norm_with_affine, norm_bias, official)
        self.q_proj = nn.Linear(d, d, bias=qkv_bias)
        self.k_proj = nn.Linear(d, kv_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(d, kv_dim, bias=qkv_bias)
        self.attn_out = nn.Linear(d, d, bias=config.include_bias)
        self.ff_proj = nn.Linear(d, hidden, bias=config.include_bias)  # gate branch (act applied)
        self.up_proj = nn.Linear(d, hidden, bias=config.include_bias)
        self.ff_out = nn.Linear(hidden, d, bias=config.include_bias)  # down projection
        self.dropout = nn.Dropout(config.residual_dropout)

    def _attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, impl: str
    ) -> torch.Tensor:
        dropout_p = self.attention_dropout if self.training else 0.0
        if impl == "eager":
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
            if bias is not None:
                scores = scores + bias
            # softmax in float32 at least, as SDPA's math path does for half precision
            probs = torch.softmax(scores.to(_stats_dtype(scores.dtype, False)), dim=-1).to(q.dtype)
            probs = F.dropout(probs, p=dropout_p, training=self.training)
            return torch.matmul(probs, v)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, is_causal=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor | None,
        sin: torch.Tensor | None,
        bias: torch.Tensor | None,
        rotate_dtype: torch.dtype,
        impl: str,
        past_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        return_kv: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One block on ``x`` (B, T, d). ``past_kv`` = cached (keys, values) of OTHER positions, attended besides
        x's own (``bias`` then covers the cached keys first, then x's); ``return_kv`` also returns x's own
        (keys, values) after RoPE, before the grouped-query repeat."""
        B, T, _ = x.shape
        h = self.attn_norm(x)
        q = self.q_proj(h).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(h).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if cos is not None:
            q = apply_rope(q, cos, sin, rotate_dtype)
            k = apply_rope(k, cos, sin, rotate_dtype)
        own_kv = (k, v)
        if past_kv is not None:
            k = torch.cat([past_kv[0], k], dim=2)
            v = torch.cat([past_kv[1], v], dim=2)
        if self.n_kv_heads != self.n_heads:
            # interleaved GQA: kv head g serves query heads g*r .. g*r+r-1 (as the official code)
            r = self.n_heads // self.n_kv_heads
            k = k.repeat_interleave(r, dim=1)
            v = v.repeat_interleave(r, dim=1)
        att = self._attention(q, k, v, bias, impl)
        att = att.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)
        x = x + self.dropout(self.attn_out(att))

        h = self.ff_norm(x)
        h = self.ff_out(self.act(self.ff_proj(h)) * self.up_proj(h))
        x = x + self.dropout(h)
        return (x, own_kv) if return_kv else x


def select_positions(x: torch.Tensor, keep: int | slice | torch.Tensor | None) -> torch.Tensor:
    """The positions of ``x`` (B, T, ...) whose logits are wanted.

    Why: the output head is (d_model x vocab); at LLaDA's vocabulary of 126,464 the full (B, T, V) logits dominate
    the memory and time of a forward, while the sampler needs one block and the estimator only the completion.
    ``None`` or ``0`` keeps every position (transformers' convention for ``logits_to_keep``), a positive int keeps
    the last ``keep`` positions, a slice or a 1-D index tensor selects positions along the sequence axis.
    """
    if keep is None:
        return x
    if isinstance(keep, bool):
        raise TypeError("logits_to_keep must be an int, a slice or a 1-D index tensor, not a bool")
    if isinstance(keep, int):
        if keep < 0:
            raise ValueError(f"logits_to_keep must be >= 0, got {keep}")
        return x if keep == 0 else x[:, -keep:]
    if isinstance(keep, slice):
        return x[:, keep]
    if isinstance(keep, torch.Tensor):
        if keep.dim() != 1:
            raise ValueError(f"logits_to_keep as a tensor must be 1-D positions, got shape {tuple(keep.shape)}")
        return x.index_select(1, keep.to(device=x.device, dtype=torch.long))
    raise TypeError(f"logits_to_keep must be an int, a slice or a 1-D index tensor, got {type(keep).__name__}")


class LLaDAModel(nn.Module):
    """The transformer body; ``transformer`` is a ModuleDict so parameter names match the official checkpoint."""

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        self.config = config
        # Set by PreTrainedModel.gradient_checkpointing_enable() (it looks for this attribute on every module).
        self.gradient_checkpointing = False
        modules: dict[str, nn.Module] = {
            "wte": nn.Embedding(config.padded_vocab_size, config.d_model),
            "emb_drop": nn.Dropout(config.embedding_dropout),
            "ln_f": LLaDARMSNorm(
                config.d_model,
                config.rms_norm_eps,
                config.layer_norm_with_affine,
                config.include_bias if config.bias_for_layer_norm is None else config.bias_for_layer_norm,
                bool(config.official_fp32_norm_rope),
            ),
            "blocks": nn.ModuleList(LLaDABlock(config, i) for i in range(config.n_layers)),
        }
        if not config.weight_tying:
            modules["ff_out"] = nn.Linear(config.d_model, config.padded_vocab_size, bias=config.include_bias)
        self.transformer = nn.ModuleDict(modules)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        logits_to_keep: int | slice | torch.Tensor | None = None,
        kv_cache: LLaDAKVCache | None = None,
        return_kv_cache: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, LLaDAKVCache | None]:
        cfg = self.config
        x = self.transformer["wte"](input_ids) if inputs_embeds is None else inputs_embeds
        x = self.transformer["emb_drop"](x)
        B, T, _ = x.shape
        dtype, device = x.dtype, x.device
        official = bool(cfg.official_fp32_norm_rope)
        if kv_cache is not None:
            self._check_cache(kv_cache, B, position_ids)

        cos = sin = None
        rotate_dtype = dtype
        if cfg.rope:
            table_dtype = _stats_dtype(dtype, official)
            # official: rotate in float32 when rope_full_precision, else in the activations' dtype with float32
            # tables; default: float32 only for half precision (and only if rope_full_precision asks for it)
            if cfg.rope_full_precision and (official or dtype in _LOW_PRECISION):
                rotate_dtype = torch.float32
            positions = position_ids if position_ids is not None else torch.arange(T, device=device)
            cos, sin = rope_tables(positions, cfg.head_dim, float(cfg.rope_theta), table_dtype)

        own_keep = None  # (B, T) bool for x's own positions, None = no pads among them
        if attention_mask is not None:
            if kv_cache is not None and tuple(attention_mask.shape) != (B, T):
                raise ValueError(f"attention_mask must be (batch, length) = {(B, T)}, got {tuple(attention_mask.shape)}")
            keep = attention_mask.to(device=device).bool()
            if not bool(keep.all()):  # an all-ones mask is the same as no mask (bit-identical path)
                own_keep = keep
        key_keep = own_keep
        if kv_cache is not None and (own_keep is not None or kv_cache.attention_mask is not None):
            cached = kv_cache.attention_mask
            cached = (torch.ones(B, kv_cache.length, dtype=torch.bool, device=device) if cached is None
                      else cached.to(device=device).bool())
            own = own_keep if own_keep is not None else torch.ones(B, T, dtype=torch.bool, device=device)
            key_keep = torch.cat([cached, own], dim=1)  # keys are ordered [cached; own] in every block
        bias = None
        if key_keep is not None:
            # additive bias: pad KEYS get the most negative finite value for every query (pad queries too);
            # finite rather than -inf so an all-pad row yields uniform attention instead of NaN
            bias = torch.zeros(B, 1, 1, key_keep.shape[1], dtype=dtype, device=device)
            bias = bias.masked_fill(~key_keep[:, None, None, :], torch.finfo(dtype).min)

        impl = getattr(cfg, "_attn_implementation", None) or "sdpa"
        impl = "eager" if impl == "eager" else "sdpa"
        hidden: list[torch.Tensor] = []
        new_keys: list[torch.Tensor] = []
        new_values: list[torch.Tensor] = []
        plain = kv_cache is None and not return_kv_cache
        for layer, block in enumerate(self.transformer["blocks"]):
            if output_hidden_states:
                hidden.append(x)
            if plain:
                if self.gradient_checkpointing and self.training:
                    x = self._gradient_checkpointing_func(block.__call__, x, cos, sin, bias, rotate_dtype, impl)
                else:
                    x = block(x, cos, sin, bias, rotate_dtype, impl)
                continue
            past = None if kv_cache is None else (kv_cache.keys[layer], kv_cache.values[layer])
            if self.gradient_checkpointing and self.training:
                out = self._gradient_checkpointing_func(block.__call__, x, cos, sin, bias, rotate_dtype, impl, past,
                                                        return_kv_cache)
            else:
                out = block(x, cos, sin, bias, rotate_dtype, impl, past, return_kv_cache)
            if return_kv_cache:
                x, (k, v) = out
                new_keys.append(k)
                new_values.append(v)
            else:
                x = out
        if output_hidden_states:
            hidden.append(x)
        x = select_positions(x, logits_to_keep)
        x = self.transformer["ln_f"](x)
        if cfg.weight_tying:
            logits = F.linear(x, self.transformer["wte"].weight)
        else:
            logits = self.transformer["ff_out"](x)
        if cfg.scale_logits:
            logits = logits * (1.0 / math.sqrt(cfg.d_model))
        cache = None
        if return_kv_cache:
            cache = LLaDAKVCache(tuple(new_keys), tuple(new_values),
                                 None if own_keep is None else attention_mask.to(device=device))
        return logits, (tuple(hidden) if output_hidden_states else None), cache

    def _check_cache(self, cache: LLaDAKVCache, batch: int, position_ids: torch.Tensor | None) -> None:
        """Shape checks that turn a mismatched cache into a clear error instead of a broadcasting surprise."""
        if not isinstance(cache, LLaDAKVCache):
            raise TypeError(f"kv_cache must be a d1rl.models.LLaDAKVCache, got {type(cache).__name__}")
        cfg = self.config
        if len(cache.keys) != cfg.n_layers:
            raise ValueError(f"kv_cache has {len(cache.keys)} layers, the model {cfg.n_layers}")
        _, heads, _, head_dim = cache.keys[0].shape
        if cache.batch_size != batch or heads != cfg.effective_n_kv_heads or head_dim != cfg.head_dim:
            raise ValueError(
                f"kv_cache tensors are {tuple(cache.keys[0].shape)}; this forward needs (batch {batch}, "
                f"{cfg.effective_n_kv_heads} kv heads, C, {cfg.head_dim})"
            )
        if position_ids is None and cfg.rope:
            raise ValueError(
                "a forward with kv_cache needs position_ids: the RoPE positions of the fed tokens in the full "
                "sequence (they cannot be inferred from a subset)"
            )


class LLaDAPreTrainedModel(PreTrainedModel):
    """Common transformers plumbing (config class, init, capability flags)."""

    config_class = LLaDAConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LLaDABlock"]
    _supports_sdpa = True
    _supports_attention_backend = False

    def _init_weights(self, module: nn.Module) -> None:
        """Normal(0, init_std) for linears/embeddings, ones/zeros for norms.

        Only used for freshly created models (pretrained weights are always loaded). transformers >= 5 passes
        initialisation through its own ``initialization`` helpers, which skip tensors that were already loaded.
        """
        try:
            from transformers import initialization as init
        except ImportError:  # transformers 4.x
            init = nn.init
        std = self.config.init_std
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, LLaDARMSNorm):
            if module.weight is not None:
                init.ones_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)


class LLaDAModelLM(LLaDAPreTrainedModel):
    """LLaDA with its output head: ``model(input_ids, attention_mask=None).logits`` has shape (B, T, embedding_size).

    Registered for ``AutoModel`` and ``AutoModelForMaskedLM`` (``import d1rl``), which is what the official
    ``auto_map`` maps ``AutoModel`` to.
    """

    # Read by d1rl.sampling: forward() takes kv_cache / position_ids / return_kv_cache (LLaDAKVCache).
    supports_diffusion_kv_cache = True

    def __init__(self, config: LLaDAConfig) -> None:
        config.validate_supported()
        super().__init__(config)
        self.model = LLaDAModel(config)
        self.post_init()

    # --- embeddings accessors (used by transformers/PEFT: resize, enable_input_require_grads, ...)
    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.transformer["wte"]

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.transformer["wte"] = value

    def get_output_embeddings(self) -> nn.Module | None:
        return None if self.config.weight_tying else self.model.transformer["ff_out"]

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.model.transformer["ff_out"] = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | slice | torch.Tensor | None = None,
        kv_cache: LLaDAKVCache | None = None,
        return_kv_cache: bool = False,
        **kwargs: Any,
    ) -> MaskedLMOutput | tuple:
        """Bidirectional forward.

        Args:
            input_ids: (B, T) token ids (or pass ``inputs_embeds`` (B, T, d_model)).
            attention_mask: (B, T), 1 = real token, 0 = pad; pad keys are never attended. None or all ones = no mask.
            position_ids: optional (T,) or (B, T) RoPE positions; default 0..T-1 (the official behaviour, even for
                left-padded rows).
            labels: optional (B, T) targets with -100 = ignore; ``loss`` is the mean cross-entropy of
                ``logits[:, i]`` against ``labels[:, i]`` (no shift, no 1/t weighting: the diffusion losses live in
                ``d1rl.diffusion``).
            output_hidden_states: also return the input of every block and the final pre-norm state.
            logits_to_keep: compute the output head only at some positions (see :func:`select_positions`):
                None/0 = all, k > 0 = the last k, a slice or a 1-D index tensor. ``logits`` then has that many
                positions and ``labels`` must match them.
            kv_cache: a :class:`LLaDAKVCache` of OTHER positions (approximate diffusion KV cache, see the module
                docstring): only the positions in ``input_ids`` are computed, at RoPE positions ``position_ids``
                (required), each layer attending to the cached keys/values plus their own. ``attention_mask``
                then covers the fed positions only (the cache carries its own).
            return_kv_cache: also return ``kv_cache`` = a :class:`LLaDAKVCache` of the fed positions (the output
                is then a :class:`LLaDAMaskedLMOutput`; with ``return_dict=False`` the cache is the last element).
            kwargs: generic keywords from wrappers (``use_cache``, ``output_attentions``, ...) are accepted.
                ``past_key_values`` may only hold a :class:`LLaDAKVCache` (same as ``kv_cache``); transformers'
                autoregressive cache objects do not apply to a bidirectional model and raise. Attention maps are
                not available and asking for them raises.
        """
        past = kwargs.get("past_key_values")
        if past is not None:
            if not isinstance(past, LLaDAKVCache):
                raise ValueError(
                    f"LLaDAModelLM got past_key_values of type {type(past).__name__}: a bidirectional diffusion model "
                    "has no KV cache of transformers' autoregressive kind. The only cache it takes is "
                    "d1rl.models.LLaDAKVCache (kv_cache=..., see the sampler's cache option)"
                )
            if kv_cache is not None and kv_cache is not past:
                raise ValueError("pass the LLaDAKVCache as kv_cache or past_key_values, not two different ones")
            kv_cache = past
        if kwargs.get("output_attentions"):
            raise ValueError("LLaDAModelLM does not return attention maps (output_attentions=True)")
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("LLaDAModelLM.forward needs exactly one of input_ids or inputs_embeds")
        output_hidden_states = bool(
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        logits, hidden, new_cache = self.model(
            input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            position_ids=position_ids,
            output_hidden_states=output_hidden_states,
            logits_to_keep=logits_to_keep,
            kv_cache=kv_cache,
            return_kv_cache=return_kv_cache,
        )
        loss = None
        if labels is not None:
            flat = logits.reshape(-1, logits.shape[-1])
            flat = flat.to(torch.promote_types(flat.dtype, torch.float32))  # bf16 logits -> fp32 loss
            loss = F.cross_entropy(flat, labels.reshape(-1).to(flat.device), ignore_index=-100)
        return_dict = return_dict if return_dict is not None else getattr(self.config, "return_dict", True)
        if not return_dict:
            out = (logits,) if hidden is None else (logits, hidden)
            out = ((loss,) + out) if loss is not None else out
            return out + (new_cache,) if return_kv_cache else out
        if return_kv_cache:
            return LLaDAMaskedLMOutput(loss=loss, logits=logits, hidden_states=hidden, kv_cache=new_cache)
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=hidden)
