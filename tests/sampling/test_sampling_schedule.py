"""Steps per block and tokens per step: hand-computed values, the d1/strict rules, and the fixtures' schedules."""

from __future__ import annotations

import pytest
import torch

from d1rl.sampling.schedule import num_blocks_for, steps_per_block, transfer_schedule


def test_floor_share_with_remainder_to_the_first_steps():
    got = transfer_schedule(torch.tensor([8, 32, 5, 0]), 3)
    assert got.tolist() == [[3, 3, 2], [11, 11, 10], [2, 2, 1], [0, 0, 0]]
    assert got.sum(dim=1).tolist() == [8, 32, 5, 0]


def test_more_steps_than_tokens_gives_zero_steps_at_the_end():
    assert transfer_schedule(torch.tensor([3]), 5).tolist() == [[1, 1, 1, 0, 0]]


@pytest.mark.parametrize(
    ("steps", "blocks", "d1", "strict"),
    [(16, 4, 4, 4), (12, 4, 3, 3), (10, 4, 2, None), (2, 4, 1, None), (128, 8, 16, 16), (7, 1, 7, 7)],
)
def test_steps_per_block_rules(steps, blocks, d1, strict):
    assert steps_per_block(steps, blocks, "d1") == d1
    if strict is None:
        with pytest.raises(ValueError, match="not a multiple of the number of blocks"):
            steps_per_block(steps, blocks, "strict")
    else:
        assert steps_per_block(steps, blocks, "strict") == strict


def test_bad_lengths_and_rules_are_rejected():
    with pytest.raises(ValueError, match="multiple of block_length"):
        num_blocks_for(30, 8)
    with pytest.raises(ValueError, match="steps_rule"):
        steps_per_block(8, 2, "llada")
    with pytest.raises(ValueError, match="steps must be positive"):
        steps_per_block(0, 2)


def test_schedule_equals_the_fixtures_transfer_counts(reference):
    meta, _ = reference
    cases = {n: c for n, c in meta["cases"].items() if c["kind"] == "sampler"}
    assert cases, "no sampler cases in cases.json"
    checked = 0
    for name, case in cases.items():
        s = case["settings"]
        if "transfer_counts_per_step" not in case:
            continue
        blocks = num_blocks_for(s["gen_length"], s["block_length"])
        spb = steps_per_block(s["steps"], blocks, "d1")
        assert spb == s.get("d1_steps_per_block", spb), name
        # every block starts fully masked in these cases
        per_block = transfer_schedule(torch.full((s["batch"],), s["block_length"]), spb)
        expected = torch.tensor(case["transfer_counts_per_step"])
        assert torch.equal(per_block.repeat(1, blocks), expected), name
        checked += 1
    assert checked, "no sampler case lists transfer_counts_per_step"
