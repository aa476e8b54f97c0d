"""The batched sampler against a plain re-statement of the algorithm, on a tiny stand-in model.

Covers what the official fixtures do not: temperature > 0, random remasking, CFG with padding, the EOS options,
non-divisible steps, padded batches, generators, train/eval mode and forward counting.
"""

from __future__ import annotations

import pytest
import torch
from sampling_naive import naive_generate
from sampling_toy_model import ToyDiffusionLM

from d1rl.sampling import generate

MASK, PAD = 47, 46
EOS, EOT = 45, 44


def _prompts(seed: int = 0, lengths=(7, 4, 6), pad_to: int | None = None):
    """Left-padded prompts of ordinary tokens [0, 40) and their attention mask."""
    g = torch.Generator().manual_seed(seed)
    width = pad_to or max(lengths)
    ids = torch.full((len(lengths), width), PAD, dtype=torch.int64)
    mask = torch.zeros(len(lengths), width, dtype=torch.int64)
    for r, n in enumerate(lengths):
        ids[r, width - n :] = torch.randint(0, 40, (n,), generator=g)
        mask[r, width - n :] = 1
    return ids, mask


CASES = {
    "greedy": dict(gen_length=16, block_length=4, steps=8),
    "greedy_single_block": dict(gen_length=12, block_length=12, steps=5),
    "steps_not_divisible": dict(gen_length=16, block_length=4, steps=10),
    "steps_fewer_than_blocks": dict(gen_length=16, block_length=4, steps=3),
    "more_steps_than_tokens": dict(gen_length=8, block_length=4, steps=12),
    "cfg": dict(gen_length=12, block_length=4, steps=12, cfg_scale=0.7),
    "temperature": dict(gen_length=16, block_length=8, steps=8, temperature=0.8),
    "temperature_float32_noise": dict(gen_length=16, block_length=8, steps=8, temperature=1.3,
                                      noise_dtype=torch.float32),
    "random_remasking": dict(gen_length=16, block_length=4, steps=8, remasking="random"),
    "random_remasking_temperature": dict(gen_length=16, block_length=4, steps=8, remasking="random",
                                         temperature=0.5),
    "cfg_temperature": dict(gen_length=8, block_length=4, steps=8, cfg_scale=1.0, temperature=0.7),
    "logits_eos_inf": dict(gen_length=16, block_length=8, steps=8, logits_eos_inf=True),
    "confidence_eos_eot_inf": dict(gen_length=16, block_length=8, steps=8, confidence_eos_eot_inf=True),
}


@pytest.fixture(scope="module")
def toy():
    # EOS/EOT favoured so that the EOS options change something
    return ToyDiffusionLM(vocab=48, favour=(EOS, EOT), favour_bias=2.5).eval()


@pytest.mark.parametrize("with_mask", [True, False], ids=["attention_mask", "no_mask"])
@pytest.mark.parametrize("name", list(CASES))
def test_matches_plain_reference(toy, name, with_mask):
    kw = dict(CASES[name])
    ids, mask = _prompts()
    mask = mask if with_mask else None
    extra = dict(eos_id=EOS, eot_id=EOT) if "eos" in name else {}
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    want_x, want_steps, want_nfe = naive_generate(toy, ids, mask, mask_id=MASK, generator=g1, **kw, **extra)
    out = generate(toy, ids, mask, mask_id=MASK, generator=g2, noise_layout="sequence", **kw, **extra)
    assert torch.equal(out.sequences, want_x)
    assert torch.equal(out.decode_step, want_steps)
    assert out.nfe == want_nfe
    assert (out.decode_step >= 0).all()  # every generated position was written
    assert torch.equal(out.sequences[:, : ids.shape[1]], ids)  # prompt and pads untouched
    if kw.get("temperature", 0) == 0 and kw.get("remasking", "low_confidence") == "low_confidence":
        block = generate(toy, ids, mask, mask_id=MASK, noise_layout="block", **kw, **extra)
        assert torch.equal(block.sequences, want_x)


def test_eos_options_change_the_result(toy):
    ids, mask = _prompts()
    kw = dict(gen_length=16, block_length=8, steps=8, mask_id=MASK, eos_id=EOS, eot_id=EOT)
    plain = generate(toy, ids, mask, **kw).sequences[:, ids.shape[1] :]
    no_eos = generate(toy, ids, mask, logits_eos_inf=True, **kw).sequences[:, ids.shape[1] :]
    assert (plain == EOS).any(), "toy should predict EOS somewhere (it is favoured)"
    assert not (no_eos == EOS).any()
    late = generate(toy, ids, mask, confidence_eos_eot_inf=True, **kw).sequences[:, ids.shape[1] :]
    assert not torch.equal(late, plain)
    assert (late == EOS).any()  # demoted, not forbidden: blocks still finish with EOS where needed


def test_padded_batch_equals_each_prompt_alone_and_batch_size_does_not_matter(toy):
    lengths = (7, 3, 5, 6)
    ids, mask = _prompts(seed=3, lengths=lengths)
    kw = dict(gen_length=12, block_length=4, steps=6, mask_id=MASK)
    batched = generate(toy, ids, mask, **kw)
    width = ids.shape[1]
    for r, n in enumerate(lengths):
        alone = generate(toy, ids[r : r + 1, width - n :], None, **kw)
        assert torch.equal(alone.sequences[:, n:], batched.sequences[r : r + 1, width:]), r
        assert torch.equal(alone.decode_step, batched.decode_step[r : r + 1])
    # a different batch (other padding width, other neighbours) gives the same completions
    ids2, mask2 = _prompts(seed=3, lengths=lengths, pad_to=10)
    sub = generate(toy, ids2[[2, 0]], mask2[[2, 0]], **kw)
    assert torch.equal(sub.sequences[:, 10:], batched.sequences[[2, 0], width:])
    # d1's behaviour without a mask: pads are visible, so padded rows DO change (that is why the mask exists)
    nomask = generate(toy, ids, None, **kw)
    assert not torch.equal(nomask.sequences[1:], batched.sequences[1:])


def test_cfg_counts_one_forward_of_a_doubled_batch(toy):
    ids, mask = _prompts()
    toy.calls.clear()
    out = generate(toy, ids, mask, gen_length=12, block_length=4, steps=9, cfg_scale=0.5, mask_id=MASK)
    assert out.nfe == 9 == len(toy.calls)
    assert all(shape == (6, ids.shape[1] + 12) for shape in toy.calls)
    toy.calls.clear()
    out = generate(toy, ids, mask, gen_length=12, block_length=4, steps=10, mask_id=MASK)  # d1 rule: 3 per block
    assert out.nfe == 9 == len(toy.calls) and out.steps_per_block == 3 and out.num_blocks == 3
    assert all(shape == (3, ids.shape[1] + 12) for shape in toy.calls)


def test_seeded_generator_reproducible_and_seeds_differ(toy):
    ids, mask = _prompts()
    kw = dict(gen_length=16, block_length=8, steps=16, temperature=0.9, mask_id=MASK)
    state = torch.random.get_rng_state()
    a = generate(toy, ids, mask, generator=torch.Generator().manual_seed(11), **kw)
    b = generate(toy, ids, mask, generator=torch.Generator().manual_seed(11), **kw)
    c = generate(toy, ids, mask, generator=torch.Generator().manual_seed(12), **kw)
    generate(toy, ids, mask, **kw)  # no generator: private one
    assert torch.equal(torch.random.get_rng_state(), state), "the global RNG must never be used"
    assert torch.equal(a.sequences, b.sequences) and torch.equal(a.decode_step, b.decode_step)
    assert not torch.equal(a.sequences, c.sequences)
    greedy = generate(toy, ids, mask, gen_length=16, block_length=8, steps=16, mask_id=MASK)
    assert not torch.equal(a.sequences, greedy.sequences)


def test_runs_in_eval_mode_and_restores_each_modules_mode():
    model = ToyDiffusionLM(dropout=0.5)
    model.train()
    model.dropout.eval()  # a mixed state must survive
    model.dropout.train()
    model.dropout.p = 0.5
    ids, mask = _prompts()
    kw = dict(gen_length=8, block_length=4, steps=8, mask_id=MASK)
    a = generate(model, ids, mask, **kw)
    b = generate(model, ids, mask, **kw)
    assert torch.equal(a.sequences, b.sequences)  # dropout was off
    assert model.training and model.dropout.training
    model.dropout.eval()
    generate(model, ids, mask, **kw)
    assert model.training and not model.dropout.training
    # force_eval=False keeps train mode (d1's trainer samples with dropout active)
    model.dropout.train()
    outs = {tuple(generate(model, ids, mask, force_eval=False, **kw).sequences.flatten().tolist()) for _ in range(3)}
    assert len(outs) > 1


def test_no_autograd_graph(toy):
    ids, _ = _prompts()
    out = generate(toy, ids, gen_length=4, block_length=4, steps=2, mask_id=MASK)
    assert not out.sequences.requires_grad


def test_trace_records_every_step(toy):
    ids, mask = _prompts()
    out = generate(toy, ids, mask, gen_length=8, block_length=4, steps=4, mask_id=MASK, record_trace=True)
    assert out.trace.shape == (5, 3, ids.shape[1] + 8)
    assert (out.trace[0, :, ids.shape[1] :] == MASK).all()
    assert torch.equal(out.trace[-1], out.sequences)
    for s in range(4):  # exactly the positions with decode_step == s change between trace[s] and trace[s + 1]
        changed = out.trace[s + 1, :, ids.shape[1] :] != out.trace[s, :, ids.shape[1] :]
        assert torch.equal(changed, out.decode_step == s)
    assert torch.equal(out.completions, out.sequences[:, ids.shape[1] :])


def test_clear_errors(toy):
    ids, mask = _prompts()
    with pytest.raises(ValueError, match="not a multiple of the number of blocks"):
        generate(toy, ids, gen_length=16, block_length=4, steps=10, mask_id=MASK, steps_rule="strict")
    with pytest.raises(ValueError, match="multiple of block_length"):
        generate(toy, ids, gen_length=10, block_length=4, steps=10, mask_id=MASK)
    with pytest.raises(ValueError, match="remasking"):
        generate(toy, ids, gen_length=8, block_length=4, steps=4, mask_id=MASK, remasking="lowest")
    with pytest.raises(ValueError, match="attention_mask shape"):
        generate(toy, ids, mask[:, 1:], gen_length=8, block_length=4, steps=4, mask_id=MASK)
    with pytest.raises(ValueError, match="mask_id"):
        generate(toy, ids, gen_length=8, block_length=4, steps=4)  # the toy has no config
    with pytest.raises(ValueError, match="temperature"):
        generate(toy, ids, gen_length=8, block_length=4, steps=4, mask_id=MASK, temperature=-1.0)


def test_eot_is_optional_for_confidence_eos_eot_inf(toy):
    """A model without config/tokenizer: EOS given, no EOT -> only EOS is demoted, no error."""
    ids, mask = _prompts()
    kw = dict(gen_length=16, block_length=8, steps=8, confidence_eos_eot_inf=True, eos_id=EOS)
    want, want_steps, _ = naive_generate(toy, ids, mask, mask_id=MASK, **kw)
    out = generate(toy, ids, mask, mask_id=MASK, **kw)
    assert torch.equal(out.sequences, want) and torch.equal(out.decode_step, want_steps)
    with pytest.raises(ValueError, match="eos_id was not given"):
        generate(toy, ids, mask, mask_id=MASK, gen_length=8, block_length=8, steps=4, logits_eos_inf=True)
