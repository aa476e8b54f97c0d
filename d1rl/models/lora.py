"""LoRA through PEFT, with the target-module check that d1 lacked.

d1's RL script asks PEFT for ``[q_proj, k_proj, v_proj, o_proj, up_proj, down_proj, gate_proj]``; LLaDA's linear
layers are called ``q_proj, k_proj, v_proj, attn_out, ff_proj, up_proj, ff_out``, so only four of the seven names
match and PEFT says nothing (it only errors when NOTHING matches). Here every target is checked against the model's
linear layers: in strict mode (default) a name that matches nothing is an error that lists the valid names; with
``strict=False`` the unmatched names are reported in a warning and dropped, which reproduces d1's effective choice.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from torch import nn

logger = logging.getLogger(__name__)

# LLaDA's per-block linear layers (the attention output is ``attn_out``, the MLP gate ``ff_proj``, the MLP down
# projection ``ff_out``). Note that the name ``ff_out`` also matches the output head ``model.transformer.ff_out``.
LLADA_LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out")
# d1 diffu-grpo/diffu_grpo_train.py target_modules (Llama names; only q_proj, k_proj, v_proj, up_proj exist in LLaDA).
D1_RL_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj"]


@dataclass
class LoraSettings:
    """LoRA adapter options (the ``model.lora`` config node).

    Attributes:
        enabled: wrap the model with a LoRA adapter (d1 RL: true; d1 train.yaml use_peft).
        r: LoRA rank (d1 RL diffu_grpo_train.py / train.yaml: 128).
        alpha: LoRA scaling numerator, scale = alpha / r (d1 RL: 64).
        dropout: dropout on the LoRA input (d1 RL: 0.05).
        target_modules: module names to adapt; a module matches when its name equals the target or ends with
            "." + target. Default: the q/k/v/up projections, i.e. exactly the layers d1's RL list ends up adapting
            on LLaDA (d1 lists Llama names; see D1_RL_TARGET_MODULES and ``strict``).
        adapter_path: load an existing PEFT adapter from this directory instead of creating a new one (trainable).
        strict: refuse target names that match no linear layer (default true); false drops them with a warning,
            which is how d1's seven-name list behaved.
        bias: PEFT bias mode ("none", as d1/PEFT default).
    """

    enabled: bool = False
    r: int = 128
    alpha: int = 64
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "up_proj"])
    adapter_path: str | None = None
    strict: bool = True
    bias: str = "none"


def linear_module_names(model: nn.Module) -> list[str]:
    """Sorted distinct last name components of every ``nn.Linear`` in ``model`` (what a LoRA target can name)."""
    return sorted({name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if isinstance(mod, nn.Linear)})


def resolve_target_modules(model: nn.Module, targets: list[str] | str, strict: bool = True) -> list[str] | str:
    """Return the targets that match a linear layer of ``model``; raise on unmatched ones if ``strict``.

    ``targets`` may also be a single regular expression (PEFT's convention), which must full-match at least one
    linear layer's full name.
    """
    full_names = [name for name, mod in model.named_modules() if isinstance(mod, nn.Linear)]
    valid = linear_module_names(model)
    if isinstance(targets, str):
        if not any(re.fullmatch(targets, name) for name in full_names):
            raise ValueError(
                f"LoRA target_modules regex {targets!r} matches no linear layer; valid module names: {', '.join(valid)}"
            )
        return targets
    targets = list(targets)
    if not targets:
        raise ValueError(f"LoRA target_modules is empty; valid module names: {', '.join(valid)}")

    def matches(target: str) -> bool:
        return any(name == target or name.endswith("." + target) for name in full_names)

    missing = [t for t in targets if not matches(t)]
    kept = [t for t in targets if t not in missing]
    if missing and (strict or not kept):
        raise ValueError(
            f"LoRA target_modules {missing} do not exist in {type(model).__name__}; "
            f"valid module names: {', '.join(valid)} (set lora.strict=false to drop unknown names as d1 did)"
        )
    if missing:
        logger.warning("LoRA target_modules %s match no layer and are ignored (kept: %s)", missing, kept)
    return kept


def apply_lora(model: nn.Module, settings: LoraSettings) -> Any:
    """Wrap ``model`` in a PEFT LoRA model (new adapter, or ``settings.adapter_path`` loaded as trainable).

    Only the LoRA weights are trainable afterwards. The task type is left generic on purpose: PEFT's causal-LM
    wrapper expects ``generate``/``prepare_inputs_for_generation``, which a masked diffusion LM does not have.
    """
    from peft import LoraConfig, PeftModel, get_peft_model

    if settings.adapter_path:
        return PeftModel.from_pretrained(model, settings.adapter_path, is_trainable=True)
    targets = resolve_target_modules(model, settings.target_modules, strict=settings.strict)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        bias=settings.bias,
    )
    return get_peft_model(model, config)
