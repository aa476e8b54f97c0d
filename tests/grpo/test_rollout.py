"""Reward scoring and rewards → advantages (hand-computed values)."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from d1rl.training.rollout import reward_name, rewards_to_advantages, sample_completions, score_completions


def length_reward(prompts, completions, **kw):
    return [float(len(c[0]["content"])) for c in completions]


def answer_reward(prompts, completions, answer, **kw):
    # None for the second completion: must become NaN, then be ignored by the weighted nansum.
    return [None if i == 1 else (2.0 if c[0]["content"] == a else 0.0) for i, (c, a) in enumerate(zip(completions, answer))]


def test_score_completions_passes_columns_and_maps_none_to_nan():
    prompts = [[{"role": "user", "content": "q"}]] * 3
    out = score_completions(
        [(length_reward, 1.0), (answer_reward, 0.5)], prompts, ["7", "77", "8"], {"answer": ["7", "7", "7"]}
    )
    assert out.shape == (3, 2)
    assert out[:, 0].tolist() == [1.0, 2.0, 1.0]
    assert out[0, 1] == 2.0 and math.isnan(out[1, 1]) and out[2, 1] == 0.0


def test_score_completions_rejects_wrong_length():
    with pytest.raises(ValueError, match="returned 1 values for 2"):
        score_completions([(lambda prompts, completions, **k: [1.0], 1.0)], [[], []], ["a", "b"], {})


def test_reward_name_unwraps_partial():
    assert reward_name(functools.partial(length_reward)) == "length_reward"


def test_rewards_to_advantages_gathers_and_slices():
    # Two "processes", each with one group of 2 generations, 2 reward functions, weights (1, 0.5).
    rank0 = torch.tensor([[1.0, 2.0], [0.0, float("nan")]])
    rank1 = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    gathered = torch.cat([rank0, rank1])
    for rank, local in ((0, rank0), (1, rank1)):
        adv, total, m = rewards_to_advantages(
            local, [1.0, 0.5], ["a", "b"], num_generations=2, scale="none", gather=lambda t: gathered, rank=rank
        )
        if rank == 0:
            # totals: 1 + 0.5*2 = 2.0 and 0 + nan -> 0.0; group mean 1.0
            assert total.tolist() == [2.0, 0.0]
            assert adv.tolist() == [1.0, -1.0]
        else:
            assert total.tolist() == [1.0, 1.0]
            assert adv.tolist() == [0.0, 0.0]
    assert m["reward"] == pytest.approx(1.0)  # mean of 2, 0, 1, 1
    assert m["zero_std_ratio"] == pytest.approx(0.5)  # group 2 has identical rewards
    assert m["reward_std"] == pytest.approx(math.sqrt(2.0) / 2)  # unbiased std of (2, 0) = sqrt(2); mean with 0
    assert m["rewards/a"] == pytest.approx(0.75)
    assert m["rewards/b"] == pytest.approx(2.0 / 3.0)  # NaN ignored


def test_sample_completions_repeats_prompts_and_chunks():
    calls = []

    class Out:
        def __init__(self, seq):
            self.sequences = seq

    def fake_generate(model, ids, mask, generator=None, gen_length=2, **kw):
        calls.append((ids.clone(), None if mask is None else mask.clone()))
        return Out(torch.cat([ids, torch.full((ids.shape[0], gen_length), 9)], dim=1))

    prompts = torch.tensor([[0, 1], [2, 3]])
    mask = torch.tensor([[0, 1], [1, 1]])
    seqs = sample_completions(
        None, prompts, mask, num_generations=3, chunk_size=4, sampler_kwargs={"gen_length": 2}, generator=None,
        generate_fn=fake_generate,
    )
    assert seqs[:, :2].tolist() == [[0, 1]] * 3 + [[2, 3]] * 3  # groups contiguous
    assert [c[0].shape[0] for c in calls] == [4, 2]
    assert calls[0][1].tolist() == [[0, 1]] * 3 + [[1, 1]]
