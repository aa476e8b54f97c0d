"""On the reference fixture model (no tokenizer: pre-tokenised items), eval generation is deterministic and does
not depend on the batch size, because prompts are left-padded WITH an attention mask (d1 passes none)."""

from __future__ import annotations

import pytest
import torch

from d1rl.evaluation.runner import EvalItem, run_batches
from d1rl.sampling import SamplerConfig, generate

BOS, PAD, MASK = 1998, 1999, 2000
GEN, BLOCK = 16, 8


@pytest.fixture(scope="module")
def fixture_model(fixtures_dir):
    from transformers import AutoModel

    import d1rl  # noqa: F401  (registers LLaDA)

    return AutoModel.from_pretrained(str(fixtures_dir / "llada-tiny")).eval()


@pytest.fixture(scope="module")
def items():
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(10):
        n = int(torch.randint(3, 20, (1,), generator=g))
        out.append(EvalItem("fixture", i, tuple([BOS] + torch.randint(0, 1990, (n,), generator=g).tolist())))
    assert len({len(it.prompt_ids) for it in out}) > 5  # real padding in every batch
    return out


def _kwargs():
    kw = SamplerConfig(gen_length=GEN, block_length=BLOCK).to_kwargs()  # d1 eval preset: steps = GEN // 2, greedy
    kw.pop("gen_length")
    kw["mask_id"] = MASK
    return kw


def _run(model, items, batch_size, generate_fn=None):
    return {
        c.item.index: c.completion_ids
        for c in run_batches(model, items, gen_length=GEN, batch_size=batch_size, pad_id=PAD,
                             sampler_kwargs=_kwargs(), seed=42, generate_fn=generate_fn)
    }


def test_same_completions_for_every_batch_size_and_run(fixture_model, items):
    ref = _run(fixture_model, items, 1)
    assert sorted(ref) == list(range(10)) and all(len(v) == GEN for v in ref.values())
    assert MASK not in sum(ref.values(), [])
    for bs in (3, 4, 10):
        assert _run(fixture_model, items, bs) == ref, f"batch_size={bs}"
    assert _run(fixture_model, items, 4) == ref  # a second run: deterministic
    # batch 1 equals the sampler on the unpadded prompt directly
    direct = generate(fixture_model, torch.tensor([items[7].prompt_ids]), gen_length=GEN, **_kwargs())
    assert direct.sequences[0, -GEN:].tolist() == ref[7]
    # the greedy d1 schedule: 8 steps for 16 tokens in 2 blocks of 8 (2 tokens per step)
    assert direct.nfe == GEN // 2


def test_without_attention_mask_results_depend_on_batch(fixture_model, items):
    """The check above can fail: d1's unmasked batching changes completions when padding changes."""

    def d1_style(model, input_ids, attention_mask, **kw):
        return generate(model, input_ids, None, **kw)

    ref = _run(fixture_model, items, 1, d1_style)
    batched = _run(fixture_model, items, 10, d1_style)
    assert sum(ref[i] != batched[i] for i in ref) >= 3
