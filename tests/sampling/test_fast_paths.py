"""The sampler's fast paths: Fast-dLLM's prefix/dual KV cache, confidence-threshold decoding, cost counters, the
``fast`` preset.

How the approximate cache is checked exactly: in a ONE-layer LLaDA the keys/values of a position depend on its own
token only, and the cached positions (prompt, finished blocks, still-masked suffix) do not change while a block is
decoded, so for that model the cache is not an approximation and every cached run must be token-identical to the
exact sampler -- trajectories, decode steps, random draws (temperature, random remasking) and all. The one-layer
model is the fixture checkpoint cut after its first block, run with every fixture sampler case's settings
(padding, CFG, odd schedules included). On the full two-layer model the cache IS approximate and the outputs do
differ (also checked, so that the one-layer equality is not vacuous).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import yaml
from omegaconf import OmegaConf
from sampling_toy_model import ToyDiffusionLM

import d1rl  # noqa: F401  (registers LLaDA with the Auto classes)
from d1rl.config import CONFIG_DIR
from d1rl.models import LLaDAModelLM
from d1rl.sampling import SamplerConfig, generate


def _sampler_cases(meta):
    return {name: case for name, case in meta["cases"].items() if case["kind"] == "sampler"}


@pytest.fixture(scope="module")
def fixture_model(fixtures_dir, reference):
    from transformers import AutoModel

    meta, _ = reference
    return AutoModel.from_pretrained(str((fixtures_dir / "reference" / meta["checkpoint_dir"]).resolve())).double().eval()


@pytest.fixture(scope="module")
def one_layer(fixture_model):
    """The fixture model's embedding, first block and head: keys/values depend on each position's own token."""
    config = copy.deepcopy(fixture_model.config)
    config.n_layers = 1
    model = LLaDAModelLM(config).double().eval()
    state = {k: v for k, v in fixture_model.state_dict().items() if ".blocks.1." not in k}
    model.load_state_dict(state)
    return model


def _kwargs(case, **overrides):
    s = case["settings"]
    kw = dict(gen_length=s["gen_length"], block_length=s["block_length"], steps=s["steps"],
              temperature=s["temperature"], remasking=s["remasking"], cfg_scale=s["cfg_scale"], mask_id=s["mask_id"])
    kw.update(overrides)
    return kw


def _inputs(case, tensors):
    inputs = case["inputs"]
    mask = tensors[inputs["attention_mask"]["tensor"]] if "attention_mask" in inputs else None
    return tensors[inputs["prompt"]["tensor"]], mask


def _same(a, b) -> bool:
    return (torch.equal(a.sequences, b.sequences) and torch.equal(a.decode_step, b.decode_step)
            and a.nfe == b.nfe and (a.trace is None or torch.equal(a.trace, b.trace)))


# ----------------------------------------------------------------------------------------------- KV cache


def test_cache_is_exact_on_a_one_layer_model_for_every_fixture_case(one_layer, reference):
    meta, tensors = reference
    for name, case in _sampler_cases(meta).items():
        prompt, mask = _inputs(case, tensors)
        exact = generate(one_layer, prompt, mask, record_trace=True, **_kwargs(case))
        for cache in ("prefix", "dual"):
            cached = generate(one_layer, prompt, mask, record_trace=True, cache=cache, **_kwargs(case))
            assert _same(cached, exact), (name, cache)
            assert cached.token_forwards <= exact.token_forwards


def test_cache_draws_the_same_random_numbers(one_layer, reference):
    """Temperature and random remasking under the cache: same generator stream, same tokens (one-layer model)."""
    meta, tensors = reference
    case = _sampler_cases(meta)["sampler_padded_masked"]
    prompt, mask = _inputs(case, tensors)
    for extra in (dict(temperature=0.9), dict(temperature=0.7, remasking="random"), dict(temperature=1.1, threshold=0.3)):
        runs = [generate(one_layer, prompt, mask, cache=cache, generator=torch.Generator().manual_seed(5),
                         **_kwargs(case, **extra)) for cache in ("none", "prefix", "dual")]
        assert _same(runs[1], runs[0]) and _same(runs[2], runs[0]), extra
    greedy = generate(one_layer, prompt, mask, **_kwargs(case))
    assert not torch.equal(runs[0].sequences, greedy.sequences)  # the noise did something


def test_cache_is_approximate_on_the_two_layer_model(fixture_model, reference):
    meta, tensors = reference
    case = _sampler_cases(meta)["sampler_a_gen32_blk8_steps16"]
    prompt, mask = _inputs(case, tensors)
    exact = generate(fixture_model, prompt, mask, **_kwargs(case))
    assert torch.equal(exact.sequences, tensors[case["outputs"]["sequences"]["tensor"]])
    for cache in ("prefix", "dual"):
        cached = generate(fixture_model, prompt, mask, cache=cache, **_kwargs(case))
        differ = int((cached.completions != exact.completions).sum())
        assert 0 < differ < cached.completions.numel(), cache  # measured: 52 (prefix) / 54 (dual) of 64 differ
        # the first block's first step is an exact full forward: its two tokens per row agree
        first = exact.decode_step == 0
        assert torch.equal(cached.completions[first], exact.completions[first])


def test_cache_refreshed_every_step_is_the_exact_sampler_on_every_fixture_case(fixture_model, reference):
    """cache_refresh=1 rebuilds the cache by a full forward at every step: the official trajectories, exactly."""
    meta, tensors = reference
    for name, case in _sampler_cases(meta).items():
        prompt, mask = _inputs(case, tensors)
        for cache in ("prefix", "dual"):
            out = generate(fixture_model, prompt, mask, record_trace=True, cache=cache, cache_refresh=1, **_kwargs(case))
            for ours, key in ((out.sequences, "sequences"), (out.decode_step, "unmask_step"), (out.trace, "x_trace")):
                assert torch.equal(ours, tensors[case["outputs"][key]["tensor"]]), (name, cache, key)


class _Spy(torch.nn.Module):
    """Forwards to the model and records the fed shape and the logits' shape of every call."""

    supports_diffusion_kv_cache = True

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner
        self.config = inner.config
        self.calls: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    def forward(self, input_ids, **kwargs):
        out = self.inner(input_ids, **kwargs)
        self.calls.append((tuple(input_ids.shape), tuple(out.logits.shape)))
        return out


def test_token_forward_counts_and_fed_shapes_by_hand(fixture_model, reference):
    """Case a: B=2, prompt P=12, G=32, blocks of K=8, 4 steps per block (T = 44 positions)."""
    meta, tensors = reference
    case = _sampler_cases(meta)["sampler_a_gen32_blk8_steps16"]
    prompt, mask = _inputs(case, tensors)
    expected = {
        "none": 16 * 2 * 44,  # every step feeds all 44 positions of both rows = 1408
        # each block's first step: 2 x 44; its 3 later steps: the block + suffix, 32/24/16/8 positions
        "prefix": 4 * 2 * 44 + 3 * 2 * (32 + 24 + 16 + 8),  # = 832
        "dual": 4 * 2 * 44 + 4 * 3 * 2 * 8,  # later steps feed the 8 block positions only = 544
    }
    for cache, count in expected.items():
        spy = _Spy(fixture_model)
        out = generate(spy, prompt, mask, cache=cache, **_kwargs(case))
        assert (out.nfe, out.token_forwards) == (16, count), cache
        assert sum(math.prod(fed) for fed, _ in spy.calls) == count
        if cache == "none":
            continue  # exact mode: full logits, sliced to the block by the sampler (unchanged)
        # only the current block's logits are ever computed
        assert all(logits == (2, 8, fixture_model.config.embedding_size) for _, logits in spy.calls)
        fed_lengths = [fed[1] for fed, _ in spy.calls]
        if cache == "dual":
            assert fed_lengths == [44, 8, 8, 8] * 4
        else:
            assert fed_lengths == [44, 32, 32, 32, 44, 24, 24, 24, 44, 16, 16, 16, 44, 8, 8, 8]
    # cache_refresh=2: full forwards at steps 0 and 2 of each block, cached ones at steps 1 and 3
    spy = _Spy(fixture_model)
    out = generate(spy, prompt, mask, cache="dual", cache_refresh=2, **_kwargs(case))
    assert [fed[1] for fed, _ in spy.calls] == [44, 8, 44, 8] * 4
    assert out.token_forwards == 8 * 2 * 44 + 8 * 2 * 8  # = 832
    # CFG doubles the rows (case d: B=2, P=12, G=24, K=8, 8 steps per block, T=36)
    case = _sampler_cases(meta)["sampler_d_gen24_blk8_steps24_cfg1"]
    prompt, mask = _inputs(case, tensors)
    dual = generate(fixture_model, prompt, mask, cache="dual", **_kwargs(case))
    assert (dual.nfe, dual.token_forwards) == (24, 3 * 4 * 36 + 3 * 7 * 4 * 8)  # 432 + 672 = 1104


# ----------------------------------------------------------------------------------------------- threshold


class _FixedConfidence(torch.nn.Module):
    """Position p of row r proposes token p % 10 with probability probs[r][p]; the other 11 tokens share the rest.

    Confidences do not depend on the input, so the threshold rule's choices can be worked out by hand.
    """

    def __init__(self, probs: list[list[float]], vocab: int = 12):
        super().__init__()
        p = torch.tensor(probs, dtype=torch.float64)
        length = p.shape[1]
        self.logits = torch.zeros(p.shape[0], length, vocab, dtype=torch.float64)
        tokens = torch.arange(length) % 10
        # softmax: e^a / (e^a + vocab - 1) = p  <=>  a = log(p (vocab - 1) / (1 - p))
        value = torch.log(p * (vocab - 1) / (1 - p))
        self.logits.scatter_(-1, tokens.expand(p.shape[0], -1).unsqueeze(-1), value.unsqueeze(-1))
        self.calls = 0

    def forward(self, input_ids, attention_mask=None):
        self.calls += 1
        return self.logits[:, : input_ids.shape[1]]


def test_threshold_decisions_by_hand():
    # prompt = positions 0-1, block 0 = positions 2-5, block 1 = positions 6-9
    probs = [
        [0.5, 0.5, 0.95, 0.5, 0.97, 0.2, 0.99, 0.999, 0.91, 0.92],
        [0.5, 0.5, 0.1, 0.12, 0.11, 0.13, 0.95, 0.3, 0.96, 0.35],
    ]
    model = _FixedConfidence(probs)
    prompt = torch.tensor([[0, 1], [0, 1]])
    out = generate(model, prompt, gen_length=8, block_length=4, steps=8, mask_id=11, threshold=0.9)
    # row 0, block 0: step 0 takes 0.95 and 0.97 (above 0.9), step 1 the best left (0.5), step 2 the last (0.2);
    # row 1, block 0: nothing above 0.9, one per step by confidence (0.13, 0.12, 0.11, 0.1). The batch moves
    # together, so block 0 takes 4 steps. Block 1 (from step 4): row 0 all four at once; row 1 the 0.95 and 0.96
    # together, then 0.35, then 0.3.
    assert out.decode_step.tolist() == [[0, 1, 0, 2, 4, 4, 4, 4], [3, 1, 2, 0, 4, 6, 4, 5]]
    assert out.completions.tolist() == [[2, 3, 4, 5, 6, 7, 8, 9]] * 2
    assert (out.nfe, model.calls, out.steps_per_block) == (7, 7, 4)
    assert out.token_forwards == 7 * 2 * 10
    # 1.0 is never exceeded: one token per step per row, 8 steps
    one = generate(model, prompt, gen_length=8, block_length=4, steps=2, mask_id=11, threshold=1.0)
    assert one.nfe == 8 and one.decode_step.tolist() == [[1, 2, 0, 3, 5, 4, 7, 6], [3, 1, 2, 0, 5, 7, 4, 6]]


def test_threshold_one_is_the_one_token_per_step_schedule_on_every_fixture_case(fixture_model, reference):
    meta, tensors = reference
    checked = 0
    for name, case in _sampler_cases(meta).items():
        prompt, mask = _inputs(case, tensors)
        gen = case["settings"]["gen_length"]
        # steps is not used with a threshold: any value gives the same run
        fast = generate(fixture_model, prompt, mask, threshold=1.0, record_trace=True, **_kwargs(case, steps=3))
        exact = generate(fixture_model, prompt, mask, record_trace=True, **_kwargs(case, steps=gen))
        assert _same(fast, exact) and fast.nfe == gen, name
        if case["settings"]["steps"] == gen:  # the official run is itself one token per step (cases b and d)
            for ours, key in ((fast.sequences, "sequences"), (fast.decode_step, "unmask_step")):
                assert torch.equal(ours, tensors[case["outputs"][key]["tensor"]]), (name, key)
            checked += 1
    assert checked >= 1


def test_a_lower_threshold_takes_fewer_steps(fixture_model, reference):
    meta, tensors = reference
    case = _sampler_cases(meta)["sampler_b_gen32_blk32_steps32"]
    prompt, mask = _inputs(case, tensors)
    nfe = [generate(fixture_model, prompt, mask, threshold=t, **_kwargs(case)).nfe for t in (1.0, 0.3, 0.05)]
    assert nfe[0] == 32 and nfe[0] > nfe[1] > nfe[2] >= 1


# ----------------------------------------------------------------------------------------------- config


def _preset(name: str, **overrides) -> SamplerConfig:
    node = OmegaConf.merge(OmegaConf.structured(SamplerConfig), OmegaConf.load(CONFIG_DIR / "sampler" / f"{name}.yaml"),
                           overrides)
    return OmegaConf.to_object(node)


def test_fast_preset_is_on_and_d1_presets_are_off():
    fast = _preset("fast").to_kwargs()
    assert (fast["cache"], fast["cache_refresh"], fast["threshold"]) == ("dual", 4, 0.9)
    assert (fast["gen_length"], fast["block_length"], fast["temperature"]) == (256, 32, 0.0)
    for name in ("d1_eval", "d1_rollout"):
        kw = _preset(name).to_kwargs()
        assert (kw["cache"], kw["cache_refresh"], kw["threshold"]) == ("none", 0, None), name
    assert (SamplerConfig().cache, SamplerConfig().cache_refresh, SamplerConfig().threshold) == ("none", 0, None)


def test_fast_preset_composes_through_hydra(capsys):
    from d1rl.sampling.commands import generate_main

    assert generate_main(["sampler=fast", "sampler.threshold=0.8", "--cfg", "job"]) == 0
    sampler = yaml.safe_load(capsys.readouterr().out)["sampler"]
    assert (sampler["cache"], sampler["threshold"], sampler["gen_length"]) == ("dual", 0.8, 256)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cache": "full"}, "sampler.cache: unknown cache mode 'full'"),
        ({"threshold": 0.0}, r"sampler.threshold must be in \(0, 1\]"),
        ({"threshold": -0.5}, r"sampler.threshold must be in \(0, 1\]"),
        ({"threshold": 1.5}, r"sampler.threshold must be in \(0, 1\]"),
        ({"threshold": 0.9, "remasking": "random"}, "sampler.threshold needs remasking='low_confidence'"),
        ({"cache": "dual", "noise_layout": "sequence"}, "sampler.noise_layout='sequence'"),
        ({"cache_refresh": 2}, "sampler.cache_refresh=2 needs sampler.cache: prefix or dual"),
        ({"cache": "dual", "cache_refresh": -1}, "sampler.cache_refresh must be an integer >= 0"),
    ],
)
def test_bad_fast_settings_name_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        _preset("d1_eval", **overrides)


def test_generate_rejects_what_the_cache_cannot_do(fixture_model):
    prompt = torch.tensor([[1998, 5, 6, 7]])
    kw = dict(gen_length=8, block_length=4, steps=4, mask_id=2000)
    with pytest.raises(ValueError, match="needs a model whose forward takes kv_cache"):
        generate(ToyDiffusionLM(), torch.tensor([[1, 2]]), gen_length=4, block_length=2, steps=2, mask_id=47,
                 cache="dual")
    with pytest.raises(ValueError, match="logits_shift=0"):
        generate(fixture_model, prompt, cache="prefix", logits_shift=1, **kw)
    with pytest.raises(ValueError, match="unknown cache mode"):
        generate(fixture_model, prompt, cache="Dual", **kw)
    with pytest.raises(ValueError, match="threshold must be in"):
        generate(fixture_model, prompt, threshold=True, **kw)


def test_generate_command_with_the_fast_preset(tmp_path, monkeypatch):
    """``d1rl generate sampler=fast`` end to end on the embedded tiny model; records carry both cost counters."""
    import json

    from d1rl.sampling.commands import generate_main

    monkeypatch.setenv("D1RL_CACHE", str(tmp_path / "cache"))

    def run(preset: str, *extra: str) -> list[dict]:
        out = tmp_path / f"{preset}.jsonl"
        code = generate_main([f"sampler={preset}", "sampler.gen_length=64", "model=tiny", 'prompts=["Hi","What is 2+3?"]',
                              "batch_size=2", "print_completions=false", f"output_file={out}",
                              f"output_dir={tmp_path / preset}", *extra])
        assert code == 0
        return [json.loads(line) for line in out.read_text().splitlines()]

    # without the refresh every block has exactly one full forward, which makes the count exact to check
    exact, fast = run("d1_eval"), run("fast", "sampler.cache_refresh=0")
    width = max(r["num_prompt_tokens"] for r in exact)  # the batch is left-padded to its longest prompt
    assert exact[0]["nfe"] == 32 and exact[0]["token_forwards"] == 32 * 2 * (width + 64)
    # fast: two blocks of 32; each block's first step feeds every position, its later steps the 32 block positions
    steps = fast[0]["nfe"]
    assert 2 <= steps <= 64 and fast[0]["token_forwards"] == 2 * 2 * (width + 64) + (steps - 2) * 2 * 32
    assert all(len(r["completion_ids"]) == 64 for r in exact + fast)


def test_bench_batch1_token_forwards_formula(fixture_model, reference, monkeypatch):
    """scripts/bench_sampler.py reports threshold costs as if each row ran alone; check that against real batch-1 runs."""
    import importlib.util
    import sys

    from d1rl.config import CONFIG_DIR

    spec = importlib.util.spec_from_file_location("bench_sampler_for_test", CONFIG_DIR.parent / "scripts" / "bench_sampler.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # its dataclasses look their module up there
    spec.loader.exec_module(bench)
    meta, tensors = reference
    case = _sampler_cases(meta)["sampler_padded_masked"]
    prompt, mask = _inputs(case, tensors)
    for options in ({"cache": "none", "threshold": 0.2}, {"cache": "prefix", "threshold": 0.2},
                    {"cache": "dual", "threshold": 0.2, "cache_refresh": 2}):
        batched = generate(fixture_model, prompt, mask, **_kwargs(case), **options)
        alone = sum(generate(fixture_model, prompt[r : r + 1], mask[r : r + 1], **_kwargs(case), **options).token_forwards
                    for r in range(prompt.shape[0]))
        estimate = bench.alone_token_forwards(batched.decode_step, prompt.shape[1], case["settings"]["block_length"],
                                              options, batched.token_forwards)
        assert estimate == alone < batched.token_forwards, options
