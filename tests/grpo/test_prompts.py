"""Prompt encoding for rollouts: chat template, budget policies, left padding (tiny tokenizer)."""

from __future__ import annotations

import pytest
import torch

from d1rl.models import load_tokenizer
from d1rl.tasks.prompts import build_prompt_text
from d1rl.training.rollout_prompts import (
    PromptPolicy,
    PromptTooLong,
    encode,
    encode_prompt,
    fitting_rows,
)
from d1rl.sampling.padding import left_pad

INSTRUCTIONS = "Respond in the following format:\n<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>"


def build(row):
    return [{"role": "user", "content": INSTRUCTIONS + "\n\n" + row["question"]}]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny")


LONG = {"question": "Tom has " + "many apples and " * 20 + "what is 12 plus 34?"}
SHORT = {"question": "what is 1 plus 2?"}


def test_fits_unchanged_and_starts_with_bos(tok):
    ids = encode_prompt(tok, build, SHORT, PromptPolicy(200))
    assert ids == encode(tok, build_prompt_text(tok, build(SHORT)))
    assert ids[0] == tok.bos_token_id
    # the assistant header ends the prompt (add_generation_prompt), no prefill in training
    assert tok.decode(ids).endswith("assistant<|end_header_id|>\n\n")


def test_error_names_row_and_budget(tok):
    with pytest.raises(PromptTooLong, match=r"row 7: prompt has \d+ tokens .*max_prompt_length=60"):
        encode_prompt(tok, build, LONG, PromptPolicy(60), row_name="row 7")


def test_d1_left_truncation_cuts_the_template(tok):
    ids = encode_prompt(tok, build, LONG, PromptPolicy(60, d1_compat_truncation=True))
    full = encode(tok, build_prompt_text(tok, build(LONG)))
    assert ids == full[-60:]
    assert tok.bos_token_id not in ids  # d1 bug 12: BOS and header are gone


def test_truncate_question_keeps_template_and_question_end(tok):
    ids = encode_prompt(tok, build, LONG, PromptPolicy(60, "truncate_question"))
    assert len(ids) <= 60
    text = tok.decode(ids)
    assert ids[0] == tok.bos_token_id
    assert "Respond in the following format" in text and "</answer>" in text
    assert "</answer>\n\n..." in text  # the question now starts with the ellipsis marker
    assert 0 < text.count("many apples and") < 20  # its beginning was cut, its end kept
    assert "what is 12 plus 34?<|eot_id|>" in text
    assert text.endswith("assistant<|end_header_id|>\n\n")


def test_truncate_question_impossible_budget(tok):
    with pytest.raises(PromptTooLong, match="template and instructions alone"):
        encode_prompt(tok, build, LONG, PromptPolicy(10, "truncate_question"))


def test_skip_returns_none_and_fitting_rows(tok):
    assert encode_prompt(tok, build, LONG, PromptPolicy(60, "skip")) is None
    assert fitting_rows(tok, build, [(0, SHORT), (1, LONG), (2, SHORT)], 60) == [0, 2]


def test_left_pad():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert torch.equal(ids, torch.tensor([[5, 6, 7], [0, 0, 8]]))
    assert torch.equal(mask, torch.tensor([[1, 1, 1], [0, 0, 1]]))
