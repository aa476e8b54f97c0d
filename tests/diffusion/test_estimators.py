"""One-step (mean-field) log-prob estimator: d1 fixture masks and log-probs, selective log-softmax, mask seeds."""

from __future__ import annotations

import hashlib
import struct

import pytest
import torch
import torch.nn as nn

from d1rl.diffusion.estimators import (
    OneStepEstimator,
    available_estimators,
    get_estimator,
    mask_generator,
    register_estimator,
    selective_log_softmax,
)

MASK_ID = 2000
P = 16
SEEDS = (42, 4095)


@pytest.fixture()
def lp_case(reference):
    meta, T = reference
    return meta["cases"]["logprob"], T


def _est(**kw):
    return get_estimator("one_step", mask_id=MASK_ID, p_mask_prompt=0.15, **kw)


def test_noise_reproduces_d1_patterns(lp_case):
    case, T = lp_case
    ids = T["logprob/input_ids"]
    est = _est()
    for k, seed in enumerate(SEEDS):
        pat = case["patterns"][f"pattern{k}"]
        assert pat["seed"] == seed
        pm = est.prompt_mask(ids, P, torch.Generator().manual_seed(seed))
        assert torch.equal(pm, T[f"logprob/pattern{k}/prompt_mask"])
        assert int(pm.sum()) == pat["n_masked_prompt_positions"]
        noised = est.noise(ids, P, torch.Generator().manual_seed(seed))
        assert torch.equal(noised, T[f"logprob/pattern{k}/noised_input_ids"])
        assert (noised[:, P:] == MASK_ID).all()


def test_mask_prompt_padding_false_keeps_pads(lp_case):
    case, T = lp_case
    ids = T["logprob/input_ids"]
    attn = (torch.arange(40)[None, :] >= torch.tensor(case["settings"]["left_pads"])[:, None]).long()
    est = _est(mask_prompt_padding=False)
    for k, seed in enumerate(SEEDS):
        pm = est.prompt_mask(ids, P, torch.Generator().manual_seed(seed), attention_mask=attn)
        d1_pm = T[f"logprob/pattern{k}/prompt_mask"]
        pads = attn[:, :P] == 0
        assert torch.equal(pm, d1_pm & ~pads)
        n_pad_masked = int((d1_pm & pads).sum())
        assert n_pad_masked == case["patterns"][f"pattern{k}"]["n_masked_pad_positions"]
        assert int(pm.sum()) == case["patterns"][f"pattern{k}"]["n_masked_prompt_positions"] - n_pad_masked
    with pytest.raises(ValueError, match="attention_mask"):
        est.prompt_mask(ids, P, torch.Generator().manual_seed(0))


def test_log_probs_match_d1_fixture(lp_case, tiny_llada):
    case, T = lp_case
    ids = T["logprob/input_ids"]
    est = _est()
    expected64 = T["logprob/per_token_logps_float64"]
    official32 = T["logprob/per_token_logps_official_float32"]
    with torch.no_grad():
        for k, seed in enumerate(SEEDS):
            lp = est.log_probs(tiny_llada, ids, P, generator=torch.Generator().manual_seed(seed))
            assert lp.shape == (4, 24) and lp.dtype == torch.float64
            assert torch.allclose(lp, expected64[k], atol=1e-4, rtol=0)
            # float32 official output: equal up to float32 rounding of the float64 value
            assert torch.allclose(lp.float(), official32[k], atol=1e-4, rtol=0)
        many = est.log_probs_many(tiny_llada, ids, P, [torch.Generator().manual_seed(s) for s in SEEDS])
        assert many.shape == (2, 4, 24)
        assert torch.allclose(many, expected64, atol=1e-4, rtol=0)
        # stored patterns give the same numbers as the seeds
        lp0 = est.log_probs(tiny_llada, ids, P, noised_ids=T["logprob/pattern0/noised_input_ids"])
        assert torch.allclose(lp0, expected64[0], atol=1e-4, rtol=0)


class _ToyBidirectional(nn.Module):
    """Logits depend on the token, its position and the mean embedding of the whole sequence (bidirectional)."""

    def __init__(self, vocab=37, dim=8, length=12):
        super().__init__()
        g = torch.Generator().manual_seed(11)
        self.emb = nn.Parameter(torch.randn(vocab, dim, generator=g, dtype=torch.float64))
        self.pos = nn.Parameter(torch.randn(length, dim, generator=g, dtype=torch.float64))
        self.out = nn.Parameter(torch.randn(dim, vocab, generator=g, dtype=torch.float64))
        self.seen = []

    def forward(self, input_ids, attention_mask=None):
        self.seen.append((input_ids.clone(), attention_mask))
        h = self.emb[input_ids] + self.pos[: input_ids.shape[1]] + self.emb[input_ids].mean(1, keepdim=True)
        return torch.tanh(h) @ self.out


def test_log_probs_single_forward_on_noised_input_and_gradients():
    torch.manual_seed(0)
    model = _ToyBidirectional()
    g = torch.Generator().manual_seed(9)
    ids = torch.randint(0, 30, (3, 12), generator=g)
    est = OneStepEstimator(mask_id=36, p_mask_prompt=0.5)
    lp = est.log_probs(model, ids, 5, generator=torch.Generator().manual_seed(1))
    assert len(model.seen) == 1  # exactly one forward
    fed, attn = model.seen[0]
    assert attn is None  # d1 passes no attention mask
    assert torch.equal(fed, est.noise(ids, 5, torch.Generator().manual_seed(1)))
    logits = model(fed)
    expected = torch.log_softmax(logits[:, 5:], -1).gather(-1, ids[:, 5:, None]).squeeze(-1)
    assert torch.allclose(lp, expected, atol=1e-12, rtol=0)
    # gradients flow to the parameters and match the naive computation
    lp.sum().backward()
    g_ours = model.out.grad.clone()
    model.out.grad = None
    expected.sum().backward()
    assert torch.allclose(g_ours, model.out.grad, atol=1e-12, rtol=0)
    # an attention mask is passed through only when given
    attn_mask = torch.ones_like(ids)
    est.log_probs(model, ids, 5, generator=torch.Generator().manual_seed(1), attention_mask=attn_mask)
    assert model.seen[-1][1] is attn_mask
    with pytest.raises(ValueError, match="generator"):
        est.log_probs(model, ids, 5)


def test_logits_shift_one_reads_previous_position():
    model = _ToyBidirectional()
    ids = torch.randint(0, 30, (2, 12), generator=torch.Generator().manual_seed(4))
    est = OneStepEstimator(mask_id=36, logits_shift=1)
    with torch.no_grad():
        lp = est.log_probs(model, ids, 4, generator=torch.Generator().manual_seed(2))
        logits = model(model.seen[0][0])
    expected = torch.log_softmax(logits[:, 3:11], -1).gather(-1, ids[:, 4:, None]).squeeze(-1)
    assert torch.allclose(lp, expected, atol=1e-12, rtol=0)


def test_selective_log_softmax_values_chunking_and_gradcheck():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 40, generator=g, dtype=torch.float64) * 4
    ids = torch.randint(0, 40, (3, 5), generator=g)
    ref = torch.log_softmax(logits, -1).gather(-1, ids[..., None]).squeeze(-1)
    for chunk in (None, 1, 4, 100):
        assert torch.allclose(selective_log_softmax(logits, ids, chunk), ref, atol=1e-13, rtol=0)
    x = logits[:2, :3].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: selective_log_softmax(z, ids[:2, :3], 2), (x,))


def test_selective_log_softmax_bf16_is_float32_and_gradient_matches():
    g = torch.Generator().manual_seed(1)
    base = torch.randn(64, 500, generator=g) * 3
    ids = torch.randint(0, 500, (64,), generator=g)
    x = base.bfloat16().requires_grad_(True)
    out = selective_log_softmax(x, ids, chunk_rows=7)
    assert out.dtype == torch.float32
    x64 = x.detach().double().requires_grad_(True)
    ref = torch.log_softmax(x64, -1).gather(-1, ids[:, None]).squeeze(-1)
    assert torch.allclose(out.double(), ref, atol=1e-5, rtol=0)
    w = torch.randn(64, generator=g)
    (out * w).sum().backward()
    (ref * w.double()).sum().backward()
    assert x.grad.dtype == torch.bfloat16
    assert torch.allclose(x.grad.double(), x64.grad, atol=2e-2, rtol=1e-2)


def test_selective_log_softmax_rejects_bad_ids():
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        selective_log_softmax(torch.zeros(2, 5), torch.tensor([1, 5]))


def test_mask_generator_is_a_documented_pure_function_of_the_key():
    key = (42, 7, 3, 1)
    digest = hashlib.blake2b(struct.pack("<4q", *key), digest_size=8, person=b"d1rl-mask").digest()
    seed = int.from_bytes(digest, "little") & ((1 << 63) - 1)
    assert mask_generator(*key).initial_seed() == seed
    a = torch.rand(5, generator=mask_generator(*key))
    b = torch.rand(5, generator=mask_generator(*key))
    assert torch.equal(a, b)
    seeds = {
        mask_generator(s, st, it, r).initial_seed()
        for s in (0, 1) for st in range(10) for it in range(5) for r in range(4)
    }
    assert len(seeds) == 2 * 10 * 5 * 4  # distinct keys, distinct streams
    assert all(0 <= s < (1 << 63) for s in seeds)
    # the argument order matters: (step, inner) = (1, 2) != (2, 1)
    assert mask_generator(0, 1, 2, 0).initial_seed() != mask_generator(0, 2, 1, 0).initial_seed()
    with pytest.raises(TypeError, match="step"):
        mask_generator(0, 1.5, 0, 0)


def test_registry():
    assert "one_step" in available_estimators()
    est = get_estimator("one_step", mask_id=5)
    assert isinstance(est, OneStepEstimator) and est.p_mask_prompt == 0.15 and est.mask_prompt_padding
    with pytest.raises(ValueError, match="unknown log-prob estimator 'mc_elbo'"):
        get_estimator("mc_elbo")
    with pytest.raises(ValueError, match="already registered"):
        register_estimator("one_step", dict)
    with pytest.raises(ValueError, match="p_mask_prompt"):
        get_estimator("one_step", mask_id=5, p_mask_prompt=1.5)


def test_selective_log_softmax_on_strided_slice_and_2d_gradcheck():
    g = torch.Generator().manual_seed(3)
    full = torch.randn(3, 10, 17, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 17, (3, 6), generator=g)
    out = selective_log_softmax(full[:, 4:], ids, chunk_rows=4)  # 4 // 3 -> chunks of 1 position x 3 rows
    ref = torch.log_softmax(full[:, 4:], -1).gather(-1, ids[..., None]).squeeze(-1)
    assert torch.allclose(out, ref, atol=1e-13, rtol=0)
    w = torch.randn(3, 6, generator=g, dtype=torch.float64)
    (out * w).sum().backward()
    g_ours = full.grad.clone()
    full.grad = None
    (ref * w).sum().backward()
    assert torch.allclose(g_ours, full.grad, atol=1e-13, rtol=0)
    assert g_ours[:, :4].abs().max().item() == 0.0
    x2 = torch.randn(5, 9, generator=g, dtype=torch.float64, requires_grad=True)
    ids2 = torch.randint(0, 9, (5,), generator=g)
    assert torch.autograd.gradcheck(lambda z: selective_log_softmax(z, ids2, 2), (x2,))
