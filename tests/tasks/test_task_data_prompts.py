"""Data loading (local files, offline hub errors, d1's shuffle/hold-out/eval subset), prompts and config presets."""

from pathlib import Path

import numpy as np
import pytest

from d1rl.tasks import DataUnavailableError, TaskConfig, build_prompt_text, d1_eval_subset, get_task, task_names

REPO = Path(__file__).resolve().parents[2]


def local(name, data_dir, **kw):
    return get_task(name, TaskConfig(name=name, data_dir=str(data_dir), **kw))


@pytest.mark.parametrize(
    "name, split, rows, columns",
    [
        ("gsm8k", "train", 7473, {"question", "answer", "solution"}),
        ("gsm8k", "test", 1319, {"question", "answer", "solution"}),
        ("math", "test", 500, {"question", "answer", "solution", "subject", "level", "unique_id"}),
        ("countdown", "test", 256, {"question", "answer", "numbers", "target"}),
        ("sudoku", "test", 500, {"question", "answer", "puzzle", "solution"}),
    ],
)
def test_local_row_counts(data_dir, name, split, rows, columns):
    ds = local(name, data_dir, train_holdout=0).load_split(split)
    assert len(ds) == rows
    assert columns <= set(ds.column_names)


def test_local_row_contents(data_dir):
    g = local("gsm8k", data_dir).load_split("test")[0]
    assert g["answer"] == "18" and g["solution"].endswith("#### 18")
    c = local("countdown", data_dir).load_split("test")[0]
    assert (c["numbers"], c["target"], c["question"]) == ([30, 100, 93], 23, "Numbers: [30, 100, 93]\nTarget: 23")
    s = local("sudoku", data_dir).load_split("test")[0]
    assert (s["puzzle"], s["solution"]) == ("3102200002100320", "3142243142131324")  # leading zeros kept
    assert s["question"] == "Solve the following Sudoku puzzle: 3102200002100320\n"
    m = local("math", data_dir).load_split("test")[1]
    assert m["answer"] == "p - q" and m["level"] == "5"


def test_eval_subset_is_numpy_legacy_choice(data_dir):
    state = np.random.get_state()
    try:
        np.random.seed(42)
        expected = np.random.choice(500, 256, replace=False)
    finally:
        np.random.set_state(state)
    assert (d1_eval_subset(500, 256, 42) == expected).all()
    sudoku = local("sudoku", data_dir)
    full, sub = sudoku.load_split("test"), sudoku.load_eval_split("test")
    assert len(sub) == 256 and sub[0]["puzzle"] == full[int(expected[0])]["puzzle"]
    assert sub[255]["puzzle"] == full[int(expected[255])]["puzzle"]
    cd = local("countdown", data_dir).load_eval_split("test")
    assert len(cd) == 256 and cd["target"] != local("countdown", data_dir).load_split("test")["target"]  # a permutation
    assert sorted(cd["question"]) == sorted(local("countdown", data_dir).load_split("test")["question"])
    assert len(local("gsm8k", data_dir).load_eval_split("test")) == 1319
    assert len(local("sudoku", data_dir, eval_subset=-1).load_eval_split("test")) == 500
    with pytest.raises(ValueError, match="eval_subset"):
        local("sudoku", data_dir, eval_subset=600).load_eval_split("test")


def test_train_shuffle_and_holdout(tmp_path, data_dir):
    import datasets

    gsm = local("gsm8k", data_dir).load_split("train")
    raw = local("gsm8k", data_dir, train_shuffle_seed=None).load_split("train")
    assert gsm["question"] == raw.shuffle(seed=42)["question"]  # d1: dataset.shuffle(seed=42)
    # countdown: 3-number filter, shuffle, last 500 dropped (d1 diffu_grpo_train.py)
    lines = [f'{{"nums": [{i % 90 + 1}, {i % 7 + 1}{", 5" if i % 4 else ""}], "target": {i % 50 + 1}}}' for i in range(1200)]
    f = tmp_path / "cd_train.jsonl"
    f.write_text("\n".join(lines) + "\n")
    task = get_task("countdown", TaskConfig(name="countdown", train_file=str(f)))
    ds = task.load_split("train")
    three = [r for r in (task._convert_row(__import__("json").loads(x), "train") for x in lines) if len(r["numbers"]) == 3]
    assert len(ds) == len(three) - 500 == 900 - 500
    expected = datasets.Dataset.from_list(three).shuffle(seed=42).select(range(400))
    assert ds["question"] == expected["question"]
    with pytest.raises(ValueError, match="train_holdout"):
        get_task("countdown", TaskConfig(name="countdown", train_file=str(f), train_holdout=900)).load_split("train")


def test_offline_hub_gives_clear_error():
    for name, split in [("gsm8k", "train"), ("math", "test"), ("math", "train"), ("countdown", "train")]:
        with pytest.raises(DataUnavailableError, match="task.data_dir") as err:
            get_task(name).load_split(split)
        assert "HF_HUB_OFFLINE" in str(err.value)
    # splits d1 never took from the hub say so
    with pytest.raises(DataUnavailableError, match="does not load"):
        get_task("countdown").load_split("test")
    with pytest.raises(DataUnavailableError, match="does not load"):
        get_task("sudoku").load_split("test")


def test_local_errors_name_the_problem(tmp_path, data_dir):
    with pytest.raises(DataUnavailableError, match="math/train.jsonl"):
        local("math", data_dir).load_split("train")
    bad = tmp_path / "s.csv"
    bad.write_text("Puzzle,Solution\n0204032001400402,1234432121433412\n02040320,1234432121433412\n")
    with pytest.raises(DataUnavailableError, match=r"row 1: puzzle '02040320'"):
        get_task("sudoku", TaskConfig(name="sudoku", test_file=str(bad))).load_split("test")
    bad = tmp_path / "g.jsonl"
    bad.write_text('{"question": "q"}\n')
    with pytest.raises(DataUnavailableError, match="missing column 'answer'"):
        get_task("gsm8k", TaskConfig(name="gsm8k", test_file=str(bad))).load_split("test")
    with pytest.raises(ValueError, match="unknown task"):
        get_task("nope")
    with pytest.raises(ValueError, match="task.source"):
        TaskConfig(name="gsm8k", source="web")
    with pytest.raises(ValueError, match="sudoku_blanks"):
        TaskConfig(name="sudoku", synthetic={"sudoku_blanks": 13})
    with pytest.raises(ValueError, match="unknown task config key"):
        get_task("gsm8k", {"data_dirr": "x"})


# ------------------------------------------------------------------------------------------------------------ prompts


def test_training_prompts_exact(data_dir):
    sys_prompt = "\nRespond in the following format:\n<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>\n"
    row = local("gsm8k", data_dir).load_split("test")[0]
    assert local("gsm8k", data_dir).train_prompt(row) == [{"role": "user", "content": sys_prompt + "\n\n" + row["question"]}]
    row = {"numbers": [2, 3, 4], "target": 5, "question": "x"}
    content = get_task("countdown").train_prompt(row)[0]["content"]
    assert content.startswith(sys_prompt + "\nUsing only the numbers [2, 3, 4], create an arithmetic expression that evaluates to exactly 5.")
    assert content.endswith("a valid answer is: <answer>\n2*4-3\n</answer>")
    content = get_task("math").train_prompt({"question": "What is 1+1?"})[0]["content"]
    assert content == (sys_prompt + "\n\nYou are a math expert. You will be given a question to solve. Solve it step by step. "
                       "Wrap the final answer in a \\boxed{}. \n\nWhat is 1+1?")
    content = get_task("sudoku").train_prompt({"question": "Solve the following Sudoku puzzle: 0204032001400402\n"})[0]["content"]
    assert content.startswith("\nPlease solve the following 4x4 Sudoku puzzle.")
    assert content.endswith("</answer>\n\n\nSolve the following Sudoku puzzle: 0204032001400402\n")


def test_eval_prompts_exact():
    fmt = "Respond in the following format:\n<reasoning>\nYour reasoning here\n</reasoning>\n<answer>\n\\boxed{...}\n</answer>"
    assert get_task("gsm8k").eval_prompt({"question": "Q?"})[0]["content"] == (
        "You are a math expert. You will be given a question to solve. Solve it step by step. "
        "Wrap the final answer in a \\boxed{}. \n" + fmt + "\n\nQ?"
    )
    assert get_task("math").eval_prompt({"question": "Q?"})[0]["content"] == (
        "You are a math expert. You will be given a question to solve. Solve it step by step. "
        "Wrap the final answer in a \\boxed{}.\n" + fmt + '" \n\n\nQ?'
    )
    content = get_task("countdown").eval_prompt({"question": "Numbers: [1, 2, 3]\nTarget: 6"})[0]["content"]
    assert "For example: \\boxed{a + b * c}Respond in the following format:" in content
    assert content.endswith("</answer>\n\nNumbers: [1, 2, 3]\nTarget: 6")
    row = {"question": "Solve the following Sudoku puzzle: 0204032001400402\n"}
    assert get_task("sudoku").eval_prompt(row) == get_task("sudoku").train_prompt(row)
    assert all(get_task(n).eval_prefill == "<reasoning>" for n in ("gsm8k", "math", "countdown", "sudoku"))
    assert get_task("synthetic").eval_prefill == ""
    assert set(task_names()) == {"gsm8k", "math", "countdown", "sudoku", "synthetic"}


LLADA_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def _tokenizer(template=LLADA_TEMPLATE):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"<unk>": 0, "<|startoftext|>": 1}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|startoftext|>", unk_token="<unk>")
    fast.chat_template = template
    return fast


def test_build_prompt_text_applies_template_and_prefill():
    tok = _tokenizer()
    task = get_task("gsm8k")
    msgs = task.eval_prompt({"question": "Q?"})
    text = build_prompt_text(tok, msgs, prefill=task.eval_prefill)
    assert text == (
        "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\n" + msgs[0]["content"].strip()
        + "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n<reasoning>"
    )
    # training prompt: no prefill; the template trims the leading/trailing newline of d1's SYSTEM_PROMPT
    text = build_prompt_text(tok, task.train_prompt({"question": "Q?"}))
    assert text.startswith("<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nRespond in the following format:")
    assert text.endswith("</answer>\n\n\nQ?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    tok.chat_template = None
    with pytest.raises(ValueError, match="chat_template"):
        build_prompt_text(tok, msgs)


def test_with_prompts_adds_conversational_column():
    task = get_task("synthetic")
    ds = task.with_prompts(get_task("synthetic", TaskConfig(name="synthetic", synthetic={"num_test": 3})).load_split("test"))
    assert ds[0]["prompt"] == [{"role": "user", "content": "Compute column by column.\n" + ds[0]["question"]}]


# ------------------------------------------------------------------------------------------------------------- presets


@pytest.mark.parametrize("name", ["gsm8k", "math", "countdown", "sudoku", "synthetic"])
def test_presets_merge_into_schema(name, data_dir):
    from omegaconf import OmegaConf

    node = OmegaConf.merge(OmegaConf.structured(TaskConfig), OmegaConf.load(REPO / "configs" / "task" / f"{name}.yaml"))
    cfg = OmegaConf.to_object(node)
    assert isinstance(cfg, TaskConfig) and cfg.name == name
    task = get_task(name, node)  # a DictConfig is accepted too
    assert task.cfg == cfg
    if name in ("countdown", "sudoku"):
        assert cfg.eval_subset == 256 and cfg.train_holdout == 500
    if name == "sudoku":
        assert cfg.source_for("train") == "synthetic" and cfg.source_for("test") == "hub"
        cfg.data_dir = str(data_dir)
        assert cfg.source_for("test") == "local"
    with pytest.raises(Exception, match="not_a_field"):
        OmegaConf.merge(OmegaConf.structured(TaskConfig), {"not_a_field": 1})


def test_synthetic_task_fits_the_tiny_tokenizer(tmp_path, monkeypatch):
    """With the embedded tiny tokenizer: short prompts, ~20-40 token completions that survive decode + grading."""
    monkeypatch.setenv("D1RL_CACHE", str(tmp_path))
    from d1rl.models import load_tokenizer

    tok = load_tokenizer("tiny")
    task = get_task("synthetic", TaskConfig(name="synthetic", synthetic={"num_test": 20, "operations": ["+", "-", "*"]}))
    for row in task.load_split("test"):
        prompt = build_prompt_text(tok, task.eval_prompt(row), task.eval_prefill)
        assert len(tok(prompt, add_special_tokens=False).input_ids) <= 40
        ids = tok(row["completion"], add_special_tokens=False).input_ids
        assert 15 <= len(ids) <= 40
        pieces = tok.convert_ids_to_tokens(ids)
        assert pieces[0] == "<reasoning>" and "</answer>" in pieces
        assert all(len(p) == 1 for p in pieces if p.isdigit())  # every digit its own token
        text = tok.decode(ids, skip_special_tokens=True)  # how trainers decode completions
        assert text == row["completion"]
        assert task.grade(text, row).correct
