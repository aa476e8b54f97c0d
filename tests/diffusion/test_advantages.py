"""Group-relative advantages: hand-computed values for each scaling and the logged statistics."""

from __future__ import annotations

import math

import pytest
import torch

from d1rl.diffusion.advantages import combine_rewards, group_advantages

REWARDS = torch.tensor([1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
# group 1: mean 2.5, deviations -1.5 -0.5 0.5 1.5, unbiased var (2.25+0.25+0.25+2.25)/3 = 5/3
# group 2: all zero -> std 0
STD1 = math.sqrt(5.0 / 3.0)


def test_d1_no_scaling():
    adv, stats = group_advantages(REWARDS, 4)
    assert adv.tolist() == [-1.5, -0.5, 0.5, 1.5, 0.0, 0.0, 0.0, 0.0]
    assert stats["reward"].item() == pytest.approx(10.0 / 8.0)
    assert stats["reward_std"].item() == pytest.approx(STD1 / 2.0, rel=1e-12)  # mean of (STD1, 0)
    assert stats["zero_std_ratio"].item() == 0.5


def test_group_scaling():
    adv, _ = group_advantages(REWARDS, 4, scale="group")
    expected = [-1.5 / (STD1 + 1e-4), -0.5 / (STD1 + 1e-4), 0.5 / (STD1 + 1e-4), 1.5 / (STD1 + 1e-4), 0, 0, 0, 0]
    assert adv.tolist() == pytest.approx(expected, rel=1e-12)


def test_batch_scaling():
    # all 8 rewards: mean 1.25; squared deviations 0.0625 + 0.5625 + 3.0625 + 7.5625 + 4 * 1.5625 = 17.5; /7 = 2.5
    std_all = math.sqrt(2.5)
    adv, _ = group_advantages(REWARDS, 4, scale="batch", eps=1e-4)
    expected = [d / (std_all + 1e-4) for d in (-1.5, -0.5, 0.5, 1.5)] + [0.0] * 4
    assert adv.tolist() == pytest.approx(expected, rel=1e-12)


def test_pairs_and_integer_rewards():
    adv, stats = group_advantages(torch.tensor([0, 2, 5, 5]), 2)
    assert adv.dtype == torch.float32
    assert adv.tolist() == [-1.0, 1.0, 0.0, 0.0]
    # group stds: sqrt(2) and 0
    assert stats["reward_std"].item() == pytest.approx(math.sqrt(2.0) / 2, rel=1e-6)
    assert stats["zero_std_ratio"].item() == 0.5


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="not a multiple of num_generations=3"):
        group_advantages(REWARDS, 3)
    with pytest.raises(ValueError, match="NaN"):
        group_advantages(torch.tensor([1.0, float("nan")]), 2)
    with pytest.raises(ValueError, match="num_generations must be >= 2"):
        group_advantages(REWARDS, 1)
    with pytest.raises(ValueError, match="unknown advantage scale 'std'"):
        group_advantages(REWARDS, 4, scale="std")


def test_combine_rewards_nansum_with_weights():
    nan = float("nan")
    per_func = torch.tensor([[0.5, 2.0], [nan, 2.0], [nan, nan]])
    assert combine_rewards(per_func).tolist() == [2.5, 2.0, 0.0]
    assert combine_rewards(per_func, [2.0, 0.5]).tolist() == [2.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="3 reward weights for 2 reward functions"):
        combine_rewards(per_func, [1.0, 1.0, 1.0])
