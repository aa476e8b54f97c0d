"""ModelAdapter, gradient checkpointing, save/load round trip, LoRA (checked targets, training, adapter reload)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

import d1rl  # noqa: F401
from d1rl.models import LLaDAModelLM, LoraSettings, ModelAdapter, apply_lora, resolve_target_modules
from d1rl.models.lora import D1_RL_TARGET_MODULES


@pytest.fixture()
def fixture_model(fixtures_dir: Path) -> LLaDAModelLM:
    return AutoModel.from_pretrained(str(fixtures_dir / "llada-tiny")).double()


# ------------------------------------------------------------------ adapter
def test_adapter_reads_config(fixture_model: LLaDAModelLM) -> None:
    a = ModelAdapter.from_pretrained(fixture_model)
    assert (a.mask_id, a.eos_id, a.pad_id, a.bos_id, a.eot_id, a.logits_shift) == (2000, 1999, 1999, 1998, None, 0)
    assert ModelAdapter.from_pretrained(fixture_model.config).mask_id == 2000  # a bare config works too
    assert ModelAdapter.from_pretrained(fixture_model, mask_id=5).mask_id == 5


def test_adapter_falls_back_to_tokenizer_and_errors_clearly(tiny_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(str(tiny_dir))
    model = AutoModel.from_pretrained(str(tiny_dir))
    mask = tok.convert_tokens_to_ids("<|mdm_mask|>")
    cfg = copy.deepcopy(model.config)
    cfg.mask_token_id = None
    assert ModelAdapter.from_pretrained(cfg, tok).mask_id == mask
    # the literal <|mdm_mask|> token is found even when the tokenizer has no mask_token role (LLaDA-8B's case)
    tok_no_role = AutoTokenizer.from_pretrained(str(tiny_dir))
    tok_no_role.mask_token = None
    assert tok_no_role.mask_token_id is None
    assert ModelAdapter.from_pretrained(cfg, tok_no_role).mask_id == mask
    with pytest.raises(ValueError, match="cannot find the diffusion mask token id"):
        ModelAdapter.from_pretrained(cfg)
    cfg.mask_token_id = mask - 1
    with pytest.raises(ValueError, match="mask token id conflict"):
        ModelAdapter.from_pretrained(cfg, tok)
    cfg.mask_token_id = 10**6
    with pytest.raises(ValueError, match="outside the model vocabulary"):
        ModelAdapter.from_pretrained(cfg)


# ------------------------------------------------------------------ gradient checkpointing
def _grads(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    logits = model(ids, attention_mask=mask).logits
    weights = torch.linspace(-1, 1, logits.shape[-1], dtype=logits.dtype)
    (logits * weights).sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_gradient_checkpointing_same_gradients(fixture_model: LLaDAModelLM, reference) -> None:
    _, T = reference
    ids, mask = T["forward_padded/input_ids"][:2, :24], T["forward_padded/attention_mask"][:2, :24].clone()
    mask[:, -1] = 1
    model = fixture_model.train()
    calls = []
    hook = model.model.transformer["blocks"][0].register_forward_pre_hook(lambda *a: calls.append(1))
    plain = _grads(model, ids, mask)
    assert len(calls) == 1
    assert model.supports_gradient_checkpointing
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert model.model.gradient_checkpointing is True
    calls.clear()
    ckpt = _grads(model, ids, mask)
    hook.remove()
    assert len(calls) == 2  # the block really was recomputed in the backward pass
    assert plain.keys() == ckpt.keys() and len(plain) == 21
    assert max((plain[n] - ckpt[n]).abs().max().item() for n in plain) <= 1e-12
    assert min(g.abs().max().item() for g in plain.values()) > 0


# ------------------------------------------------------------------ save / load
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_save_pretrained_round_trip(fixtures_dir: Path, tmp_path: Path, dtype: torch.dtype) -> None:
    model = AutoModel.from_pretrained(str(fixtures_dir / "llada-tiny"), dtype=dtype).eval()
    model.save_pretrained(str(tmp_path))
    assert (tmp_path / "model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))
    again = AutoModel.from_pretrained(str(tmp_path), dtype="auto").eval()
    assert type(again) is LLaDAModelLM and again.dtype == dtype
    strip = lambda d: {k: v for k, v in d.items() if k != "_name_or_path"}  # noqa: E731
    assert strip(again.config.to_dict()) == strip(model.config.to_dict())
    ids = torch.arange(40).view(2, 20) * 37 % 1990
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)


# ------------------------------------------------------------------ LoRA
def test_lora_rejects_d1_names_in_strict_mode(fixture_model: LLaDAModelLM) -> None:
    with pytest.raises(ValueError) as info:
        apply_lora(fixture_model, LoraSettings(enabled=True, r=4, target_modules=D1_RL_TARGET_MODULES))
    msg = str(info.value)
    assert "['o_proj', 'down_proj', 'gate_proj'] do not exist" in msg
    assert "valid module names: attn_out, ff_out, ff_proj, k_proj, q_proj, up_proj, v_proj" in msg
    assert "\n" not in msg
    # non-strict reproduces d1's effective choice: only the four names that exist are adapted
    assert resolve_target_modules(fixture_model, D1_RL_TARGET_MODULES, strict=False) == [
        "q_proj", "k_proj", "v_proj", "up_proj"
    ]
    with pytest.raises(ValueError, match="do not exist"):
        resolve_target_modules(fixture_model, ["o_proj"], strict=False)  # nothing left at all
    with pytest.raises(ValueError, match="regex"):
        resolve_target_modules(fixture_model, r".*\.nothing")


def test_lora_trains_and_adapter_reloads(fixtures_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel

    torch.manual_seed(0)
    base = AutoModel.from_pretrained(str(fixtures_dir / "llada-tiny")).double()
    frozen = {n: p.detach().clone() for n, p in base.named_parameters()}
    settings = LoraSettings(enabled=True, r=4, alpha=8, dropout=0.0, target_modules=D1_RL_TARGET_MODULES, strict=False)
    model = apply_lora(base, settings)
    lora_names = [n for n, p in model.named_parameters() if p.requires_grad]
    # 4 adapted layers x 2 blocks x (A, B)
    assert len(lora_names) == 16 and all("lora_" in n for n in lora_names)
    assert {n.split(".")[-4] for n in lora_names} == {"q_proj", "k_proj", "v_proj", "up_proj"}

    ids = torch.randint(0, 1990, (2, 16), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    noisy = ids.clone()
    noisy[:, 8:] = 2000  # mask the second half, predict it
    labels[:, :8] = -100
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss0 = model(noisy, labels=labels).loss
    loss0.backward()
    opt.step()
    opt.zero_grad()
    loss1 = model(noisy, labels=labels).loss
    assert loss1.item() < loss0.item()
    # base weights untouched, LoRA B moved away from its zero init
    for n, p in model.get_base_model().named_parameters():
        if "lora_" not in n:
            assert torch.equal(p, frozen[n.replace(".base_layer", "")]), n
    assert any(p.abs().max().item() > 0 for n, p in model.named_parameters() if "lora_B" in n)

    model.eval()
    model.save_pretrained(str(tmp_path / "adapter"))
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    fresh = AutoModel.from_pretrained(str(fixtures_dir / "llada-tiny")).double()
    reloaded = PeftModel.from_pretrained(fresh, str(tmp_path / "adapter")).eval()
    via_settings = apply_lora(
        AutoModel.from_pretrained(str(fixtures_dir / "llada-tiny")).double(),
        LoraSettings(adapter_path=str(tmp_path / "adapter")),
    ).eval()
    with torch.no_grad():
        expected = model(noisy).logits
        assert torch.equal(reloaded(noisy).logits, expected)
        assert torch.equal(via_settings(noisy).logits, expected)
        plain = AutoModel.from_pretrained(str(fixtures_dir / "llada-tiny")).double().eval()
        assert (plain(noisy).logits - expected).abs().max().item() > 1e-6  # the adapter does something
    assert any(p.requires_grad for p in via_settings.parameters())  # adapter_path loads as trainable


def test_lora_with_gradient_checkpointing_gets_gradients(fixtures_dir: Path) -> None:
    base = AutoModel.from_pretrained(str(fixtures_dir / "llada-tiny")).double()
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = apply_lora(base, LoraSettings(enabled=True, r=2, alpha=4, dropout=0.0, target_modules=["attn_out"]))
    model.train()
    ids = torch.arange(24).view(2, 12)
    (model(ids).logits.double().pow(2).mean()).backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_A" in n]
    assert len(grads) == 2 and all(g is None or g.abs().sum() == 0 for g in grads)  # B = 0 at init: dL/dA = 0
    grads_b = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
    assert all(g is not None and g.abs().max().item() > 0 for g in grads_b)


# ------------------------------------------------------------------ logits_to_keep
def test_logits_to_keep_selects_positions_exactly(fixture_model: LLaDAModelLM) -> None:
    torch.manual_seed(0)
    ids = torch.randint(0, 1990, (2, 12))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    full = fixture_model(ids, attention_mask=mask).logits
    assert full.shape[1] == 12
    assert torch.equal(fixture_model(ids, attention_mask=mask, logits_to_keep=0).logits, full)
    # the head is a matmul over fewer rows: same values up to summation order (float64)
    same = dict(rtol=0.0, atol=1e-12)
    torch.testing.assert_close(fixture_model(ids, attention_mask=mask, logits_to_keep=5).logits, full[:, -5:], **same)
    sliced = fixture_model(ids, attention_mask=mask, logits_to_keep=slice(4, 8)).logits
    torch.testing.assert_close(sliced, full[:, 4:8], **same)
    picked = torch.tensor([0, 7, 11])
    torch.testing.assert_close(fixture_model(ids, attention_mask=mask, logits_to_keep=picked).logits, full[:, picked], **same)
    with pytest.raises(ValueError, match="logits_to_keep"):
        fixture_model(ids, logits_to_keep=-1)
    with pytest.raises(TypeError, match="logits_to_keep"):
        fixture_model(ids, logits_to_keep=1.5)
