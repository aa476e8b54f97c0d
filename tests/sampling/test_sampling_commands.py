"""``d1rl generate`` end to end on the embedded tiny model, plus its prompt/padding/output helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from d1rl.sampling.commands import (
    GenerateJobConfig,
    generate_main,
    left_pad,
    load_prompts_file,
    run_generate,
    write_jsonl_atomic,
)


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    """model=tiny builds the embedded model into $D1RL_CACHE once for this module."""
    path = tmp_path_factory.mktemp("d1rl_cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("D1RL_CACHE", str(path))
    yield path
    mp.undo()


def _run(tmp_path: Path, *overrides: str) -> list[dict]:
    out = tmp_path / "out.jsonl"
    code = generate_main([
        "model=tiny", "model.dtype=float64", "sampler.gen_length=16", "sampler.block_length=8",
        f"output_file={out}", f"output_dir={tmp_path / 'run'}", *overrides,
    ])
    assert code == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_generate_command_with_tiny_model(tiny_cache, tmp_path, capsys):
    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_text(
        json.dumps({"prompt": "What is 12 + 30?"}) + "\n\n"
        + json.dumps({"messages": [{"role": "user", "content": "Count to 3."}]}) + "\n"
    )
    records = _run(tmp_path, 'prompts=["Hi","Add 2 and 3 please, then explain."]', f"prompts_file={prompts_file}",
                   "prefill='<reasoning>'", "batch_size=3")
    assert [r["index"] for r in records] == [0, 1, 2, 3]
    assert records[2]["prompt"] == "What is 12 + 30?"
    assert records[3]["prompt"] == [{"role": "user", "content": "Count to 3."}]
    for r in records:
        assert len(r["completion_ids"]) == 16
        assert r["nfe"] == 8  # d1_eval: steps = gen_length // 2
        assert r["input_text"].endswith("<|start_header_id|>assistant<|end_header_id|>\n\n<reasoning>")
    printed = capsys.readouterr().out
    assert "=== [0] Hi" in printed and records[1]["completion"] in printed

    # the same prompts one per batch (no padding at all) give the same completions: pads are masked out
    alone = _run(tmp_path, 'prompts=["Hi","Add 2 and 3 please, then explain."]', f"prompts_file={prompts_file}",
                 "prefill='<reasoning>'", "batch_size=1", "print_completions=false")
    assert [r["completion_ids"] for r in alone] == [r["completion_ids"] for r in records]
    assert len({r["num_prompt_tokens"] for r in records}) > 1  # the batch really was padded

    # temperature: seeded, reproducible, seed-dependent
    hot = ["sampler=d1_rollout", "sampler.gen_length=16", "sampler.block_length=8", "sampler.steps=8",
           'prompts=["Hi"]', "print_completions=false"]
    a, b = _run(tmp_path, *hot, "seed=1"), _run(tmp_path, *hot, "seed=1")
    c = _run(tmp_path, *hot, "seed=2")
    assert a[0]["completion_ids"] == b[0]["completion_ids"] != c[0]["completion_ids"]


def test_no_prompts_is_a_clear_error():
    with pytest.raises(ValueError, match="no prompts"):
        run_generate(GenerateJobConfig())


def test_prompts_file_formats_and_errors(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("first prompt\n\n  second  \n")
    assert load_prompts_file(txt) == ["first prompt", "  second  "]
    js = tmp_path / "p.json"
    js.write_text(json.dumps(["a", {"question": "b"}]))
    assert load_prompts_file(js) == ["a", "b"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": \n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
        load_prompts_file(bad)
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text('{"text": "x"}\n')
    with pytest.raises(ValueError, match=r"wrong.jsonl:1: expected a string or an object"):
        load_prompts_file(wrong)
    with pytest.raises(FileNotFoundError, match="prompts_file"):
        load_prompts_file(tmp_path / "missing.txt")


def test_left_pad():
    ids, mask = left_pad([[5, 6, 7], [8], [9, 10]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8], [0, 9, 10]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]
    assert ids.dtype == torch.int64
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        left_pad([[1], []], pad_id=0)


def test_jsonl_written_atomically(tmp_path):
    target = tmp_path / "sub" / "out.jsonl"
    write_jsonl_atomic(target, [{"a": 1}, {"b": "é"}])
    assert target.read_text(encoding="utf-8").splitlines() == ['{"a": 1}', '{"b": "é"}']

    class Boom:
        pass

    with pytest.raises(TypeError):
        write_jsonl_atomic(target, [{"a": 2}, {"bad": Boom()}])
    assert target.read_text(encoding="utf-8").splitlines()[0] == '{"a": 1}'  # old file intact
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.jsonl"]  # no temp file left


def test_one_left_pad_for_eval_rollouts_and_generate():
    from d1rl.evaluation.runner import left_pad as eval_pad
    from d1rl.sampling.padding import left_pad as shared
    from d1rl.training.grpo import left_pad as rollout_pad

    assert eval_pad is shared and rollout_pad is shared  # one layout for every sampler call
    ids, mask = shared([[4], []], pad_id=9)  # an empty row is a row of pads unless refused
    assert ids.tolist() == [[4], [9]] and mask.tolist() == [[1], [0]]
    with pytest.raises(ValueError, match="every sequence is empty"):
        shared([[], []], pad_id=0)
    with pytest.raises(ValueError, match="no sequences"):
        shared([], pad_id=0)
