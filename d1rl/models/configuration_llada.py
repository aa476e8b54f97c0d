"""Configuration of the native LLaDA model (``model_type: "llada"``).

The field names and defaults are those of the configuration class published with the LLaDA checkpoints on the
Hugging Face hub (an OLMo-derived ``ModelConfig``; the GPT-2-sized defaults below are that class's defaults, the
real LLaDA-8B values come from its ``config.json``). An official ``config.json`` therefore loads unchanged, including
its ``auto_map`` entry: because ``"llada"`` is registered locally when :mod:`d1rl.models` is imported, transformers
uses this class and never asks to run the hub's remote code.

Only the subset of the OLMo options that LLaDA checkpoints actually use is implemented by
:class:`~d1rl.models.modeling_llada.LLaDAModelLM` (``block_type: llama``, RMSNorm, RoPE, SiLU-gated MLP, optional
grouped-query attention). Options that would change the computation and are not implemented (ALiBi, QK-norm, other
block types, ...) are rejected with a clear error by :meth:`LLaDAConfig.validate_supported` when the model is built,
instead of being silently ignored.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

# The OLMo/LLaDA ``ModelConfig`` fields with the defaults of the official class. Kept as one table so that
# ``__init__``, the docs and the tests agree. ``bos_token_id`` is not an official field; transformers writes it.
LLADA_DEFAULTS: dict[str, Any] = {
    "d_model": 768,
    "n_heads": 12,
    "n_kv_heads": None,
    "n_layers": 12,
    "mlp_ratio": 4,
    "mlp_hidden_size": None,
    "activation_type": "swiglu",
    "block_type": "sequential",
    "block_group_size": 1,
    "alibi": False,
    "alibi_bias_max": 8.0,
    "rope": False,
    "rope_full_precision": True,
    "flash_attention": False,
    "attention_dropout": 0.1,
    "multi_query_attention": None,
    "attention_layer_norm": False,
    "residual_dropout": 0.1,
    "embedding_dropout": 0.1,
    "input_emb_norm": False,
    "layer_norm_type": "default",
    "layer_norm_with_affine": True,
    "rms_norm_eps": 1e-05,
    "attention_layer_norm_with_affine": True,
    "max_sequence_length": 1024,
    "rope_theta": 10000.0,
    "include_qkv_bias": False,
    "include_bias": False,
    "bias_for_layer_norm": None,
    "scale_logits": False,
    "vocab_size": 50257,
    "embedding_size": 50304,
    "weight_tying": True,
    "eos_token_id": 50256,
    "pad_token_id": 50256,
    "mask_token_id": 50256,
    "bos_token_id": None,
    "init_device": None,
    "init_fn": "normal",
    "init_std": 0.02,
    "init_cutoff_factor": None,
    "precision": None,
    "use_cache": False,
    # --- d1rl additions (not in the official class; absent from official configs, so they take these defaults)
    "official_fp32_norm_rope": False,
}


class LLaDAConfig(PretrainedConfig):
    """Hyper-parameters of a LLaDA masked-diffusion transformer.

    Attributes:
        d_model: hidden size (official default 768; LLaDA-8B 4096).
        n_heads: number of query heads (official default 12; LLaDA-8B 32).
        n_kv_heads: number of key/value heads; None means ``n_heads`` (grouped-query attention when smaller; kv head
            g serves query heads g*r .. g*r+r-1, r = n_heads / n_kv_heads).
        n_layers: number of transformer blocks (official default 12; LLaDA-8B 32).
        mlp_ratio: MLP width as a multiple of d_model when ``mlp_hidden_size`` is None (official default 4).
        mlp_hidden_size: exact MLP width (LLaDA-8B 12288).
        activation_type: activation of the gate branch ``ff_proj``; LLaDA uses "silu" (official default "swiglu",
            which the llama block type cannot use; supported here: silu, gelu, relu).
        block_type: transformer block flavour; only "llama" (separate q/k/v, gated MLP) is implemented.
        block_group_size: FSDP grouping of blocks in the official code; must be 1 (it changes parameter names).
        alibi: ALiBi position bias (official default False); not implemented, must be False.
        alibi_bias_max: ALiBi maximum bias (unused because alibi is unsupported).
        rope: rotary position embeddings (official default False; LLaDA True). False means no position information.
        rope_full_precision: rotate q/k in float32 even when the model runs in bf16/fp16 (official default True).
        flash_attention: official flag selecting FlashAttention; ignored here (use ``attn_implementation``).
        attention_dropout: dropout on attention probabilities in training (official default 0.1; LLaDA-8B 0.0).
        multi_query_attention: official MQA switch; True means one kv head.
        attention_layer_norm: QK-norm (official default False); not implemented, must be False.
        residual_dropout: dropout on the attention and MLP outputs before the residual add (official 0.1; LLaDA 0.0).
        embedding_dropout: dropout on the token embeddings (official 0.1; LLaDA 0.0).
        input_emb_norm: Gemma-style embedding scaling (official default False); not implemented, must be False.
        layer_norm_type: normalisation type; only "rms" (LLaDA) is implemented (official default "default").
        layer_norm_with_affine: whether the norms have a learnable weight (official default True).
        rms_norm_eps: epsilon inside the RMSNorm square root (official default 1e-5).
        attention_layer_norm_with_affine: affine QK-norm (unused because QK-norm is unsupported).
        max_sequence_length: longest sequence the model was trained for (official 1024; LLaDA-8B 4096); not enforced.
        rope_theta: RoPE base (official default 10000; LLaDA 500000).
        include_qkv_bias: bias in q/k/v projections (official default False).
        include_bias: bias in every linear layer (official default False).
        bias_for_layer_norm: bias in the norms; None inherits ``include_bias`` (official default None).
        scale_logits: multiply logits by 1/sqrt(d_model) (official default False).
        vocab_size: number of real tokens (official default 50257; LLaDA-8B 126464).
        embedding_size: rows of the embedding and output matrices, may exceed vocab_size (official 50304); the
            logits have this last dimension, as in the official forward.
        weight_tying: reuse the embedding matrix as output head (official default True; LLaDA False).
        eos_token_id: end-of-text id (``<|endoftext|>`` in LLaDA).
        pad_token_id: padding id (LLaDA: same as EOS).
        mask_token_id: the diffusion mask token id (``<|mdm_mask|>``; the real LLaDA-8B value is in its config).
        bos_token_id: begin-of-text id (not an official field, written by transformers).
        init_device: official init device; ignored (weights are placed by transformers / ``.to()``).
        init_fn: official weight-init scheme name; recorded only (pretrained weights are always loaded).
        init_std: std of the normal init used for freshly created weights (official default 0.02).
        init_cutoff_factor: official truncated-normal cutoff; recorded only.
        precision: training precision label of the official code (e.g. "amp_bf16"); informational.
        use_cache: LLaDA has no KV cache; always False (official default False).
        official_fp32_norm_rope: d1rl option, default False. True replicates the official code's float32 casts
            (RMSNorm statistics and RoPE tables/rotation in float32 even when the model runs in float64), which
            makes float64 logits bit-compatible with the official implementation. False (default) computes norms
            and RoPE in the model's dtype, except bf16/fp16 where they are done in float32 for stability.
    """

    model_type = "llada"
    keys_to_ignore_at_inference = ["past_key_values"]
    # Standard transformers names for the OLMo-style fields (used by PEFT, accelerate, TRL helpers).
    attribute_map = {
        "hidden_size": "d_model",
        "num_attention_heads": "n_heads",
        "num_hidden_layers": "n_layers",
        "max_position_embeddings": "max_sequence_length",
    }

    def __init__(self, **kwargs: Any) -> None:
        # Official configs always spell every field out; missing ones take the official class defaults.
        values = {key: kwargs.pop(key, default) for key, default in LLADA_DEFAULTS.items()}
        # Standard names passed by generic tooling (e.g. ``hidden_size=...``) map onto the LLaDA names.
        for std_name, llada_name in self.attribute_map.items():
            if std_name in kwargs:
                values[llada_name] = kwargs.pop(std_name)
        kwargs.setdefault("architectures", ["LLaDAModelLM"])
        token_ids = {k: values.pop(k) for k in ("eos_token_id", "pad_token_id", "bos_token_id")}
        for key, value in values.items():
            setattr(self, key, value)
        # LLaDA never ties embeddings through transformers: with ``weight_tying`` the head reuses ``wte`` directly.
        kwargs["tie_word_embeddings"] = False
        super().__init__(**token_ids, **kwargs)
        # Some transformers versions reset token ids inside the base __init__; make sure ours win.
        for key, value in token_ids.items():
            setattr(self, key, value)

    # ----------------------------------------------------------------------------------------------------------
    @property
    def effective_n_kv_heads(self) -> int:
        """Number of key/value heads after resolving ``n_kv_heads`` and ``multi_query_attention``."""
        if self.n_kv_heads is None:
            return 1 if self.multi_query_attention is True else self.n_heads
        if self.multi_query_attention is None:
            return self.n_kv_heads
        expected = 1 if self.multi_query_attention else self.n_heads
        if self.n_kv_heads != expected:
            raise ValueError(
                f"LLaDAConfig: n_kv_heads={self.n_kv_heads} contradicts multi_query_attention="
                f"{self.multi_query_attention}; set only one of them"
            )
        return expected

    @property
    def num_key_value_heads(self) -> int:
        return self.effective_n_kv_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def mlp_width(self) -> int:
        """Width of the gated MLP: ``mlp_hidden_size`` or ``mlp_ratio * d_model`` (official rule)."""
        return self.mlp_hidden_size if self.mlp_hidden_size is not None else self.mlp_ratio * self.d_model

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the embedding/output matrices (``embedding_size``, falling back to ``vocab_size``)."""
        return self.embedding_size if self.embedding_size is not None else self.vocab_size

    def validate_supported(self) -> None:
        """Raise ``ValueError`` naming the field if the config asks for something this implementation lacks.

        Silently ignoring e.g. ``alibi: true`` would load weights into a model that computes something else, so every
        computation-changing option that is not implemented is refused here.
        """

        def refuse(field: str, value: Any, allowed: str) -> None:
            raise ValueError(
                f"LLaDAConfig.{field}={value!r} is not supported by d1rl's native LLaDA (supported: {allowed})"
            )

        if str(self.block_type) != "llama":
            refuse("block_type", self.block_type, "'llama'")
        if str(self.layer_norm_type) != "rms":
            refuse("layer_norm_type", self.layer_norm_type, "'rms'")
        if str(self.activation_type) not in ("silu", "gelu", "relu"):
            refuse("activation_type", self.activation_type, "'silu', 'gelu', 'relu'")
        if self.alibi:
            refuse("alibi", self.alibi, "false")
        if self.attention_layer_norm:
            refuse("attention_layer_norm", self.attention_layer_norm, "false")
        if self.input_emb_norm:
            refuse("input_emb_norm", self.input_emb_norm, "false")
        if self.block_group_size != 1:
            refuse("block_group_size", self.block_group_size, "1")
        if self.d_model % self.n_heads != 0:
            raise ValueError(f"LLaDAConfig: d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.head_dim % 2 != 0 and self.rope:
            raise ValueError(f"LLaDAConfig: RoPE needs an even head dim, got d_model/n_heads={self.head_dim}")
        kv = self.effective_n_kv_heads
        if self.n_heads % kv != 0:
            raise ValueError(f"LLaDAConfig: n_heads={self.n_heads} is not a multiple of n_kv_heads={kv}")
