"""SFT data: d1's s1K formatting, chat / prompt-completion files, tokenisation (corrected vs d1_compat), held-out
split, collation with padding excluded from the targets."""

from __future__ import annotations

import json

import pytest

from d1rl.training.sft.config import D1_SFT_SYSTEM_PROMPT, SFTDataConfig
from d1rl.training.sft.data import (
    Conversation,
    SFTDataError,
    SFTExample,
    build_sft_datasets,
    collate,
    load_conversations,
    tokenize_conversations,
)


@pytest.fixture(scope="module")
def tok():
    from d1rl.models import load_tokenizer

    return load_tokenizer("tiny")


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_s1k_rows_are_formatted_as_d1(tmp_path):
    path = _jsonl(tmp_path / "s1k.jsonl", [
        {"question": "What is 2+2?", "thinking_trajectories": ["Add them.", "ignored"], "attempt": "4", "extra": 1},
    ])
    (conv,) = load_conversations(SFTDataConfig(source="s1k", path=path))
    assert conv.prompt == [{"role": "user", "content": D1_SFT_SYSTEM_PROMPT + "\n\nWhat is 2+2?"}]
    assert conv.completion == "<reasoning>Add them.</reasoning>\n<answer>4</answer>"
    assert D1_SFT_SYSTEM_PROMPT.splitlines() == [
        "Respond in the following format:", "<reasoning>", "Your reasoning here", "</reasoning>", "<answer>", "...",
        "</answer>",
    ]


def test_chat_and_prompt_completion_files(tmp_path):
    chat = _jsonl(tmp_path / "chat.jsonl", [{"msgs": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}])
    (c,) = load_conversations(SFTDataConfig(source="json", path=chat, messages_column="msgs", system_prompt="SYS"))
    assert c.prompt == [{"role": "user", "content": "SYS\n\nhi"}] and c.completion == "hello"
    pc = _jsonl(tmp_path / "pc.jsonl", [{"q": "2+3?", "a": "5"}])
    (c,) = load_conversations(SFTDataConfig(source="json", path=pc, format="prompt_completion", prompt_column="q",
                                            completion_column="a", system_prompt=None))
    assert c.prompt == [{"role": "user", "content": "2+3?"}] and c.completion == "5"
    bad = _jsonl(tmp_path / "bad.jsonl", [{"msgs": [{"role": "user", "content": "no answer"}]}])
    with pytest.raises(SFTDataError, match="must end with an assistant message"):
        load_conversations(SFTDataConfig(source="json", path=bad, messages_column="msgs"))
    with pytest.raises(SFTDataError, match="data.path=.*nope.jsonl: file not found"):
        load_conversations(SFTDataConfig(source="json", path=str(tmp_path / "nope.jsonl")))


def test_tokenisation_corrected_vs_d1_compat(tok):
    conv = Conversation([{"role": "user", "content": "Q?"}], "<answer>7</answer>", 0)
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    prompt_text = tok.apply_chat_template(conv.prompt, tokenize=False, add_generation_prompt=True)
    prompt_ids = tok(prompt_text, add_special_tokens=False)["input_ids"]

    (ours,), _ = tokenize_conversations([conv], tok, max_length=256, d1_compat=False, eot_id=eot)
    assert ours.prompt_length == len(prompt_ids) and ours.input_ids[: ours.prompt_length] == prompt_ids
    assert tok.decode(ours.input_ids[ours.prompt_length :]) == "<answer>7</answer><|eot_id|>"

    (d1,), _ = tokenize_conversations([conv], tok, max_length=256, d1_compat=True, eot_id=eot)
    # d1: the template's trailing assistant header stays in the target ...
    assert tok.decode(d1.input_ids).endswith("<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    assert d1.input_ids[: len(ours.input_ids)] == ours.input_ids
    # ... and the prompt length is counted on prompt + "\n": one more token here ("\n" is its own token), so the
    # first answer token counts as prompt and is never trained
    assert d1.prompt_length == len(tok(prompt_text + "\n", add_special_tokens=False)["input_ids"]) == ours.prompt_length + 1


def test_truncation_and_rows_without_answer_room(tok):
    long = Conversation([{"role": "user", "content": "Q?"}], "1 2 3 4 5 6 7 8 9", 0)
    (ex,), dropped = tokenize_conversations([long], tok, max_length=18, d1_compat=False, eot_id=None)
    assert len(ex.input_ids) == 18 and dropped == 0
    examples, dropped = tokenize_conversations([long], tok, max_length=5, d1_compat=False, eot_id=None)
    assert examples == [] and dropped == 1


def test_heldout_split_is_one_percent_and_disjoint(tmp_path, tok):
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
            for i in range(1000)]
    path = _jsonl(tmp_path / "d.jsonl", rows)
    ds = build_sft_datasets(SFTDataConfig(source="json", path=path, system_prompt=None, max_length=64), tok, eot_id=None)
    assert len(ds.eval) == 10 and len(ds.train) == 990  # d1: 1% of s1K's 1000 rows
    assert not {e.source_index for e in ds.eval} & {e.source_index for e in ds.train}
    again = build_sft_datasets(SFTDataConfig(source="json", path=path, system_prompt=None, max_length=64), tok, eot_id=None)
    assert [e.source_index for e in again.eval] == [e.source_index for e in ds.eval]


def test_collate_without_padding_targets():
    rows = [SFTExample([5, 6, 7, 8, 9], 2, 0), SFTExample([5, 6, 7], 1, 1)]
    b = collate(rows, [3, 4], pad_id=0, padding="longest", max_length=99, pad_is_target=False)
    assert b.input_ids.tolist() == [[5, 6, 7, 8, 9], [5, 6, 7, 0, 0]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert b.answer_mask.tolist() == [[False, False, True, True, True], [False, True, True, False, False]]
    assert b.answer_lengths.tolist() == [3, 2] and b.row_ids.tolist() == [3, 4]
    d1 = collate(rows, [3, 4], pad_id=0, padding="max_length", max_length=6, pad_is_target=True)
    assert d1.input_ids.shape == (2, 6) and d1.attention_mask is None and d1.answer_lengths is None


def test_bad_data_values_are_named():
    with pytest.raises(ValueError, match="data.source"):
        SFTDataConfig(source="hub").validate()
    with pytest.raises(ValueError, match="data.padding"):
        SFTDataConfig(padding="left").validate()
    with pytest.raises(ValueError, match="data.path"):
        SFTDataConfig(source="json", path=None).validate()
