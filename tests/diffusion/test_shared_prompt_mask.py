"""Shared prompt mask (algorithm.share_prompt_mask): one model input per prompt serves its whole group.

The one-step estimator's model input (masked prompt + all-mask completion) does not depend on the completion, so
with one prompt mask per group the G completions of a prompt need ONE forward; each reads its log-probs from the
same logits. Checked here against the per-row estimator given the same (forced-equal) masks: values and gradients
in float64, and the number of sequences the model sees.
"""

from __future__ import annotations

import pytest
import torch

from d1rl.diffusion import get_estimator

MASK_ID = 2000
P, C, G, PROMPTS = 12, 10, 3, 2


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread for these tests: the 2-core machine is shared, and 2 threads under load made the
    small trainer runs 20x slower (0.4 s vs 10 s measured); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _group_batch(vocab: int = 1990, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(PROMPTS*G, P+C) ids: G different completions after each prompt (left-padded prompts), and the attention mask."""
    g = torch.Generator().manual_seed(seed)
    prompts = torch.randint(0, vocab, (PROMPTS, P), generator=g)
    attn_p = torch.ones(PROMPTS, P, dtype=torch.long)
    prompts[1, :4] = 1999  # row 1 has 4 left pads
    attn_p[1, :4] = 0
    ids = torch.cat([prompts.repeat_interleave(G, 0), torch.randint(0, vocab, (PROMPTS * G, C), generator=g)], 1)
    attn = torch.cat([attn_p.repeat_interleave(G, 0), torch.ones(PROMPTS * G, C, dtype=torch.long)], 1)
    return ids, attn


class _CountRows:
    """Forward pre-hook on the model: how many calls and how many sequences (rows) went through it."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.calls = 0
        self.rows = 0
        self.handle = model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        ids = args[0] if args else kwargs["input_ids"]
        self.calls += 1
        self.rows += ids.shape[0]


def test_noise_draws_one_prompt_mask_per_group():
    ids, attn = _group_batch()
    est = get_estimator("one_step", mask_id=MASK_ID, p_mask_prompt=0.4)
    noised = est.noise(ids, P, torch.Generator().manual_seed(7), attn, group_size=G)
    grouped = noised.view(PROMPTS, G, P + C)
    assert torch.equal(grouped, grouped[:, :1].expand_as(grouped))  # identical model input within a group
    assert not torch.equal(grouped[0, 0, :P] == MASK_ID, grouped[1, 0, :P] == MASK_ID)  # groups differ
    assert bool((noised[:, P:] == MASK_ID).all())
    # the group's mask is prompt_mask() of the de-duplicated batch: uniforms of shape (PROMPTS, P + C)
    pm = est.prompt_mask(ids[::G], P, torch.Generator().manual_seed(7), attn[::G])
    assert torch.equal(noised[::G, :P] == MASK_ID, pm | (ids[::G, :P] == MASK_ID))
    assert int(pm.sum()) > 0
    with pytest.raises(ValueError, match="groups of group_size=4"):
        est.noise(ids, P, torch.Generator().manual_seed(7), group_size=4)
    mixed = ids.clone()
    mixed[1, 0] = (mixed[1, 0] + 1) % 1990
    with pytest.raises(ValueError, match="prompts .* differ within a group of 3"):
        est.noise(mixed, P, torch.Generator().manual_seed(7), group_size=G)


@pytest.mark.parametrize("head", ["fused", "keep", "full"])
def test_shared_equals_per_row_with_equal_masks_values_gradients_and_forwards(tiny_llada, head):
    ids, attn = _group_batch()
    est = get_estimator("one_step", mask_id=MASK_ID, p_mask_prompt=0.4, head=head)
    noised = est.noise(ids, P, torch.Generator().manual_seed(3), attn, group_size=G)  # forced-equal masks
    w = torch.randn(PROMPTS * G, C, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    counter = _CountRows(tiny_llada)
    results = {}
    try:
        for name, group_size in (("per_row", 1), ("shared", G)):
            tiny_llada.zero_grad(set_to_none=True)
            counter.calls = counter.rows = 0
            lp = est.log_probs(tiny_llada, ids, P, attention_mask=attn, noised_ids=noised, group_size=group_size)
            (lp * w).sum().backward()  # the loss summed over the G completions of each shared input
            grads = {n: p.grad.clone() for n, p in tiny_llada.named_parameters()}
            results[name] = (lp.detach(), grads, counter.calls, counter.rows)
    finally:
        counter.handle.remove()
    (lp_row, g_row, calls_row, rows_row), (lp_sh, g_sh, calls_sh, rows_sh) = results["per_row"], results["shared"]
    assert lp_sh.shape == (PROMPTS * G, C)
    assert (lp_sh - lp_row).abs().max().item() <= 1e-10
    assert max((g_sh[n] - g_row[n]).abs().max().item() for n in g_row) <= 1e-10
    assert max(g.abs().max().item() for g in g_sh.values()) > 1e-3  # a real gradient, not zeros on both sides
    assert (calls_row, rows_row) == (1, PROMPTS * G)
    assert (calls_sh, rows_sh) == (1, PROMPTS)  # G x fewer sequences through the model
    # completions of one prompt get different log-probs (different tokens) from the same logits
    assert not torch.allclose(lp_sh[0], lp_sh[1])


def test_shared_generator_path_and_logits_shift(tiny_llada):
    """With a generator (no stored noise) the shared call noises per group itself; shift 1 reads position p - 1."""
    ids, attn = _group_batch(seed=4)
    for shift in (0, 1):
        est = get_estimator("one_step", mask_id=MASK_ID, p_mask_prompt=0.3, logits_shift=shift)
        with torch.no_grad():
            shared = est.log_probs(tiny_llada, ids, P, torch.Generator().manual_seed(5), attn, group_size=G)
            noised = est.noise(ids, P, torch.Generator().manual_seed(5), attn, group_size=G)
            per_row = est.log_probs(tiny_llada, ids, P, attention_mask=attn, noised_ids=noised)
            logits = tiny_llada(noised, attention_mask=attn).logits
        expected = torch.log_softmax(logits[:, P - shift : P + C - shift], -1).gather(-1, ids[:, P:, None]).squeeze(-1)
        assert (shared - per_row).abs().max().item() <= 1e-10
        assert (shared - expected).abs().max().item() <= 1e-10
    many = est.log_probs_many(tiny_llada, ids, P, [torch.Generator().manual_seed(s) for s in (5, 6)], attn,
                              group_size=G)
    assert many.shape == (2, PROMPTS * G, C) and (many[0] - shared).abs().max().item() <= 1e-10


def test_shared_rejects_inputs_that_differ_within_a_group(tiny_llada):
    ids, attn = _group_batch()
    est = get_estimator("one_step", mask_id=MASK_ID)
    per_row_noise = est.noise(ids, P, torch.Generator().manual_seed(3), attn)  # independent masks per row
    with pytest.raises(ValueError, match="noised_ids differ within a group of 3"):
        est.log_probs(tiny_llada, ids, P, attention_mask=attn, noised_ids=per_row_noise, group_size=G)
    with pytest.raises(ValueError, match="group_size must be an int >= 1"):
        est.log_probs(tiny_llada, ids, P, torch.Generator(), group_size=0)
