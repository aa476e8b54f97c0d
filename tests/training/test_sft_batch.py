"""The SFT trainer's batch path (collate -> noise -> forward -> loss) on the official d1 SFT fixture (cases.json
"sft", fixtures README §3.4), and the batch-independence of the trainer's row-keyed noise."""

from __future__ import annotations

import pytest
import torch

import d1rl  # noqa: F401  (registers the LLaDA Auto classes)
from d1rl.training.sft.data import SFTExample, collate, noise_batch
from d1rl.training.sft.trainer import sft_eval_sums, sft_forward_loss


@pytest.fixture(scope="module")
def fixture_model(fixtures_dir):
    from transformers import AutoModel

    # float64 with the official float32 RMSNorm/RoPE casts: reproduces the official logits exactly (README §2)
    model = AutoModel.from_pretrained(str(fixtures_dir / "llada-tiny"), official_fp32_norm_rope=True)
    return model.double().eval()


@pytest.fixture(scope="module")
def sft_case(reference):
    meta, tensors = reference
    case = meta["cases"]["sft"]
    get = lambda group, name: tensors[case[group][name]["tensor"]]  # noqa: E731
    return case, get


def _fixture_batch(case, get):
    ids = get("inputs", "input_ids")
    pls = get("inputs", "prompt_lengths").tolist()
    content = case["settings"]["answer_content_lengths"]
    examples = [SFTExample(ids[b, : pls[b] + content[b]].tolist(), pls[b], b) for b in range(len(pls))]
    batch = collate(examples, [0, 1, 2], pad_id=case["settings"]["eos_pad_id"], padding="max_length",
                    max_length=case["settings"]["length"], pad_is_target=True)
    return batch, ids


def test_collate_pads_with_eos_like_d1(sft_case):
    case, get = sft_case
    batch, ids = _fixture_batch(case, get)
    assert torch.equal(batch.input_ids, ids)
    assert batch.attention_mask is None and batch.answer_mask is None  # d1: padding is a visible target


def test_d1_collator_noise_reproduced(sft_case):
    case, get = sft_case
    batch, _ = _fixture_batch(case, get)
    gen = torch.Generator().manual_seed(case["settings"]["rng_seed"])
    noised = noise_batch(batch, case["settings"]["mask_id"], generator=gen, t=get("inputs", "t_raw"), eps=1e-3)
    assert torch.equal(noised.t, get("outputs", "t_eff_float32"))
    assert torch.equal(noised.masked, get("outputs", "mask"))
    assert torch.equal(noised.noisy_ids, get("outputs", "noisy_input_ids"))


@pytest.mark.parametrize(
    "normalization, key", [("d1", "loss_d1"), ("per_sample", "loss_llada_guideline")]
)
def test_batch_path_loss_equals_fixture(sft_case, fixture_model, normalization, key):
    case, get = sft_case
    batch, _ = _fixture_batch(case, get)
    gen = torch.Generator().manual_seed(case["settings"]["rng_seed"])
    noised = noise_batch(batch, case["settings"]["mask_id"], generator=gen, t=get("inputs", "t_raw"), eps=1e-3)
    with torch.no_grad():
        loss, metrics = sft_forward_loss(fixture_model, batch, noised, normalization=normalization)
    assert loss.item() == pytest.approx(case["values"][key], rel=1e-9)
    assert metrics["unscaled_loss"].item() == pytest.approx(case["values"]["unscaled_loss_logged"], rel=1e-9)
    assert int(metrics["num_masked"]) == case["values"]["n_masked_answer_tokens"] == 38


def test_eval_sums_are_per_row_d1_losses(sft_case, fixture_model):
    """The held-out loss averages one-row d1 losses: row r contributes Σ CE/t ÷ (L − prompt_length)."""
    case, get = sft_case
    batch, _ = _fixture_batch(case, get)
    gen = torch.Generator().manual_seed(case["settings"]["rng_seed"])
    noised = noise_batch(batch, case["settings"]["mask_id"], generator=gen, t=get("inputs", "t_raw"), eps=1e-3)
    with torch.no_grad():
        sums = sft_eval_sums(fixture_model, batch, noised)
    ce = get("outputs", "per_token_ce")
    t = get("outputs", "t_eff_float32").double()
    answer = 32 - get("inputs", "prompt_lengths").double()
    expected = ((ce / t[:, None]).sum(1) / answer).sum()
    assert sums[0].item() == pytest.approx(expected.item(), rel=1e-9)
    # mean of per-row losses == LLaDA's per-sample normalisation
    assert sums[0].item() / 3 == pytest.approx(case["values"]["loss_llada_guideline"], rel=1e-9)
    assert sums[1].item() == pytest.approx(ce.sum().item(), rel=1e-9) and sums[2].item() == 38 and sums[3].item() == 3


def test_row_keyed_noise_ignores_batch_mates_and_padding_width():
    """Row-keyed streams: a row gets the same t and mask alone or in a batch, and (padding not a target) whatever
    the padding width — so 1 process == 2 processes and resume are exact."""
    rows = [SFTExample(list(range(5, 5 + n)), 3, i) for i, n in enumerate((9, 14, 20))]
    kw = dict(pad_id=1, max_length=32, pad_is_target=False)
    full = collate(rows, [10, 11, 12], padding="longest", **kw)
    together = noise_batch(full, 0, stream=(42, "sft-noise", 3))
    for b in range(3):
        alone = collate([rows[b]], [10 + b], padding="max_length", **kw)
        single = noise_batch(alone, 0, stream=(42, "sft-noise", 3))
        n = len(rows[b].input_ids)
        assert torch.equal(single.t, together.t[b : b + 1])
        assert torch.equal(single.masked[0, :n], together.masked[b, :n])
        assert not single.masked[0, n:].any() and not together.masked[b, n:].any()  # padding never a target
        assert not together.masked[b, :3].any()  # prompt never masked
    # another epoch key gives other noise
    other = noise_batch(full, 0, stream=(42, "sft-noise", 4))
    assert not torch.equal(other.t, together.t)
