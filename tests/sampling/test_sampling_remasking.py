"""Candidate tokens, confidences and the top-k choice, on hand-made tensors."""

from __future__ import annotations

import math

import torch

from d1rl.sampling.remasking import choose_positions, propose_tokens, ranking_key, token_confidence

NEG = float("-inf")


def test_choose_positions_takes_per_row_top_k_and_never_a_forbidden_one():
    conf = torch.tensor([[0.1, 0.9, 0.5, 0.7], [0.3, 0.2, 0.8, 0.6], [0.4, 0.1, 0.2, 0.3]], dtype=torch.float64)
    allowed = torch.tensor([[True, False, True, True], [True, True, True, True], [False, True, False, False]])
    key = ranking_key(conf, allowed)
    got = choose_positions(key, torch.tensor([2, 1, 3]))
    assert got.tolist() == [
        [False, False, True, True],  # 0.9 is forbidden -> 0.7 and 0.5
        [False, False, True, False],  # only k=1 -> 0.8
        [False, True, False, False],  # asks for 3 but only one allowed: never a forbidden position
    ]
    assert not choose_positions(key, torch.tensor([0, 0, 0])).any()


def test_demoted_candidates_come_last_but_stay_choosable_in_their_own_order():
    conf = torch.tensor([[0.9, 0.2, 0.6, 0.1]], dtype=torch.float64)
    allowed = torch.ones(1, 4, dtype=torch.bool)
    demoted = torch.tensor([[True, False, True, False]])
    key = ranking_key(conf, allowed, demoted)
    assert choose_positions(key, torch.tensor([2])).tolist() == [[False, True, False, True]]
    assert choose_positions(key, torch.tensor([3])).tolist() == [[True, True, False, True]]
    assert choose_positions(key, torch.tensor([4])).all()


def test_greedy_proposal_and_low_confidence_are_argmax_and_its_probability():
    logits = torch.tensor([[[1.0, 3.0, 2.0], [0.0, 0.0, 5.0]]], dtype=torch.float64)
    x0 = propose_tokens(logits, 0.0)
    assert x0.tolist() == [[1, 2]]
    conf = token_confidence(logits, x0, "low_confidence")
    expected = [math.exp(3) / (math.exp(1) + math.exp(3) + math.exp(2)), math.exp(5) / (2 + math.exp(5))]
    assert torch.allclose(conf, torch.tensor([expected], dtype=torch.float64), rtol=1e-12)
    u = torch.tensor([[0.25, 0.75]])
    assert torch.equal(token_confidence(logits, x0, "random", uniform=u), u.double())


def test_gumbel_max_samples_softmax_at_temperature():
    torch.manual_seed(0)  # only to build fixed logits; sampling uses the explicit generator
    logits = torch.tensor([0.5, -1.0, 1.5, 0.0], dtype=torch.float64)
    n = 40000
    g = torch.Generator().manual_seed(123)
    for temperature in (1.0, 0.5):
        u = torch.rand((1, n, 4), generator=g, dtype=torch.float64)
        draws = propose_tokens(logits.expand(1, n, 4), temperature, u)[0]
        freq = torch.bincount(draws, minlength=4).double() / n
        p = torch.softmax(logits / temperature, -1)
        sigma = (p * (1 - p) / n).sqrt()
        assert ((freq - p).abs() < 4 * sigma + 1e-9).all(), (temperature, freq, p)


def test_gumbel_in_float32_uses_float32_arithmetic():
    logits = torch.tensor([[[100.0, 99.0]]], dtype=torch.float64)  # exp(100) overflows float32 (d1 eval quirk)
    u = torch.tensor([[[0.5, 0.5]]], dtype=torch.float32)
    assert propose_tokens(logits, 1.0, u).item() == 0  # both inf -> argmax takes the first
    u64 = torch.tensor([[[0.01, 0.9]]], dtype=torch.float64)
    assert propose_tokens(logits, 1.0, u64).item() == 1  # float64: noise decides


def test_ties_go_to_the_leftmost_position():
    key = torch.tensor([[0.5, 1.0, 0.2, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    got = choose_positions(key, torch.tensor([2, 3]))
    assert got.tolist() == [[False, True, False, True, False], [True, True, True, False, False]]
