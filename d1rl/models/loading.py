"""Loading a model + tokenizer from a ``model=`` config: hub id or local path, dtype, device, LoRA, 4-bit.

The one entry point, :func:`load_model_and_tokenizer`, is what every command uses, so the choices d1 hard-coded
(4-bit NF4 quantisation, LoRA r=128/alpha=64, pad = eos, ``use_cache`` off) are explicit config values here.
Errors are one line naming the problem (unknown preset, missing path, hub id unavailable offline, missing optional
dependency), because they are the first thing a new user sees.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from d1rl.models.lora import LoraSettings, apply_lora

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
TINY_NAME = "tiny"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "tokenizer.jsonl")


@dataclass
class QuantizationSettings:
    """bitsandbytes quantisation (the ``model.quantization`` node); off unless ``load_in_4bit``.

    Attributes:
        load_in_4bit: load the linear weights in 4 bit via transformers' BitsAndBytesConfig (d1 RL hard-codes true;
            needs the optional ``bitsandbytes`` dependency, ``pip install d1rl[quant]``, and a CUDA GPU).
        nf4: NF4 quantisation type instead of FP4 (d1 RL: bnb_4bit_quant_type="nf4").
        double_quant: also quantise the quantisation constants (d1 RL: bnb_4bit_use_double_quant=True).
        compute_dtype: dtype of the de-quantised matmuls (d1 RL: bnb_4bit_compute_dtype=torch.bfloat16).
    """

    load_in_4bit: bool = False
    nf4: bool = True
    double_quant: bool = True
    compute_dtype: str = "bfloat16"


@dataclass
class ModelConfig:
    """Which model to load and how (the ``model=`` config group; presets in ``configs/model/``).

    Attributes:
        name_or_path: hub id (e.g. "GSAI-ML/LLaDA-8B-Instruct", d1's model), a local HF-format directory, or "tiny"
            for the embedded tiny LLaDA built into ``$D1RL_CACHE`` (default ``~/.cache/d1rl``) on first use.
        dtype: parameter dtype: float32, bfloat16 (d1: torch_dtype=bfloat16), float16, float64, or "auto" (the
            dtype stored in the checkpoint's config, transformers' meaning of "auto").
        device: "auto" (cuda:LOCAL_RANK if CUDA is available, else cpu), "cpu", "cuda", "cuda:1", ...
        attn_implementation: "sdpa" (torch scaled_dot_product_attention; default) or "eager" (plain matmul/softmax).
        trust_remote_code: allow a checkpoint's own Python code; false by default and never needed for LLaDA (the
            native implementation is registered with transformers).
        gradient_checkpointing: recompute block activations in the backward pass to save memory (d1 RL: false).
        lora: LoRA adapter settings (see LoraSettings; d1 RL: r 128, alpha 64, dropout 0.05).
        quantization: 4-bit loading settings (see QuantizationSettings; d1 RL: 4-bit NF4, double quant, bf16 compute).
        tokenizer_name_or_path: tokenizer location if it differs from name_or_path (None = same).
        official_fp32_norm_rope: LLaDA only: replicate the official code's float32 RMSNorm/RoPE casts (matters only
            for float64 runs, e.g. reproducing reference numbers); default false.
    """

    name_or_path: str = TINY_NAME
    dtype: str = "float32"
    device: str = "auto"
    attn_implementation: str = "sdpa"
    trust_remote_code: bool = False
    gradient_checkpointing: bool = False
    lora: LoraSettings = field(default_factory=LoraSettings)
    quantization: QuantizationSettings = field(default_factory=QuantizationSettings)
    tokenizer_name_or_path: str | None = None
    official_fp32_norm_rope: bool = False


# ---------------------------------------------------------------------------------------------------------------
# presets


def preset_dir() -> Path:
    from d1rl.config import CONFIG_DIR

    return CONFIG_DIR / "model"


def available_presets() -> list[str]:
    return sorted(p.stem for p in preset_dir().glob("*.yaml"))


def model_preset(name: str) -> ModelConfig:
    """The ``configs/model/<name>.yaml`` preset as a ModelConfig (validated against the schema)."""
    from omegaconf import OmegaConf

    path = preset_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown model preset {name!r} (available: {', '.join(available_presets())})")
    merged = OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(path))
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------------
# resolving where a model lives


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def resolve_location(name_or_path: str, what: str = "model") -> str:
    """Map ``name_or_path`` to something ``from_pretrained`` can open, or raise a one-line ValueError.

    "tiny" builds/returns the embedded model directory; an existing directory is returned as is; a hub id is
    returned unchanged, except that offline (HF_HUB_OFFLINE=1) it must already be in the local HF cache.
    """
    if name_or_path == TINY_NAME:
        from d1rl.models.tiny import tiny_path

        return str(tiny_path())
    expanded = Path(name_or_path).expanduser()
    if expanded.is_dir():
        return str(expanded)
    if expanded.exists():
        raise ValueError(f"{what} path {name_or_path!r} is a file; expected a Hugging Face model directory")
    if _looks_like_path(name_or_path) or name_or_path.count("/") != 1:
        hint = ""
        if "/" not in name_or_path:
            hint = f" or model preset (available presets: {', '.join(available_presets())})"
        raise ValueError(f"{what} {name_or_path!r} not found: no such local directory, and it is not a hub id (org/name){hint}")
    if _offline():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name_or_path, "config.json" if what == "model" else "tokenizer_config.json")
        if not isinstance(cached, str):
            raise ValueError(
                f"{what} {name_or_path!r} could not be found locally: no such directory and the hub id is not in the "
                f"Hugging Face cache while offline (HF_HUB_OFFLINE=1)"
            )
    return name_or_path


def resolve_device(device: str) -> torch.device:
    """"auto" -> cuda:LOCAL_RANK when CUDA is available (one GPU per accelerate process), else cpu."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    return torch.device(device)


def resolve_dtype(dtype: str) -> torch.dtype | str:
    if dtype == "auto":
        return "auto"
    if dtype not in _DTYPES:
        raise ValueError(f"model.dtype={dtype!r} is not one of {', '.join([*_DTYPES, 'auto'])}")
    return _DTYPES[dtype]


# ---------------------------------------------------------------------------------------------------------------
# loading


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> Any:
    """Load a tokenizer ("tiny", local dir or hub id); set pad = eos when the tokenizer has no pad token (d1)."""
    from transformers import AutoTokenizer

    location = resolve_location(name_or_path, what="tokenizer")
    local = Path(location)
    if local.is_dir() and not any((local / f).exists() for f in _TOKENIZER_FILES):
        raise ValueError(
            f"no tokenizer files in {location} (looked for {', '.join(_TOKENIZER_FILES)}); "
            f"set model.tokenizer_name_or_path"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)
    except OSError as err:
        raise ValueError(f"could not load tokenizer {name_or_path!r}: {_first_line(err)}") from err
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _quantization_config(q: QuantizationSettings) -> Any:
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError(
            "model.quantization.load_in_4bit=true needs the optional bitsandbytes package: pip install 'd1rl[quant]'"
        )
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4" if q.nf4 else "fp4",
        bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=resolve_dtype(q.compute_dtype),
    )


def _as_model_config(cfg: Any) -> ModelConfig:
    """Accept a ModelConfig, an OmegaConf node / dict with its fields, or a preset name / path string."""
    if isinstance(cfg, ModelConfig):
        return cfg
    if isinstance(cfg, str):
        return model_preset(cfg) if cfg in available_presets() else ModelConfig(name_or_path=cfg)
    from omegaconf import OmegaConf

    merged = OmegaConf.merge(OmegaConf.structured(ModelConfig), cfg)
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def load_model_and_tokenizer(cfg: ModelConfig | str | Any) -> tuple[Any, Any]:
    """Load the model (LLaDA natively, or any AutoModel checkpoint) and its tokenizer as ``cfg`` says.

    Order: resolve location -> from_pretrained (dtype, attention implementation, optional 4-bit) -> device ->
    gradient checkpointing -> LoRA (new adapter or ``lora.adapter_path``). ``use_cache`` is switched off (a masked
    diffusion LM has no KV cache; d1 does the same).
    """
    from transformers import AutoModel

    cfg = _as_model_config(cfg)
    location = resolve_location(cfg.name_or_path, what="model")
    tokenizer = load_tokenizer(cfg.tokenizer_name_or_path or cfg.name_or_path, trust_remote_code=cfg.trust_remote_code)
    if cfg.attn_implementation not in ("sdpa", "eager"):
        raise ValueError(f"model.attn_implementation={cfg.attn_implementation!r} is not one of sdpa, eager")

    device = resolve_device(cfg.device)
    kwargs: dict[str, Any] = {
        "dtype": resolve_dtype(cfg.dtype),
        "attn_implementation": cfg.attn_implementation,
        "trust_remote_code": cfg.trust_remote_code,
    }
    if cfg.official_fp32_norm_rope:
        kwargs["official_fp32_norm_rope"] = True
    if cfg.quantization.load_in_4bit:
        kwargs["quantization_config"] = _quantization_config(cfg.quantization)
        kwargs["device_map"] = {"": device.index if device.type == "cuda" and device.index is not None else str(device)}
    try:
        model = AutoModel.from_pretrained(location, **kwargs)
    except OSError as err:  # hub/network/file problems: keep the first line, it names the cause
        raise ValueError(f"could not load model {cfg.name_or_path!r}: {_first_line(err)}") from err
    if not cfg.quantization.load_in_4bit:
        model.to(device)
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False
    if cfg.gradient_checkpointing:
        # non-reentrant checkpointing: works with frozen embeddings (LoRA) without requiring input grads
        enable = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5 name
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.lora.enabled or cfg.lora.adapter_path:
        model = apply_lora(model, cfg.lora)
    return model, tokenizer
