"""The native LLaDA forward against the official reference vectors (shared/fixtures, README section 2-3.1)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import d1rl  # noqa: F401  (registers the Auto classes)
from d1rl.models import LLaDAConfig, LLaDAModelLM


def _load(fixtures_dir: Path, **kw) -> LLaDAModelLM:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(fixtures_dir / "llada-tiny"), **kw)
    return model.double().eval()


@pytest.fixture(scope="module")
def tiny_path(fixtures_dir: Path) -> Path:
    return fixtures_dir / "llada-tiny"


def test_auto_model_loads_native_class_without_remote_code_and_stdin_closed(tiny_path: Path) -> None:
    """`import d1rl` alone makes AutoModel pick our class for a config with auto_map, with no prompt."""
    code = (
        "import d1rl, transformers as t, torch\n"
        f"p = {str(tiny_path)!r}\n"
        "m = t.AutoModel.from_pretrained(p)\n"
        "mm = t.AutoModelForMaskedLM.from_pretrained(p)\n"
        "c = t.AutoConfig.from_pretrained(p)\n"
        "print(type(m).__module__, type(m).__name__, type(mm).__name__, type(c).__name__,"
        " sum(x.numel() for x in m.parameters()))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == [
        "d1rl.models.modeling_llada",
        "LLaDAModelLM",
        "LLaDAModelLM",
        "LLaDAConfig",
        "356672",
    ]


def test_parameter_names_and_shapes_equal_the_checkpoint(tiny_path: Path) -> None:
    on_disk = load_file(str(tiny_path / "model.safetensors"))
    model = _load(tiny_path.parent)
    ours = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert ours == {n: tuple(t.shape) for n, t in on_disk.items()}
    assert len(ours) == 21
    # weights are loaded, not re-initialised: bit-identical after the float64 cast
    for name, param in model.named_parameters():
        assert torch.equal(param, on_disk[name].double()), name


def test_config_accepts_official_json_and_keeps_every_field(tiny_path: Path) -> None:
    import json

    raw = json.loads((tiny_path / "config.json").read_text())
    cfg = LLaDAConfig.from_pretrained(str(tiny_path))
    skip = {"dtype", "transformers_version", "architectures", "auto_map", "model_type"}
    for key, value in raw.items():
        if key not in skip:
            assert getattr(cfg, key) == value, key
    assert cfg.auto_map == raw["auto_map"]
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.num_hidden_layers) == (64, 4, 2)
    assert cfg.official_fp32_norm_rope is False
    # official class defaults for anything a config leaves out
    default = LLaDAConfig()
    assert (default.d_model, default.rope_theta, default.mask_token_id, default.weight_tying) == (768, 10000.0, 50256, True)


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_pure_float64_logits(reference, fixtures_dir: Path, impl: str) -> None:
    _, T = reference
    model = _load(fixtures_dir, attn_implementation=impl)
    with torch.no_grad():
        plain = model(T["forward_plain/input_ids"]).logits
        padded = model(T["forward_padded/input_ids"], attention_mask=T["forward_padded/attention_mask"]).logits
    assert plain.shape == (3, 48, 2048) and plain.dtype == torch.float64
    # our default float64 path against the non-official pure-float64 variant: essentially exact
    assert (plain - T["forward_plain/logits_pure64"]).abs().max().item() <= 1e-9
    # and against the official tensors (which contain float32 RMSNorm/RoPE rounding, up to ~2.5e-5)
    valid = T["forward_padded/attention_mask"].bool()
    assert (plain - T["forward_plain/logits"]).abs().max().item() <= 1e-4
    assert (padded - T["forward_padded/logits"])[valid].abs().max().item() <= 1e-4


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_official_fp32_casts_replicate_official_logits(reference, fixtures_dir: Path, impl: str) -> None:
    _, T = reference
    model = _load(fixtures_dir, attn_implementation=impl, official_fp32_norm_rope=True)
    assert model.config.official_fp32_norm_rope is True
    with torch.no_grad():
        plain = model(T["forward_plain/input_ids"]).logits
        padded = model(T["forward_padded/input_ids"], attention_mask=T["forward_padded/attention_mask"]).logits
    valid = T["forward_padded/attention_mask"].bool()
    assert (plain - T["forward_plain/logits"]).abs().max().item() <= 1e-10
    assert (padded - T["forward_padded/logits"])[valid].abs().max().item() <= 1e-10
    # the official casts are what separates the two variants (1.86e-5 in the fixture README)
    assert (plain - T["forward_plain/logits_pure64"]).abs().max().item() > 1e-6


def test_mask_semantics(reference, fixtures_dir: Path) -> None:
    _, T = reference
    model = _load(fixtures_dir)
    ids, mask = T["forward_padded/input_ids"], T["forward_padded/attention_mask"]
    valid = mask.bool()
    with torch.no_grad():
        base = model(ids, attention_mask=mask).logits
        # all-ones mask is exactly "no mask"
        plain = T["forward_plain/input_ids"]
        assert torch.equal(model(plain).logits, model(plain, attention_mask=torch.ones_like(plain)).logits)
        # pad ids are invisible under the mask
        other = ids.masked_fill(~valid, 7)
        assert (model(other, attention_mask=mask).logits - base)[valid].abs().max().item() == 0.0
        # without the mask the pads do change the valid logits (README: up to 15.6)
        assert (model(ids).logits - base)[valid].abs().max().item() > 1.0
        # batched == row by row
        rows = torch.cat([model(ids[i : i + 1], attention_mask=mask[i : i + 1]).logits for i in range(3)])
        assert (rows - base).abs().max().item() <= 1e-12
        # RoPE is relative and pad keys are masked: a left-padded row equals its unpadded tokens at 0..n-1
        n = int(mask[2].sum())
        alone = model(ids[2:3, -n:]).logits[0]
        assert (alone - base[2, -n:]).abs().max().item() <= 1e-10


def test_attention_is_bidirectional(reference, fixtures_dir: Path) -> None:
    _, T = reference
    model = _load(fixtures_dir)
    ids = T["forward_plain/input_ids"][:1].clone()
    with torch.no_grad():
        before = model(ids).logits
        ids[0, -1] = (ids[0, -1] + 1) % 1990
        after = model(ids).logits
    # changing the LAST token changes the logits at the FIRST position (no causal mask)
    assert (after[0, 0] - before[0, 0]).abs().max().item() > 1e-3


def test_gqa_interleaved_repeat_matches_mha_with_repeated_heads() -> None:
    """kv head g serves query heads g*r .. g*r+r-1 (repeat_interleave), checked against an equivalent MHA model."""
    torch.manual_seed(0)
    common = dict(
        d_model=32, n_heads=4, n_layers=1, mlp_hidden_size=48, vocab_size=64, embedding_size=64,
        block_type="llama", layer_norm_type="rms", activation_type="silu", rope=True, rope_theta=10000.0,
        weight_tying=False, attention_dropout=0.0, residual_dropout=0.0, embedding_dropout=0.0,
    )
    gqa = LLaDAModelLM(LLaDAConfig(n_kv_heads=2, **common)).double().eval()
    mha = LLaDAModelLM(LLaDAConfig(n_kv_heads=4, **common)).double().eval()
    state = gqa.state_dict()
    hd, r = 8, 2
    for name in ("k_proj", "v_proj"):
        w = state[f"model.transformer.blocks.0.{name}.weight"].view(2, hd, 32)
        state[f"model.transformer.blocks.0.{name}.weight"] = w.repeat_interleave(r, dim=0).reshape(4 * hd, 32)
    mha.load_state_dict(state)
    assert gqa.model.transformer.blocks[0].k_proj.weight.shape == (16, 32)
    ids = torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        a, b = gqa(ids).logits, mha(ids).logits
    assert (a - b).abs().max().item() <= 1e-12
    # a block-repeat (head g serves g, g+2) would NOT match: make sure the test can tell the two apart
    wrong = dict(state)
    for name in ("k_proj", "v_proj"):
        w = gqa.state_dict()[f"model.transformer.blocks.0.{name}.weight"].view(2, hd, 32)
        wrong[f"model.transformer.blocks.0.{name}.weight"] = w.repeat(r, 1, 1).reshape(4 * hd, 32)
    mha.load_state_dict(wrong)
    with torch.no_grad():
        assert (gqa(ids).logits - mha(ids).logits).abs().max().item() > 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_forward_close_to_float64(reference, fixtures_dir: Path, dtype: torch.dtype) -> None:
    """fp32/bf16 run the same computation: compared with a float64 run of the SAME (rounded) weights."""
    _, T = reference
    ids, mask = T["forward_padded/input_ids"], T["forward_padded/attention_mask"]
    valid = mask.bool()
    low_model = _load(fixtures_dir).to(dtype)
    ref_model = _load(fixtures_dir).to(dtype).double()  # weights rounded to `dtype`, computed in float64
    with torch.no_grad():
        low = low_model(ids, attention_mask=mask).logits
        ref = ref_model(ids, attention_mask=mask).logits
    assert low.dtype == dtype
    assert torch.isfinite(low).all()
    err = (low.double() - ref)[valid]
    top1 = (low.double().argmax(-1) == ref.argmax(-1))[valid].double().mean().item()
    if dtype == torch.float32:
        assert err.abs().max().item() <= 1e-4
        assert top1 == 1.0
    else:
        # logits std ~2.9; bf16 keeps 8 mantissa bits. Measured (CPU): mean 0.051, max 0.76, top-1 agreement 0.925
        assert err.abs().mean().item() <= 0.1
        assert err.abs().max().item() <= 1.5
        assert top1 >= 0.9


def test_unsupported_options_are_refused() -> None:
    with pytest.raises(ValueError, match="alibi"):
        LLaDAModelLM(LLaDAConfig(block_type="llama", layer_norm_type="rms", activation_type="silu", alibi=True))
    with pytest.raises(ValueError, match="block_type"):
        LLaDAModelLM(LLaDAConfig())  # the official class defaults describe an OLMo "sequential" block


def test_forward_options(reference, fixtures_dir: Path) -> None:
    _, T = reference
    model = _load(fixtures_dir)
    ids = T["forward_plain/input_ids"][:2, :20]
    with torch.no_grad():
        base = model(ids).logits
        # inputs_embeds is the same as ids
        emb = model.get_input_embeddings()(ids)
        assert torch.equal(model(inputs_embeds=emb).logits, base)
        # RoPE positions: a constant shift is invisible (relative), a rescaling is not
        pos = torch.arange(20)
        assert (model(ids, position_ids=pos + 7).logits - base).abs().max().item() <= 1e-10
        assert (model(ids, position_ids=2 * pos).logits - base).abs().max().item() > 1e-3
        # labels -> plain mean cross-entropy at labelled positions, no shift
        labels = torch.full_like(ids, -100)
        labels[:, 5:9] = ids[:, 5:9]
        out = model(ids, labels=labels, output_hidden_states=True)
        manual = -torch.log_softmax(base[:, 5:9], -1).gather(-1, ids[:, 5:9, None]).mean()
        assert abs(out.loss.item() - manual.item()) <= 1e-12
        assert len(out.hidden_states) == model.config.n_layers + 1
        assert torch.equal(out.hidden_states[0], emb)
        tup = model(ids, return_dict=False)
        assert isinstance(tup, tuple) and torch.equal(tup[0], base)
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model()
    with pytest.raises(ValueError, match="no KV cache"):
        model(ids, past_key_values=object())


def test_llada_8b_config_shapes_on_meta_device() -> None:
    """The published LLaDA-8B config (d1-reference.md) builds with the official parameter shapes and count."""
    cfg = LLaDAConfig(
        d_model=4096, n_heads=32, n_kv_heads=32, n_layers=32, mlp_hidden_size=12288, mlp_ratio=4,
        activation_type="silu", block_type="llama", layer_norm_type="rms", rms_norm_eps=1e-5, rope=True,
        rope_theta=500000.0, vocab_size=126464, embedding_size=126464, weight_tying=False, include_bias=False,
        bias_for_layer_norm=False, attention_dropout=0.0, residual_dropout=0.0, embedding_dropout=0.0,
        eos_token_id=126081, pad_token_id=126081, mask_token_id=126336, max_sequence_length=4096,
    )
    with torch.device("meta"):
        model = LLaDAModelLM(cfg)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert shapes["model.transformer.wte.weight"] == (126464, 4096)
    assert shapes["model.transformer.ff_out.weight"] == (126464, 4096)
    assert shapes["model.transformer.blocks.31.ff_proj.weight"] == (12288, 4096)
    assert shapes["model.transformer.blocks.31.ff_out.weight"] == (4096, 12288)
    assert len(shapes) == 2 + 1 + 32 * 9
    assert sum(p.numel() for p in model.parameters()) == 8_015_581_184
