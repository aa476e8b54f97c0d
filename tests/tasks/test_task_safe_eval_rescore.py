"""The safe arithmetic evaluator, and `d1rl eval rescore` on d1-format generation files."""

import json
from fractions import Fraction

import pytest

from d1rl.tasks import UnsafeExpression, evaluate, try_evaluate
from d1rl.tasks.commands import infer_task, rescore_files, rescore_main, setup_name


@pytest.mark.parametrize(
    "text, value",
    [("49 + 55 - 53", 51), ("(85 - 60) * 2", 50), ("-3 + 5", 2), ("7 / 2", Fraction(7, 2)), ("2*(3+4)/7", 2), ("--4", 4)],
)
def test_strict_values(text, value):
    assert evaluate(text) == value


@pytest.mark.parametrize(
    "text",
    ["2**3", "7//2", "1.5+1", "__import__('os').system('echo hi')", "x + 1", "(1)(2)", "()", "...", "1/0", "5 % 2", "[1]", "1 if 1 else 2"],
)
def test_strict_rejects(text):
    with pytest.raises(UnsafeExpression):
        evaluate(text)
    assert try_evaluate(text) is None


def test_python_dialect_matches_eval_semantics():
    cases = ["2**3*1", "7//2", "1.+.5", "7/2", " 1+2", "(1 +\n2)", "-(3-5)*2", "10/4*2", "2**-1"]
    for text in cases:
        assert evaluate(text, "python") == eval(text.lstrip(" \t"), {"__builtins__": None}, {}), text  # noqa: S307 (literals)
    for text in ["05+3", "1 +\n2", "(1)(2)", "()", "1/0", "...", "9**9**9**9"]:
        assert try_evaluate(text, "python") is None, text
    with pytest.raises(ValueError, match="dialect"):
        evaluate("1", "js")


def test_setup_names():
    assert setup_name("out/gsm8k_instruct_256_128_0_generations.json") == "gsm8k_instruct_256_128"
    assert setup_name("x/sudoku_ckpt_x_step600_512_256_11_generations.json") == "sudoku_ckpt_x_step600_512_256"
    assert setup_name("foo.json") is None
    assert infer_task("math500_instruct_256_128") == "math" and infer_task("countdown_base_128_64") == "countdown"


def _write(path, items):
    path.write_text(json.dumps({"generations": items, "metrics": {"wall_time": 1.0, "total_processed": len(items)}}))


def _gsm_items():
    box = "\n</reasoning>\n<answer>\n\\boxed{{{}}}\n</answer><|eot_id|><|endoftext|>"
    return [
        {"question": "Janet’s ducks", "generations": box.format(18), "ground_truth": 18.0},
        {"question": "orange drink", "generations": box.format(14), "ground_truth": 15.0},
        {"question": "Jordan diapers", "generations": "\n</reasoning>\n<answer>\n5 changes/day\n</answer>", "ground_truth": 5.0},
        {"question": "temperature", "generations": box.format(-10), "ground_truth": None},
        {"question": "bills", "generations": box.format("1,000"), "ground_truth": 1000.0},  # d1: 1.0 -> wrong
    ]


def test_rescore_gsm8k_two_ranks(tmp_path, capsys):
    items = _gsm_items()
    _write(tmp_path / "gsm8k_instruct_256_128_0_generations.json", items[0::2])
    _write(tmp_path / "gsm8k_instruct_256_128_1_generations.json", items[1::2])
    _write(tmp_path / "gsm8k_instruct_128_64_0_generations.json", items[:1])
    out = tmp_path / "report.json"
    assert rescore_main([str(tmp_path), "--task", "gsm8k", "--output", str(out)]) == 0
    text = capsys.readouterr().out
    line = next(l for l in text.splitlines() if l.startswith("gsm8k_instruct_256_128 "))
    # d1: items 1 and 3 correct = 2/5; robust: + "1,000" = 3/5 (the null ground truth stays unknown)
    assert "2 / 5" in line and "40.00" in line and "3 / 5" in line and "60.00" in line
    assert "1 / 1" in next(l for l in text.splitlines() if l.startswith("gsm8k_instruct_128_64 "))
    assert "effective tokens" in text and ("APPROXIMATE" in text or "tiktoken cl100k_base" in text)
    report = json.loads(out.read_text())
    setup = report["setups"]["gsm8k_instruct_256_128"]
    assert setup["d1"]["correct"] == 2 and setup["robust"]["correct"] == 3 and setup["total"] == 5
    assert len(setup["items"]) == 5 and setup["d1_numbers"]["processed"] == 5


def test_rescore_recovers_null_ground_truth_with_data_dir(tmp_path, data_dir):
    test_q = "The highest temperature ever recorded"
    from d1rl.tasks import TaskConfig, get_task

    rows = get_task("gsm8k", TaskConfig(name="gsm8k", data_dir=str(data_dir))).load_split("test")
    question = rows[489]["question"]
    assert test_q in question
    item = {"question": question, "generations": "<answer>\\boxed{-10}</answer>", "ground_truth": None}
    _write(tmp_path / "gsm8k_x_128_64_0_generations.json", [item])
    res = rescore_files([str(tmp_path / "gsm8k_x_128_64_0_generations.json")], "gsm8k", str(data_dir), count_tokens=len)
    r = res["gsm8k_x_128_64"]
    assert (r["d1"]["correct"], r["robust"]["correct"]) == (0, 1)


def test_rescore_sudoku_counts_cells_like_d1(tmp_path, capsys):
    def item(puzzle, solution, block):
        return {"question": f"Solve the following Sudoku puzzle: {puzzle}\n",
                "generations": f"\n</reasoning>\n<answer>\n{block}\n</answer><|eot_id|>", "ground_truth": solution}

    items = [
        item("4320004330100004", "4321124334122134", "4320004330120004"),  # 1/8
        item("0204032001400402", "1234432121433412", "12343214412"),  # 2/8
        item("0104000214003041", "2134431214233241", "01040002140003041"),  # 0/8
        item("0204032001400402", "1234432121433412", "1234432121433412"),  # 8/8
    ]
    path = tmp_path / "sudoku_instruct_256_128_0_generations.json"
    _write(path, items)
    res = rescore_files([str(path)], None, count_tokens=lambda t: 10)
    r = res["sudoku_instruct_256_128"]
    assert (r["d1"]["cells_correct"], r["d1"]["cells_total"]) == (11, 32)
    assert (r["robust"]["correct"], r["robust"]["total"]) == (1, 4)
    assert rescore_main([str(path)]) == 0
    out = capsys.readouterr().out
    row = next(l for l in out.splitlines() if l.startswith("sudoku_instruct_256_128 "))
    assert "11 / 32" in row and "34.38" in row and "1 / 4" in row
    assert "puzzles solved" in out


def test_rescore_countdown_and_math(tmp_path):
    cd = [
        {"question": "Numbers: [49, 55, 53]\nTarget: 51", "generations": "<answer>\\boxed{49 + 55 - 53}</answer>", "ground_truth": [[49, 55, 53], 51]},
        {"question": "Numbers: [33, 21, 52]\nTarget: 2", "generations": "<answer>\\boxed{52 / 21}</answer>", "ground_truth": [[33, 21, 52], 2]},
    ]
    mth = [
        {"question": "q", "generations": "\\boxed{9/19}", "ground_truth": "\\frac9{19}"},
        {"question": "q", "generations": "\\boxed{10.0}", "ground_truth": "10"},
    ]
    _write(tmp_path / "countdown_instruct_128_64_0_generations.json", cd)
    _write(tmp_path / "math500_instruct_128_64_0_generations.json", mth)
    res = rescore_files([str(p) for p in tmp_path.iterdir()], None, count_tokens=len)
    assert res["countdown_instruct_128_64"]["d1"]["correct"] == 1
    assert (res["math500_instruct_128_64"]["d1"]["correct"], res["math500_instruct_128_64"]["robust"]["correct"]) == (1, 2)


def test_rescore_errors(tmp_path, capsys):
    assert rescore_main([str(tmp_path / "missing.json")]) == 2
    bad = tmp_path / "gsm8k_a_1_0_generations.json"
    bad.write_text("{}")
    with pytest.raises(SystemExit, match="no 'generations' list"):
        rescore_main([str(bad)])
    odd = tmp_path / "weird.json"
    odd.write_text('{"generations": []}')
    with pytest.raises(SystemExit, match="_<rank>_generations.json"):
        rescore_main([str(odd)])
