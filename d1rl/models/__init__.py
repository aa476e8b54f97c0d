"""Native LLaDA model, model adapter and loading.

Importing this package (``import d1rl`` does) registers :class:`LLaDAConfig` / :class:`LLaDAModelLM` for
``model_type: "llada"`` with transformers' ``AutoConfig``, ``AutoModel`` and ``AutoModelForMaskedLM``. Official
LLaDA checkpoints carry an ``auto_map`` pointing at hub code; because the model type is registered locally,
transformers uses these classes and never prompts for (or runs) remote code.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

from d1rl.models.configuration_llada import LLaDAConfig
from d1rl.models.modeling_llada import LLaDAModelLM


def _register() -> None:
    """Register the LLaDA classes with the Auto factories (idempotent: re-imports and reloads are harmless)."""
    AutoConfig.register(LLaDAConfig.model_type, LLaDAConfig, exist_ok=True)
    AutoModel.register(LLaDAConfig, LLaDAModelLM, exist_ok=True)
    AutoModelForMaskedLM.register(LLaDAConfig, LLaDAModelLM, exist_ok=True)


_register()

__all__ = ["LLaDAConfig", "LLaDAModelLM"]
