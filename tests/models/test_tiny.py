"""The embedded tiny LLaDA + tokenizer: build, reload, template, digits, ids, forward, cache."""

from __future__ import annotations

import filecmp
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

import d1rl  # noqa: F401
from d1rl.models import LLaDAModelLM, ModelAdapter, ModelConfig, build_tiny, load_model_and_tokenizer
from d1rl.models.tiny import FORMAT_TOKENS, SPECIAL_TOKENS, TINY_VERSION


def test_reload_and_parameter_count(tiny_dir: Path) -> None:
    model = AutoModel.from_pretrained(str(tiny_dir))
    tok = AutoTokenizer.from_pretrained(str(tiny_dir))
    assert isinstance(model, LLaDAModelLM)
    cfg = model.config
    V, d, L, h, kv = len(tok), cfg.d_model, cfg.n_layers, cfg.mlp_hidden_size, cfg.effective_n_kv_heads * cfg.head_dim
    assert (d, L, cfg.n_heads, cfg.effective_n_kv_heads, h) == (128, 4, 4, 2, 384)
    assert cfg.vocab_size == cfg.embedding_size == V
    assert 300 <= V <= 2048
    expected = 2 * V * d + L * (2 * d + 2 * d * d + 2 * d * kv + 3 * d * h) + d
    assert sum(p.numel() for p in model.parameters()) == expected
    assert (tiny_dir / "model.safetensors").is_file() and not list(tiny_dir.glob("*.bin"))
    on_disk = load_file(str(tiny_dir / "model.safetensors"))
    assert all(torch.equal(p, on_disk[n]) for n, p in model.named_parameters())
    # seeded init: N(0, 0.02^2) matrices, unit norms
    assert abs(on_disk["model.transformer.wte.weight"].std().item() - 0.02) < 0.001
    assert torch.equal(on_disk["model.transformer.ln_f.weight"], torch.ones(d))


def test_build_is_deterministic(tiny_dir: Path, tmp_path: Path) -> None:
    other = build_tiny(tmp_path / "again")
    assert filecmp.cmp(tiny_dir / "tokenizer.json", other / "tokenizer.json", shallow=False)
    a, b = load_file(str(tiny_dir / "model.safetensors")), load_file(str(other / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    reseeded = load_file(str(build_tiny(tmp_path / "seed1", seed=1, n_layers=1) / "model.safetensors"))
    assert not torch.equal(reseeded["model.transformer.wte.weight"], a["model.transformer.wte.weight"])
    assert "model.transformer.blocks.1.q_proj.weight" not in reseeded


def test_build_rejects_unknown_option(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_layerz"):
        build_tiny(tmp_path / "x", n_layerz=3)


def test_chat_template_matches_llada(tiny_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(str(tiny_dir))
    messages = [{"role": "system", "content": "  Be brief.\n"}, {"role": "user", "content": "What is 12+7?"}]
    expected = (
        "<|startoftext|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is 12+7?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == expected
    # LLaDA's template appends the assistant header whatever add_generation_prompt says
    assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False) == expected
    # encode adds no BOS (LLaDA add_bos_token=false); the rendered template round-trips to the same ids
    ids = tok(expected, add_special_tokens=True)["input_ids"]
    assert ids[0] == tok.convert_tokens_to_ids("<|startoftext|>") and ids.count(ids[0]) == 1
    assert tok.decode(ids) == expected


def test_every_digit_is_its_own_token(tiny_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(str(tiny_dir))
    digit_ids = [tok.convert_tokens_to_ids(str(d)) for d in range(10)]
    assert len(set(digit_ids)) == 10
    for text in ["1234567890", "x = 48 / 2 = 24", "(3 + 5) * 100", "abc2024def", " 7"]:
        pieces = tok.convert_ids_to_tokens(tok(text)["input_ids"])
        digits_in_pieces = [p for p in pieces if any(c.isdigit() for c in p)]
        assert all(len(p) == 1 for p in digits_in_pieces), (text, pieces)
        assert "".join(digits_in_pieces) == "".join(c for c in text if c.isdigit())
    # no vocabulary entry mixes a digit with anything else
    assert [t for t in tok.get_vocab() if len(t) > 1 and any(c.isdigit() for c in t)] == []


def test_format_tags_and_special_tokens(tiny_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(str(tiny_dir))
    text = "<reasoning>\n6 * 7 = 42\n</reasoning>\n<answer>\n42\n</answer><|eot_id|><|endoftext|>"
    ids = tok(text)["input_ids"]
    for tag in FORMAT_TOKENS:
        tag_id = tok.convert_tokens_to_ids(tag)
        assert tok(tag)["input_ids"] == [tag_id]
        assert ids.count(tag_id) == 1
        assert tag_id not in tok.all_special_ids
    # reward functions decode with skip_special_tokens=True: tags survive, special tokens go
    assert tok.decode(ids, skip_special_tokens=True) == "<reasoning>\n6 * 7 = 42\n</reasoning>\n<answer>\n42\n</answer>"
    special = [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS.values()]
    assert special == list(range(len(tok) - 6, len(tok)))  # LLaDA-style: specials at the end of the vocabulary
    assert tok.pad_token_id == tok.eos_token_id == tok.convert_tokens_to_ids("<|endoftext|>")
    assert tok.mask_token_id == tok.convert_tokens_to_ids("<|mdm_mask|>")


def test_adapter_finds_ids_and_forward_runs(tiny_dir: Path) -> None:
    model = AutoModel.from_pretrained(str(tiny_dir)).eval()
    tok = AutoTokenizer.from_pretrained(str(tiny_dir))
    adapter = ModelAdapter.from_pretrained(model, tok)
    ids = {name: tok.convert_tokens_to_ids(t) for name, t in SPECIAL_TOKENS.items()}
    assert adapter.to_dict() == {
        "mask_id": ids["mask"], "eos_id": ids["eos"], "eot_id": ids["eot"], "pad_id": ids["eos"],
        "bos_id": ids["bos"], "logits_shift": 0,
    }
    assert model.config.mask_token_id == ids["mask"]
    prompts = [[{"role": "user", "content": "What is 2 + 3?"}], [{"role": "user", "content": "Hi"}]]
    tok.padding_side = "left"
    texts = [tok.apply_chat_template(p, tokenize=False) for p in prompts]
    batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    x = torch.cat([batch["input_ids"], torch.full((2, 8), adapter.mask_id)], dim=1)
    mask = torch.cat([batch["attention_mask"], torch.ones(2, 8, dtype=torch.long)], dim=1)
    with torch.no_grad():
        logits = model(x, attention_mask=mask).logits
        alone = model(x[1:, mask[1].argmax() :]).logits
    assert logits.shape == (2, x.shape[1], len(tok)) and torch.isfinite(logits).all()
    # pad keys are masked: the short row equals its unpadded forward (RoPE is relative)
    n = int(mask[1].sum())
    assert (logits[1, -n:] - alone[0]).abs().max().item() < 1e-4


def test_tiny_name_builds_once_into_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_dir: Path) -> None:
    monkeypatch.setenv("D1RL_CACHE", str(tmp_path))
    model, tok = load_model_and_tokenizer(ModelConfig(name_or_path="tiny", device="cpu"))
    cached = tmp_path / f"tiny-llada-{TINY_VERSION}"
    assert model.config.name_or_path == str(cached)
    assert sorted(p.name for p in tmp_path.iterdir()) == [cached.name]  # no temp dir left behind
    stamp = (cached / "model.safetensors").stat().st_mtime_ns
    model2, _ = load_model_and_tokenizer("tiny")
    assert (cached / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rebuilt
    # the cached build equals an explicit build_tiny()
    assert filecmp.cmp(cached / "tokenizer.json", tiny_dir / "tokenizer.json", shallow=False)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters()))
    assert model.config.use_cache is False and len(tok) == model.config.vocab_size


def test_build_tiny_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from d1rl.models.commands import build_tiny_main

    assert build_tiny_main(["--output-dir", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    n = sum(p.numel() for p in AutoModel.from_pretrained(str(tmp_path / "cli")).parameters())
    assert str(tmp_path / "cli") in out and f"{n:,} parameters" in out
