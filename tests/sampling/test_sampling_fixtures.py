"""Token-identical to the official LLaDA/d1 samplers on every sampler case of the shared reference fixtures.

Settings are read from cases.json (nothing per case is hard-coded), so held-back cases with another checkpoint,
other lengths and block sizes run through the same code. The model is the fixture checkpoint loaded through
transformers' AutoModel (registered by ``import d1rl``) in float64, as the fixtures were made.
"""

from __future__ import annotations

import pytest
import torch

import d1rl  # noqa: F401  (registers LLaDA with the Auto classes)
from d1rl.sampling import generate


def _sampler_cases(meta):
    cases = {name: case for name, case in meta["cases"].items() if case["kind"] == "sampler"}
    assert cases, "cases.json has no sampler cases"
    return cases


@pytest.fixture(scope="module")
def fixture_model(fixtures_dir, reference):
    transformers = pytest.importorskip("transformers")
    meta, _ = reference
    path = (fixtures_dir / "reference" / meta["checkpoint_dir"]).resolve()
    return transformers.AutoModel.from_pretrained(str(path)).double().eval()


def _run(model, case, tensors, **overrides):
    s = case["settings"]
    inputs = case["inputs"]
    attention_mask = tensors[inputs["attention_mask"]["tensor"]] if "attention_mask" in inputs else None
    kwargs = dict(
        gen_length=s["gen_length"],
        block_length=s["block_length"],
        steps=s["steps"],
        temperature=s["temperature"],
        remasking=s["remasking"],
        cfg_scale=s["cfg_scale"],
        mask_id=s["mask_id"],
        record_trace=True,
    )
    kwargs.update(overrides)
    return generate(model, tensors[inputs["prompt"]["tensor"]], attention_mask, **kwargs)


def test_every_sampler_case_is_token_identical(fixture_model, reference):
    meta, tensors = reference
    failures = []
    for name, case in _sampler_cases(meta).items():
        out = _run(fixture_model, case, tensors)
        want = {key: tensors[spec["tensor"]] for key, spec in case["outputs"].items()}
        for ours, key in ((out.sequences, "sequences"), (out.decode_step, "unmask_step"), (out.trace, "x_trace")):
            if key in want and not torch.equal(ours, want[key]):
                failures.append(f"{name}: {key} differs")
        canonical = case.get("implementations", {}).get(case.get("canonical_implementation", ""), {})
        expected = {canonical.get("n_forward_calls"), case["settings"].get("total_steps_run")} - {None}
        if expected and expected != {out.nfe}:
            failures.append(f"{name}: nfe {out.nfe}, expected {expected}")
    assert not failures, failures


def test_block_noise_layout_and_float64_defaults_match_too(fixture_model, reference):
    """The default sampler computes on the current block only; the official code on the full sequence."""
    meta, tensors = reference
    for name, case in _sampler_cases(meta).items():
        a = _run(fixture_model, case, tensors, noise_layout="sequence", record_trace=False)
        b = _run(fixture_model, case, tensors, confidence_dtype=None, record_trace=False)  # d1: logits dtype
        want = tensors[case["outputs"]["sequences"]["tensor"]]
        assert torch.equal(a.sequences, want) and torch.equal(b.sequences, want), name


def test_strict_steps_rule_rejects_what_llada_rejects(fixture_model, reference):
    meta, tensors = reference
    for name, case in _sampler_cases(meta).items():
        s = case["settings"]
        if s.get("llada_steps_per_block") is None:  # LLaDA asserted (e.g. cases e and f)
            with pytest.raises(ValueError, match="not a multiple of the number of blocks"):
                _run(fixture_model, case, tensors, steps_rule="strict")
        else:
            out = _run(fixture_model, case, tensors, steps_rule="strict", record_trace=False)
            assert torch.equal(out.sequences, tensors[case["outputs"]["sequences"]["tensor"]]), name


def test_padded_rows_equal_each_prompt_alone_and_other_batches(fixture_model, reference):
    meta, tensors = reference
    padded = [c for c in _sampler_cases(meta).values() if "attention_mask" in c["inputs"]]
    assert padded, "no padded sampler case with an attention mask"
    for case in padded:
        s = case["settings"]
        prompt = tensors[case["inputs"]["prompt"]["tensor"]]
        mask = tensors[case["inputs"]["attention_mask"]["tensor"]]
        kw = dict(gen_length=s["gen_length"], block_length=s["block_length"], steps=s["steps"], mask_id=s["mask_id"])
        batched = generate(fixture_model, prompt, mask, **kw)
        width = prompt.shape[1]
        for r in range(prompt.shape[0]):
            valid = prompt[r, mask[r].bool()].unsqueeze(0)
            alone = generate(fixture_model, valid, None, **kw)
            assert torch.equal(alone.completions, batched.completions[r : r + 1]), r
            assert torch.equal(alone.decode_step, batched.decode_step[r : r + 1]), r
        # the two shortest prompts in a batch of their own (narrower padding)
        lengths = mask.sum(dim=1)
        rows = lengths.argsort()[:2]
        narrow = int(lengths[rows].max())
        pair = generate(fixture_model, prompt[rows, width - narrow :], mask[rows, width - narrow :], **kw)
        assert torch.equal(pair.completions, batched.completions[rows])


def test_mask_id_defaults_to_the_model_config(fixture_model, reference):
    meta, tensors = reference
    name, case = next(iter(_sampler_cases(meta).items()))
    out = _run(fixture_model, case, tensors, mask_id=None, record_trace=False)
    assert torch.equal(out.sequences, tensors[case["outputs"]["sequences"]["tensor"]]), name


def test_eos_ids_default_to_the_model_config(fixture_model, reference):
    meta, tensors = reference
    case = next(iter(_sampler_cases(meta).values()))
    eos = fixture_model.config.eos_token_id
    plain = _run(fixture_model, case, tensors, record_trace=False).completions
    banned = _run(fixture_model, case, tensors, logits_eos_inf=True, record_trace=False).completions
    assert not (banned == eos).any()
    if (plain == eos).any():
        assert not torch.equal(plain, banned)
