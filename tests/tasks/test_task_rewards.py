"""Reward values on hand-made completions equal d1's definitions (d1-reference §3.2), with and without the quirks."""

import pytest

from d1rl.tasks import TaskConfig, call_reward_functions, get_task

MULTILINE = "<reasoning>\nStep 1: 16-3-4=9\nStep 2: 9*2=18\n</reasoning>\n<answer>\n18\n</answer>\n"
SINGLE_LINE_NL = "<reasoning>\nshort\n</reasoning>\n<answer>\n18\n</answer>\n"
INLINE = "<reasoning>short</reasoning> <answer>18</answer>"
TRAILING = "<reasoning>\nx\n</reasoning>\n<answer>\n18\n</answer>\nextra text"
NO_ANSWER_CLOSE = "<reasoning>\nx\n</reasoning>\n<answer>\n18"


def values(task, completions, **columns):
    fns = task.reward_functions()
    n = len(completions)
    cols = {k: v if isinstance(v, list) else [v] * n for k, v in columns.items()}
    per_fn, total = call_reward_functions(fns, [[{"role": "user", "content": "q"}]] * n, completions, cols)
    names = [getattr(fn, "__name__", "") for fn, _ in fns]
    return dict(zip(names, per_fn)), total


def gsm8k(d1):
    return get_task("gsm8k", TaskConfig(name="gsm8k", d1_compat_rewards=d1))


def test_gsm8k_reward_names():
    assert [f.__name__ for f, _ in gsm8k(True).reward_functions()] == [
        "xmlcount_reward_func", "soft_format_reward_func", "strict_format_reward_func", "int_reward_func", "correctness_reward_func"
    ]
    assert [f.__name__ for f, _ in gsm8k(False).reward_functions()] == [
        "xmlcount_reward", "soft_format_reward", "strict_format_reward", "int_reward", "correctness_reward"
    ]
    assert all(w == 1.0 for _, w in gsm8k(True).reward_functions())


def test_gsm8k_rewards_d1_quirks():
    comps = [MULTILINE, SINGLE_LINE_NL, INLINE, TRAILING, NO_ANSWER_CLOSE]
    r, total = values(gsm8k(True), comps, answer="18")
    assert r["xmlcount_reward_func"] == pytest.approx([0.5, 0.5, 0.0, 0.48, 0.375 - 0.001 * len(NO_ANSWER_CLOSE)])
    # no DOTALL: strict needs single-line reasoning AND answer and a trailing newline
    assert r["strict_format_reward_func"] == [0.0, 0.5, 0.0, 0.0, 0.0]
    # no DOTALL: soft needs the reasoning on ONE line with the tags (a newline after <reasoning> already fails)
    assert r["soft_format_reward_func"] == [0.0, 0.0, 0.5, 0.0, 0.0]
    assert r["int_reward_func"] == [0.5, 0.5, 0.5, 0.5, 0.5]  # no closing tag: the text after <answer> is "18"
    assert r["correctness_reward_func"] == [2.0, 2.0, 2.0, 2.0, 2.0]
    assert total == pytest.approx([3.0, 3.5, 3.0, 2.98, 2.5 + 0.375 - 0.001 * len(NO_ANSWER_CLOSE)])


def test_gsm8k_rewards_corrected():
    comps = [MULTILINE, SINGLE_LINE_NL, INLINE, "<reasoning>\na\nb\n</reasoning>\n<answer>\n18\n</answer>"]
    r, total = values(gsm8k(False), comps, answer="18")
    assert r["strict_format_reward"] == [0.5, 0.5, 0.0, 0.5]  # multi-line ok, trailing newline optional
    assert r["soft_format_reward"] == [0.5, 0.5, 0.5, 0.5]
    assert total[0] == pytest.approx(4.0)  # the maximum d1 intends


def test_gsm8k_correctness_and_int_are_string_rules():
    comps = ["<answer>\n1,080\n</answer>", "<answer>1080</answer>", "<answer>-3</answer>", "<answer>72.0</answer>", "no tags 72"]
    r, _ = values(gsm8k(True), comps, answer=["1,080", "1,080", "-3", "72", "72"])
    assert r["correctness_reward_func"] == [2.0, 0.0, 2.0, 0.0, 0.0]
    assert r["int_reward_func"] == [0.0, 0.5, 0.0, 0.0, 0.0]
    # message-form completions are read the same way as strings
    fn = gsm8k(True).reward_functions()[-1][0]
    assert fn(prompts=None, completions=[[{"role": "assistant", "content": "<answer>5</answer>"}]], answer=["5"]) == [2.0]
    assert fn(prompts=None, completions=["<answer>5</answer>"], answer=["5"]) == [2.0]


def math(d1):
    return get_task("math", TaskConfig(name="math", d1_compat_rewards=d1))


def test_math_rewards():
    solution = "Half of it is $\\boxed{\\frac12}$."
    comps = [
        "<reasoning>r</reasoning><answer>\\boxed{\\frac{1}{2}}</answer>",
        "<reasoning>r</reasoning><answer>0.5</answer>",  # no box: whole response vs GT -> wrong
        "<reasoning>r</reasoning> \\boxed{0.5}",  # no answer tag; "0.5" strips to \frac{1}{2}
        "<reasoning>r</reasoning> nothing",
    ]
    r, total = values(math(True), comps, answer="\\frac12", solution=solution)
    assert r["correctness_reward_func_math"] == [2.0, 0.0, 2.0, 0.0]
    # d1 bug: "\b" is a backspace, so the box is never seen: 0.75 with <answer>, 0.25 without
    assert r["boxed_and_answer_tags_format_reward"] == [0.75, 0.75, 0.25, 0.25]
    assert total == pytest.approx([2.75, 0.75, 2.25, 0.25])
    r, total = values(math(False), comps, answer="\\frac12", solution=solution)
    assert r["boxed_in_answer_format_reward"] == [1.0, 0.75, 0.5, 0.25]
    assert r["correctness_reward_math"] == [2.0, 0.0, 2.0, 0.0]


def countdown(d1):
    return get_task("countdown", TaskConfig(name="countdown", d1_compat_rewards=d1))


def test_countdown_rewards():
    comps = [
        "<reasoning>...</reasoning><answer>\n49 + 55 - 53\n</answer>",
        "<answer>49 + 55 + 53</answer>",  # right numbers, wrong value
        "<answer>52 / 21</answer>",  # wrong numbers
        "no answer tag",
        "<answer>49 + 55 - 53 = 51</answer>",  # "= 51" adds a number
        "<answer>049 + 55 - 53</answer>",  # numbers check passes (int), Python syntax error
        "<answer>(49 + 55 - 53)</answer><answer>49 + 53</answer>",  # the LAST block counts
    ]
    n = len(comps)
    for d1 in (True, False):
        r, _ = values(countdown(d1), comps, numbers=[[49, 55, 53]] * n, target=[51] * n)
        (vals,) = r.values()
        assert vals == [1.0, 0.1, 0.1, 0.0, 0.1, 0.1, 0.1]


def test_countdown_reward_dialects_differ_only_on_python_extras():
    comps = ["<answer>2**3*1</answer>", "<answer>(3*2)//1</answer>", "<answer>2*3+1</answer>"]
    cols = {"numbers": [[2, 3, 1]] * 3, "target": [8, 6, 7]}
    d1_vals = values(countdown(True), comps, **cols)[0]["countdown_reward_func"]
    ours = values(countdown(False), comps, **cols)[0]["countdown_reward"]
    assert d1_vals == [1.0, 1.0, 1.0]  # d1 evaluates with Python eval: ** and // work
    assert ours == [0.1, 0.1, 1.0]  # strict evaluator: only + - * /


def test_sudoku_rewards():
    task = get_task("sudoku", TaskConfig(name="sudoku", d1_compat_rewards=True))
    puzzle, solution = "0204032001400402", "1234432121433412"
    comps = [
        "<answer>\n1234432121433412\n</answer>",
        "<answer>[1234 4321 2143 3412]</answer>",  # only digits are kept
        "<answer>12343214412</answer>",  # padded with 0: 2 of 8 empty cells right
        "<answer>x</answer>",
        "1234432121433412",  # no tags -> 0
        "<answer>0000000000000000</answer><answer>1234432121433412</answer>",  # last block
    ]
    n = len(comps)
    r, _ = values(task, comps, puzzle=[puzzle] * n, solution=[solution] * n)
    assert r["sudoku_reward_func"] == [1.0, 1.0, 0.25, 0.0, 0.0, 1.0]


def test_synthetic_rewards_and_scaling():
    task = get_task("synthetic", TaskConfig(name="synthetic", source="synthetic"))
    comps = [
        "<reasoning>7+5+0=12 4+8+1=13</reasoning><answer>132</answer>",
        "<reasoning>7+5+0=12 4+8+0=12</reasoning><answer>122</answer>",
        " <reasoning> x </reasoning> <answer> 132 </answer><|endoftext|>",
        "132",
    ]
    r, total = values(task, comps, answer="132")
    assert r["arithmetic_correctness_reward"] == [2.0, 0.0, 2.0, 0.0]
    assert r["arithmetic_format_reward"] == [0.5, 0.5, 0.5, 0.0]
    assert total == [2.5, 0.5, 2.5, 0.0]
    task = get_task("synthetic", TaskConfig(name="synthetic", synthetic={"correct_reward": 1.0, "format_reward": 0.25}))
    r, total = values(task, comps[:2], answer="132")
    assert r["arithmetic_correctness_reward"] == [1.0, 0.0] and r["arithmetic_format_reward"] == [0.25, 0.25]
    assert "arithmetic_digit_reward" not in r  # partial credit is opt-in


def test_synthetic_digit_reward_gives_partial_credit():
    task = get_task("synthetic", TaskConfig(name="synthetic", synthetic={"digit_reward": 0.6}))
    comps = [
        "<reasoning>x</reasoning><answer>132</answer>",  # all 3 digits
        "<reasoning>x</reasoning><answer>122</answer>",  # units and hundreds right: 2/3
        "<reasoning>x</reasoning><answer>32</answer>",  # 2 of the longer length 3
        "<reasoning>x</reasoning><answer>1132</answer>",  # 3 of the longer length 4
        "<reasoning>x</reasoning><answer>-132</answer>",  # wrong sign
        "no answer",
    ]
    r, total = values(task, comps, answer="132")
    expected = [0.6, 0.4, 0.4, 0.45, 0.0, 0.0]
    assert r["arithmetic_digit_reward"] == pytest.approx(expected)
    assert total == pytest.approx([2.5 + 0.6, 0.5 + 0.4, 0.5 + 0.4, 0.5 + 0.45, 0.5, 0.0])
    with pytest.raises(ValueError, match="digit_reward"):
        TaskConfig(name="synthetic", synthetic={"digit_reward": -1.0})


def test_trl_reward_functions_plug_in(data_dir):
    """A reward written for TRL's GRPOTrainer works on our rows, through config and through our caller."""
    import trl.rewards

    task = get_task("math", TaskConfig(name="math", data_dir=str(data_dir), extra_rewards=["trl.rewards:accuracy_reward=0.5"]))
    fns = task.reward_functions()
    assert fns[-1] == (trl.rewards.accuracy_reward, 0.5)
    row = task.load_split("test")[2]  # f(-2)+f(-1)+f(0) = 14/3
    assert row["answer"] == "\\frac{14}{3}"
    comps = [f"<answer>\\boxed{{{row['answer']}}}</answer>", "<answer>\\boxed{5}</answer>"]
    cols = {k: [row[k]] * 2 for k in row}
    per_fn, total = call_reward_functions(fns, [task.train_prompt(row)] * 2, comps, cols)
    assert per_fn[-1] == [1.0, 0.0]
    assert total == pytest.approx([2.0 + 1.0 + 0.5, 0.0 + 1.0])
    # think_format_reward (a format reward from TRL) runs on our completions too
    task = get_task("gsm8k", TaskConfig(name="gsm8k", extra_rewards=["trl.rewards:think_format_reward"]))
    per_fn, _ = call_reward_functions(task.reward_functions(), [[]] * 2, ["<think>\nx\n</think>\n18", "18"], {"answer": ["18", "18"]})
    assert per_fn[-1] == [1.0, 0.0]


def test_extra_reward_errors():
    with pytest.raises(ValueError, match="module:function"):
        get_task("gsm8k", TaskConfig(name="gsm8k", extra_rewards=["trl.rewards"])).reward_functions()
    with pytest.raises(ValueError, match="no callable"):
        get_task("gsm8k", TaskConfig(name="gsm8k", extra_rewards=["trl.rewards:nope"])).reward_functions()
    with pytest.raises(ValueError, match="weight"):
        get_task("gsm8k", TaskConfig(name="gsm8k", extra_rewards=["trl.rewards:accuracy_reward=abc"])).reward_functions()
