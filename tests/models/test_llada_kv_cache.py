"""The model side of the sampler's approximate KV cache: ``return_kv_cache`` and cached subset forwards.

The property that makes the cache plumbing checkable exactly: with a cache computed from the SAME tokens, a
forward of a subset of positions (at their true RoPE positions, attending to the cached keys/values of all other
positions) must give the logits of a full forward at those positions, up to summation order (1e-10 in float64).
The approximation of Fast-dLLM only enters later, when the sampler reuses a cache after tokens changed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModel

import d1rl  # noqa: F401  (registers LLaDA with the Auto classes)
from d1rl.models import LLaDAConfig, LLaDAKVCache, LLaDAModelLM

TOL = 1e-10


@pytest.fixture(scope="module")
def fixture_model(fixtures_dir: Path) -> LLaDAModelLM:
    return AutoModel.from_pretrained(str(fixtures_dir / "llada-tiny")).double().eval()


@pytest.fixture(scope="module")
def gqa_model() -> LLaDAModelLM:
    """Grouped-query attention (2 kv heads for 4 query heads), which the fixture model does not have."""
    config = LLaDAConfig(d_model=32, n_heads=4, n_kv_heads=2, n_layers=3, mlp_hidden_size=64, vocab_size=96,
                         embedding_size=96, max_sequence_length=128, mask_token_id=95, eos_token_id=94,
                         pad_token_id=94, bos_token_id=93, init_std=0.3, block_type="llama", rope=True,
                         layer_norm_type="rms", activation_type="silu", include_bias=False,
                         bias_for_layer_norm=False, weight_tying=False)
    torch.manual_seed(3)
    return LLaDAModelLM(config).double().eval()


def _batch(vocab: int, pad_id: int, length: int = 40, pads: tuple[int, ...] = (0, 5, 11), seed: int = 0):
    """(ids, attention_mask) with the given number of LEFT pads per row."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab - 10, (len(pads), length), generator=g)
    mask = torch.ones_like(ids)
    for row, n in enumerate(pads):
        ids[row, :n] = pad_id
        mask[row, :n] = 0
    return ids, mask


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("padded", [False, True], ids=["no_padding", "left_padding"])
@pytest.mark.parametrize("which", ["fixture", "gqa"])
def test_cached_subset_forward_equals_full_forward(fixture_model, gqa_model, which, padded):
    model = fixture_model if which == "fixture" else gqa_model
    cfg = model.config
    ids, mask = _batch(cfg.vocab_size, cfg.pad_token_id, pads=(0, 5, 11) if padded else (0, 0, 0))
    T = ids.shape[1]
    with torch.no_grad():
        full = model(ids, attention_mask=mask, return_kv_cache=True)
        everything = full.kv_cache
        start, stop = 24, 32  # a "block" after the prompt, with a suffix after it
        # prefix cache: the block and the suffix are fed; only the block's logits are computed
        prefix = model(ids[:, start:], position_ids=torch.arange(start, T), kv_cache=everything.select(slice(0, start)),
                       logits_to_keep=slice(0, stop - start)).logits
        assert prefix.shape == (3, stop - start, cfg.embedding_size)
        assert _max_diff(prefix, full.logits[:, start:stop]) <= TOL
        # dual cache: only the block is fed, the cache holds both sides of it
        others = torch.cat([torch.arange(0, start), torch.arange(stop, T)])
        dual = model(ids[:, start:stop], position_ids=torch.arange(start, stop), kv_cache=everything.select(others)).logits
        assert _max_diff(dual, full.logits[:, start:stop]) <= TOL
        # any subset, non-contiguous, including pad positions (their own mask is passed for the fed positions)
        fed = torch.tensor([1, 3, 4, 17, 39])
        rest = torch.tensor([p for p in range(T) if p not in set(fed.tolist())])
        subset = model(ids[:, fed], attention_mask=mask[:, fed], position_ids=fed, kv_cache=everything.select(rest)).logits
        valid = mask[:, fed].bool()  # pad QUERY rows are meaningless; compare the real positions
        assert _max_diff(subset[valid], full.logits[:, fed][valid]) <= TOL
        # and the approximation is real: a cache from other tokens gives other logits
        stale = model(ids.flip(0), attention_mask=mask.flip(0), return_kv_cache=True).kv_cache
        wrong = model(ids[:, start:stop], position_ids=torch.arange(start, stop), kv_cache=stale.select(others)).logits
        assert _max_diff(wrong, full.logits[:, start:stop]) > 1e-3


def test_return_kv_cache_changes_nothing_else(fixture_model):
    cfg = fixture_model.config
    ids, mask = _batch(cfg.vocab_size, cfg.pad_token_id)
    with torch.no_grad():
        plain = fixture_model(ids, attention_mask=mask)
        out = fixture_model(ids, attention_mask=mask, return_kv_cache=True)
        no_pads = fixture_model(ids[:1], attention_mask=mask[:1], return_kv_cache=True).kv_cache
        tup = fixture_model(ids, attention_mask=mask, return_kv_cache=True, return_dict=False)
    assert torch.equal(out.logits, plain.logits)
    cache = out.kv_cache
    assert isinstance(cache, LLaDAKVCache) and len(cache.keys) == len(cache.values) == cfg.n_layers
    assert tuple(cache.keys[0].shape) == (3, cfg.effective_n_kv_heads, 40, cfg.head_dim)
    assert torch.equal(cache.attention_mask, mask) and no_pads.attention_mask is None  # row 0 has no pads
    assert isinstance(tup, tuple) and isinstance(tup[-1], LLaDAKVCache) and torch.equal(tup[0], plain.logits)
    # layer 0's keys depend on each position's own token only: a cache of a prefix equals the full one's prefix
    part = fixture_model(ids[:, :10], attention_mask=mask[:, :10], return_kv_cache=True).kv_cache
    assert _max_diff(part.keys[0], cache.keys[0][:, :, :10]) <= TOL
    assert _max_diff(part.keys[1], cache.keys[1][:, :, :10]) > 1e-6  # layer 1 already sees the whole sequence


def test_pad_keys_in_the_cache_are_never_attended(fixture_model):
    cfg = fixture_model.config
    ids, mask = _batch(cfg.vocab_size, cfg.pad_token_id)
    other = ids.masked_fill(mask == 0, 7)  # different tokens under the pads
    start, stop = 30, 40

    def block_logits(tokens: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            cache = fixture_model(tokens, attention_mask=mask, return_kv_cache=True).kv_cache.select(slice(0, start))
            return fixture_model(tokens[:, start:stop], position_ids=torch.arange(start, stop), kv_cache=cache).logits

    a, b = block_logits(ids), block_logits(other)
    assert torch.equal(a, b)
    # without the cache's mask the pads would count
    with torch.no_grad():
        unmasked = fixture_model(other, attention_mask=mask, return_kv_cache=True).kv_cache.select(slice(0, start))
        unmasked.attention_mask = None
        c = fixture_model(other[:, start:stop], position_ids=torch.arange(start, stop), kv_cache=unmasked).logits
    assert _max_diff(c[1:], a[1:]) > 1e-3


def test_past_key_values_takes_only_the_d1rl_cache_and_errors_are_clear(fixture_model):
    cfg = fixture_model.config
    ids, mask = _batch(cfg.vocab_size, cfg.pad_token_id)
    with torch.no_grad():
        cache = fixture_model(ids, attention_mask=mask, return_kv_cache=True).kv_cache.select(slice(0, 30))
        pos = torch.arange(30, 40)
        via_kv = fixture_model(ids[:, 30:], position_ids=pos, kv_cache=cache).logits
        via_past = fixture_model(ids[:, 30:], position_ids=pos, past_key_values=cache).logits
        assert torch.equal(via_kv, via_past)
        with pytest.raises(ValueError, match="LLaDAKVCache"):
            fixture_model(ids, past_key_values=((torch.zeros(1),),))
        with pytest.raises(ValueError, match="position_ids"):
            fixture_model(ids[:, 30:], kv_cache=cache)
        with pytest.raises(ValueError, match="batch 2"):
            fixture_model(ids[:2, 30:], position_ids=pos, kv_cache=cache)
        with pytest.raises(TypeError, match="LLaDAKVCache"):
            fixture_model(ids[:, 30:], position_ids=pos, kv_cache=(cache.keys, cache.values))
    with pytest.raises(ValueError, match="one keys and one values tensor per layer"):
        LLaDAKVCache(cache.keys, cache.values[:1])
    with pytest.raises(ValueError, match=r"attention_mask must be \(B, C\)"):
        LLaDAKVCache(cache.keys, cache.values, mask)
    with pytest.raises(TypeError, match="slice or a 1-D index tensor"):
        cache.select(3)
