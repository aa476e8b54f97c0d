"""Sharding (d1's no-padding split) and the token-level runner: left padding + mask, fixed batches, resume."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from d1rl.evaluation.records import ItemKey
from d1rl.evaluation.runner import EvalItem, batch_seed, left_pad, plan_batches, run_batches
from d1rl.evaluation.sharding import shard

PAD = 99


def test_shard_is_d1_split_without_padding():
    items = list(range(7))
    parts = [shard(items, r, 3) for r in range(3)]
    assert parts == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(sum(parts, [])) == items
    assert shard(items, 0, 1) == items
    with pytest.raises(ValueError, match="rank"):
        shard(items, 3, 3)


def test_left_pad_aligns_right_and_masks_pads():
    ids, mask = left_pad([[5, 6, 7], [8], [1, 2]], PAD)
    assert ids.tolist() == [[5, 6, 7], [PAD, PAD, 8], [PAD, 1, 2]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]


def test_plan_batches_fixed_boundaries():
    assert plan_batches(list(range(5)), 2) == [[0, 1], [2, 3], [4]]
    with pytest.raises(ValueError, match="batch_size"):
        plan_batches([1], 0)


def fake_generate(calls):
    """A stand-in sampler whose output for a row depends only on the row's real (unmasked) prompt tokens,
    as a correct masked sampler's does; it checks the left-padding contract on the way."""

    def generate(model, input_ids, attention_mask, *, gen_length, generator, steps, block_length, mask_id):
        assert attention_mask is not None and attention_mask.shape == input_ids.shape
        assert bool((input_ids[attention_mask == 0] == PAD).all())
        # left padding: once a row's mask turns 1 it stays 1
        assert bool((attention_mask[:, 1:] >= attention_mask[:, :-1]).all())
        calls.append((input_ids.shape[0], steps, block_length, generator.initial_seed()))
        real = (input_ids * attention_mask).sum(1, keepdim=True)
        j = torch.arange(1, gen_length + 1)
        gen = (real * j + attention_mask.sum(1, keepdim=True)) % 50
        return SimpleNamespace(sequences=torch.cat([input_ids, gen], 1), nfe=steps)

    return generate


ITEMS = [EvalItem("toy", i, tuple(range(1 + i, 2 + 2 * i))) for i in range(7)]
KW = dict(steps=4, block_length=4, mask_id=98)


def _run(batch_size, done=(), calls=None):
    calls = [] if calls is None else calls
    return list(
        run_batches(
            None, ITEMS, gen_length=8, batch_size=batch_size, pad_id=PAD, sampler_kwargs=KW, seed=42,
            done=done, generate_fn=fake_generate(calls),
        )
    )


def test_runner_outputs_do_not_depend_on_batch_size():
    ref = {c.item.index: c.completion_ids for c in _run(1)}
    assert len(ref) == 7 and all(len(v) == 8 for v in ref.values())
    # hand check of item 2: prompt 3,4,5 -> sum 12, length 3 -> (12*j + 3) % 50
    assert ref[2] == [(12 * j + 3) % 50 for j in range(1, 9)]
    for bs in (2, 3, 7, 16):
        got = _run(bs)
        assert [c.item.index for c in got] == list(range(7))
        assert {c.item.index: c.completion_ids for c in got} == ref
        assert [c.batch_size for c in got] == [min(bs, 7 - (c.item.index // bs) * bs) for c in got]


def test_runner_resume_skips_done_batches_and_regenerates_partial_ones():
    calls = []
    done = {ItemKey("toy", 8, 0), ItemKey("toy", 8, 1), ItemKey("toy", 8, 2)}
    got = _run(2, done=done, calls=calls)
    assert [c.item.index for c in got] == [3, 4, 5, 6]
    # batch [0,1] skipped; batch [2,3] regenerated whole (same composition, same seed); then [4,5], [6]
    assert [c[0] for c in calls] == [2, 2, 1]
    assert calls[0][3] == batch_seed(42, "toy", 8, 2)
    full = {c.item.index: c.completion_ids for c in _run(2)}
    assert all(c.completion_ids == full[c.item.index] for c in got)


def test_batch_seed_is_stable_and_distinct():
    assert batch_seed(42, "gsm8k", 256, 0) == batch_seed(42, "gsm8k", 256, 0)
    assert len({batch_seed(42, "gsm8k", 256, i) for i in range(100)}) == 100
    assert batch_seed(42, "gsm8k", 256, 0) != batch_seed(43, "gsm8k", 256, 0)
    assert 0 <= batch_seed(1, "x", 1, 1) < 2**63


def test_runner_rejects_reserved_sampler_kwargs():
    with pytest.raises(ValueError, match="gen_length"):
        list(run_batches(None, ITEMS, gen_length=8, batch_size=2, pad_id=PAD, sampler_kwargs={"gen_length": 4},
                         seed=0, generate_fn=fake_generate([])))
