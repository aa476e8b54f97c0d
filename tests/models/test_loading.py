"""ModelConfig presets and load_model_and_tokenizer: options applied, one-line errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import d1rl  # noqa: F401
from d1rl.models import LoraSettings, ModelConfig, load_model_and_tokenizer, model_preset
from d1rl.models.loading import QuantizationSettings, available_presets


def test_presets() -> None:
    assert available_presets() == ["llada_8b_base", "llada_8b_instruct", "tiny"]
    inst = model_preset("llada_8b_instruct")
    assert (inst.name_or_path, inst.dtype, inst.trust_remote_code) == ("GSAI-ML/LLaDA-8B-Instruct", "bfloat16", False)
    base = model_preset("llada_8b_base")
    assert (base.name_or_path, base.dtype) == ("GSAI-ML/LLaDA-8B-Base", "bfloat16")
    tiny = model_preset("tiny")
    assert tiny.name_or_path == "tiny" and tiny.lora.enabled is False
    # d1 RL defaults carried by the schema
    assert (tiny.lora.r, tiny.lora.alpha, tiny.lora.dropout) == (128, 64, 0.05)
    q = QuantizationSettings()
    assert (q.load_in_4bit, q.nf4, q.double_quant, q.compute_dtype) == (False, True, True, "bfloat16")


def test_unknown_preset_and_bad_keys_fail_with_one_line() -> None:
    with pytest.raises(ValueError) as info:
        model_preset("llada_8b_instuct")
    assert str(info.value) == (
        "unknown model preset 'llada_8b_instuct' (available: llada_8b_base, llada_8b_instruct, tiny)"
    )
    with pytest.raises(ValueError) as info:
        load_model_and_tokenizer("llada_8b_instuct")  # neither preset, directory nor hub id
    assert "llada_8b_instuct" in str(info.value) and "available presets" in str(info.value)
    assert "\n" not in str(info.value)
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError

    with pytest.raises(ConfigKeyError, match="rank"):
        OmegaConf.merge(OmegaConf.structured(ModelConfig), {"lora": {"rank": 8}})


def test_missing_local_path(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "ckpt"
    with pytest.raises(ValueError) as info:
        load_model_and_tokenizer(ModelConfig(name_or_path=str(missing)))
    msg = str(info.value)
    assert str(missing) in msg and "no such local directory" in msg and "\n" not in msg


def test_checkpoint_without_tokenizer(fixtures_dir: Path, tiny_dir: Path) -> None:
    with pytest.raises(ValueError) as info:
        load_model_and_tokenizer(ModelConfig(name_or_path=str(fixtures_dir / "llada-tiny")))
    assert str(info.value).startswith(f"no tokenizer files in {fixtures_dir / 'llada-tiny'}")
    assert "model.tokenizer_name_or_path" in str(info.value) and "\n" not in str(info.value)
    # with a tokenizer from elsewhere it loads (ids come from the model config for the fixture)
    model, tok = load_model_and_tokenizer(
        ModelConfig(name_or_path=str(fixtures_dir / "llada-tiny"), tokenizer_name_or_path=str(tiny_dir), device="cpu")
    )
    assert model.config.mask_token_id == 2000 and sum(p.numel() for p in model.parameters()) == 356672


def test_hub_id_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ValueError) as info:
        load_model_and_tokenizer("llada_8b_instruct")
    msg = str(info.value)
    assert "'GSAI-ML/LLaDA-8B-Instruct' could not be found locally" in msg
    assert "HF_HUB_OFFLINE=1" in msg and "\n" not in msg


def test_quantization_needs_bitsandbytes(tiny_dir: Path) -> None:
    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed here; the missing-dependency message cannot be exercised")
    cfg = ModelConfig(name_or_path=str(tiny_dir), quantization=QuantizationSettings(load_in_4bit=True))
    with pytest.raises(ImportError, match=r"bitsandbytes.*d1rl\[quant\]"):
        load_model_and_tokenizer(cfg)


def test_bad_dtype_and_attn(tiny_dir: Path) -> None:
    with pytest.raises(ValueError, match="model.dtype='float8'"):
        load_model_and_tokenizer(ModelConfig(name_or_path=str(tiny_dir), dtype="float8"))
    with pytest.raises(ValueError, match="attn_implementation='flash'"):
        load_model_and_tokenizer(ModelConfig(name_or_path=str(tiny_dir), attn_implementation="flash"))


def test_local_path_with_dtype_eager_checkpointing_and_lora(tiny_dir: Path) -> None:
    cfg = ModelConfig(
        name_or_path=str(tiny_dir),
        dtype="float64",
        device="cpu",
        attn_implementation="eager",
        gradient_checkpointing=True,
        lora=LoraSettings(enabled=True, r=4, alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    model, tok = load_model_and_tokenizer(cfg)
    base = model.get_base_model()
    assert type(model).__name__ == "PeftModel"
    assert base.dtype == torch.float64 and base.device.type == "cpu"
    assert base.config._attn_implementation == "eager"
    assert base.model.gradient_checkpointing is True
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    d, kv, L = 128, 64, 4  # q: (128->128), v: (128->64); LoRA adds r*(in+out) per layer
    assert trainable == L * (4 * (d + d) + 4 * (d + kv))
    assert tok.pad_token_id == tok.eos_token_id

    # the same weights through the default (sdpa, float32, no LoRA) path agree with the eager float64 path
    plain, _ = load_model_and_tokenizer(ModelConfig(name_or_path=str(tiny_dir), device="cpu"))
    ids = torch.arange(30).view(2, 15) * 7 % 700
    with torch.no_grad():
        a = model.eval()(ids).logits
        b = plain.eval()(ids).logits
    assert (a - b.double()).abs().max().item() < 1e-4
