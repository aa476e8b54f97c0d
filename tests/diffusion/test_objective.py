"""Clipped policy loss with k3 KL: hand computations per aggregation, gradients, metrics, completion mask."""

from __future__ import annotations

import math

import pytest
import torch

from d1rl.diffusion.objective import completion_mask_from_ids, policy_loss

# B = 2 sequences, G = 3 tokens; the last token of sequence 1 is padding (mask 0).
LOGP = [[-1.0, -0.5, -2.0], [-0.3, -1.2, -0.7]]
OLD = [[-1.1, -0.9, -1.0], [-0.3, -0.4, -0.7]]
REF = [[-1.0, -0.6, -1.5], [-0.5, -1.0, -0.7]]
ADV = [0.8, -1.5]
MASK = [[1, 1, 1], [1, 1, 0]]
EPS = 0.2
BETA = 0.04


def _t(x):
    return torch.tensor(x, dtype=torch.float64)


# Written out token by token (eps = 0.2, so clip range [0.8, 1.2]):
# (0,0): rho = e^{0.1} = 1.105171 inside -> surrogate -rho*A = -0.884137; kl = e^{0} - 0 - 1 = 0
# (0,1): rho = e^{0.4} = 1.491825 > 1.2, A > 0 -> clipped: -1.2*0.8 = -0.96; kl: d = -0.1 -> e^{-0.1} + 0.1 - 1
# (0,2): rho = e^{-1.0} = 0.367879 < 0.8, A > 0 -> min picks rho*A: -0.294304; kl: d = 0.5 -> e^{0.5} - 0.5 - 1
# (1,0): rho = 1 -> -1*(-1.5) = 1.5; kl: d = -0.2 -> e^{-0.2} + 0.2 - 1
# (1,1): rho = e^{-0.8} = 0.449329 < 0.8, A < 0 -> clipped: -(0.8*-1.5) = 1.2; kl: d = 0.2 -> e^{0.2} - 0.2 - 1
# (1,2): masked out
SURR = [
    [-math.exp(0.1) * 0.8, -1.2 * 0.8, -math.exp(-1.0) * 0.8],
    [1.5, 1.2, None],
]
KL = [
    [0.0, math.exp(-0.1) + 0.1 - 1.0, math.exp(0.5) - 0.5 - 1.0],
    [math.exp(-0.2) + 0.2 - 1.0, math.exp(0.2) - 0.2 - 1.0, None],
]
TOK = [[SURR[i][j] + BETA * KL[i][j] if SURR[i][j] is not None else None for j in range(3)] for i in range(2)]


def _loss(aggregation, **kw):
    return policy_loss(_t(LOGP), _t(OLD), _t(REF), _t(ADV), torch.tensor(MASK), epsilon=EPS, beta=BETA,
                       aggregation=aggregation, **kw)


def test_token_mean_hand_computed():
    loss, m = _loss("token_mean")
    expected = (TOK[0][0] + TOK[0][1] + TOK[0][2] + TOK[1][0] + TOK[1][1]) / 5.0
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert m["kl"].item() == pytest.approx((KL[0][0] + KL[0][1] + KL[0][2] + KL[1][0] + KL[1][1]) / 5.0, rel=1e-12)
    # correct clip ratio: tokens (0,1) [high] and (1,1) [low] are in the clipped branch
    assert m["clip_ratio"].item() == pytest.approx(2 / 5)
    assert m["clip_ratio_high"].item() == pytest.approx(1 / 5)
    assert m["clip_ratio_low"].item() == pytest.approx(1 / 5)
    # d1's flag rho*A < clip(rho)*A fires only on (0,2), where the UNclipped branch wins
    assert m["clip_ratio_d1"].item() == pytest.approx(1 / 5)
    ratios = [math.exp(0.1), math.exp(0.4), math.exp(-1.0), 1.0, math.exp(-0.8)]
    assert m["ratio_mean"].item() == pytest.approx(sum(ratios) / 5, rel=1e-12)


def test_sequence_mean_hand_computed():
    loss, _ = _loss("sequence_mean")
    seq0 = (TOK[0][0] + TOK[0][1] + TOK[0][2]) / 3.0
    seq1 = (TOK[1][0] + TOK[1][1]) / 2.0
    assert loss.item() == pytest.approx((seq0 + seq1) / 2.0, rel=1e-12)


def test_constant_hand_computed():
    total = TOK[0][0] + TOK[0][1] + TOK[0][2] + TOK[1][0] + TOK[1][1]
    loss, _ = _loss("constant")
    assert loss.item() == pytest.approx(total / (2 * 3), rel=1e-12)
    loss, _ = _loss("constant", max_completion_length=10)
    assert loss.item() == pytest.approx(total / (2 * 10), rel=1e-12)


def test_epsilon_high_widens_upper_clip():
    # with eps_high = 0.6, token (0,1) (rho = 1.4918) is no longer clipped: surrogate -rho*A
    loss, m = _loss("token_mean", epsilon_high=0.6)
    tok01 = -math.exp(0.4) * 0.8 + BETA * KL[0][1]
    expected = (TOK[0][0] + tok01 + TOK[0][2] + TOK[1][0] + TOK[1][1]) / 5.0
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert m["clip_ratio_high"].item() == 0.0 and m["clip_ratio"].item() == pytest.approx(1 / 5)


@pytest.mark.parametrize(
    "aggregation, normaliser",
    [
        ("token_mean", [[5, 5, 5], [5, 5, 5]]),  # sum of the mask
        ("sequence_mean", [[2 * 3, 2 * 3, 2 * 3], [2 * 2, 2 * 2, 2 * 2]]),  # B * |o_i|
        ("constant", [[6, 6, 6], [6, 6, 6]]),  # B * G
    ],
)
def test_on_policy_gradient_is_minus_advantage_over_normaliser(aggregation, normaliser):
    logp = _t(LOGP).requires_grad_(True)
    loss, m = policy_loss(logp, logp.detach(), None, _t(ADV), torch.tensor(MASK), beta=0.0, aggregation=aggregation)
    loss.backward()
    expected = [[-ADV[i] * MASK[i][j] / normaliser[i][j] for j in range(3)] for i in range(2)]
    assert sum(logp.grad.tolist(), []) == pytest.approx(sum(expected, []), rel=1e-12)
    assert m["ratio_mean"].item() == 1.0 and m["clip_ratio"].item() == 0.0
    # old_logp=None means on-policy too
    logp.grad = None
    loss2, _ = policy_loss(logp, None, None, _t(ADV), torch.tensor(MASK), beta=0.0, aggregation=aggregation)
    assert loss2.item() == loss.item()


def test_kl_zero_when_reference_equals_policy():
    logp = _t(LOGP)
    loss_kl, m = policy_loss(logp, _t(OLD), logp.clone(), _t(ADV), torch.tensor(MASK), epsilon=EPS, beta=0.5)
    loss_nokl, _ = policy_loss(logp, _t(OLD), None, _t(ADV), torch.tensor(MASK), epsilon=EPS, beta=0.0)
    assert m["kl"].item() == 0.0
    assert loss_kl.item() == loss_nokl.item()


def test_beta_zero_with_reference_monitors_kl_without_adding_it():
    loss0, m0 = policy_loss(_t(LOGP), _t(OLD), _t(REF), _t(ADV), torch.tensor(MASK), epsilon=EPS, beta=0.0)
    expected_surr = (SURR[0][0] + SURR[0][1] + SURR[0][2] + SURR[1][0] + SURR[1][1]) / 5.0
    assert loss0.item() == pytest.approx(expected_surr, rel=1e-12)
    assert m0["kl"].item() == pytest.approx((KL[0][0] + KL[0][1] + KL[0][2] + KL[1][0] + KL[1][1]) / 5.0, rel=1e-12)


def test_beta_without_reference_is_an_error():
    with pytest.raises(ValueError, match="needs ref_logp"):
        policy_loss(_t(LOGP), None, None, _t(ADV), torch.tensor(MASK), beta=0.04)
    with pytest.raises(ValueError, match="unknown loss aggregation 'mean'"):
        policy_loss(_t(LOGP), None, None, _t(ADV), torch.tensor(MASK), beta=0.0, aggregation="mean")


def test_completion_mask_matches_d1_fixture(reference):
    meta, T = reference
    settings = meta["cases"]["logprob"]["settings"]
    comp = T["logprob/input_ids"][:, settings["prompt_length"]:]
    mask = completion_mask_from_ids(comp, settings["eos_id"])
    assert torch.equal(mask, T["logprob/completion_mask_d1_rule"])
    assert mask.sum(1).tolist() == [24, 11, 24, 3]  # no EOS; EOS at 10, 23, 2 (inclusive)


def test_completion_mask_small():
    ids = torch.tensor([[5, 9, 9, 7], [9, 1, 2, 3], [1, 2, 3, 4]])
    assert completion_mask_from_ids(ids, 9).tolist() == [[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]]
