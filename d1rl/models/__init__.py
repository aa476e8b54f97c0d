"""Native LLaDA model, model adapter and loading.

Importing this package (``import d1rl`` does) registers :class:`LLaDAConfig` / :class:`LLaDAModelLM` for
``model_type: "llada"`` with transformers' ``AutoConfig``, ``AutoModel`` and ``AutoModelForMaskedLM``. Official
LLaDA checkpoints carry an ``auto_map`` pointing at hub code; because the model type is registered locally,
transformers uses these classes and never prompts for (or runs) remote code.

Public API:
    LLaDAConfig, LLaDAModelLM          the model (d1rl.models.configuration_llada / modeling_llada)
    LLaDAKVCache                       per-layer keys/values for the sampler's approximate KV cache
    ModelAdapter                       mask/eos/pad/eot/bos ids + logits alignment (d1rl.models.adapter)
    ModelConfig, LoraSettings, QuantizationSettings, load_model_and_tokenizer, load_tokenizer, model_preset
                                       the ``model=`` config group and the loader (d1rl.models.loading)
    apply_lora, resolve_target_modules LoRA with checked target names (d1rl.models.lora)
    build_tiny, tiny_path              the embedded tiny model (d1rl.models.tiny)
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

from d1rl.models.adapter import ModelAdapter
from d1rl.models.configuration_llada import LLaDAConfig
from d1rl.models.loading import (
    ModelConfig,
    QuantizationSettings,
    load_model_and_tokenizer,
    load_tokenizer,
    model_preset,
)
from d1rl.models.lora import LoraSettings, apply_lora, resolve_target_modules
from d1rl.models.modeling_llada import LLaDAKVCache, LLaDAModelLM
from d1rl.models.tiny import build_tiny, tiny_path


def _register() -> None:
    """Register the LLaDA classes with the Auto factories (idempotent: re-imports and reloads are harmless)."""
    AutoConfig.register(LLaDAConfig.model_type, LLaDAConfig, exist_ok=True)
    AutoModel.register(LLaDAConfig, LLaDAModelLM, exist_ok=True)
    AutoModelForMaskedLM.register(LLaDAConfig, LLaDAModelLM, exist_ok=True)


_register()

__all__ = [
    "LLaDAConfig",
    "LLaDAKVCache",
    "LLaDAModelLM",
    "LoraSettings",
    "ModelAdapter",
    "ModelConfig",
    "QuantizationSettings",
    "apply_lora",
    "build_tiny",
    "load_model_and_tokenizer",
    "load_tokenizer",
    "model_preset",
    "resolve_target_modules",
    "tiny_path",
]
