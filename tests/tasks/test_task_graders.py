"""Graders: the worked examples of d1-reference §7 (d1 mode) and the robust grader's fixes.

Completions are written by hand to exercise each path §5.2 describes; the expected verdicts are d1's.
"""

import pytest

from d1rl.tasks import get_task

EOT = "<|eot_id|><|endoftext|><|endoftext|>"


def d1_grade(task_name, record):
    task = get_task(task_name)
    row = task.row_from_d1_record(record)
    return task.grade(record["generations"], row, "d1")


def robust_grade(task_name, record, **row_overrides):
    task = get_task(task_name)
    row = {**task.row_from_d1_record(record), **row_overrides}
    return task.grade(record["generations"], row, "robust")


# ---------------------------------------------------------------------------------------------------------------- GSM8K


def test_gsm8k_example_1_boxed_correct():
    rec = {"question": "Janet’s ducks lay 16 eggs per day. ...", "ground_truth": 18.0,
           "generations": "\n16 - 3 - 4 = 9 eggs, 9 * 2 = 18.\n</reasoning>\n<answer>\n\\boxed{18}\n</answer>" + EOT}
    g = d1_grade("gsm8k", rec)
    assert (g.extracted, g.correct) == (18.0, True)


def test_gsm8k_example_2_boxed_wrong():
    rec = {"question": "I have 10 liters of orange drink ...", "ground_truth": 15.0,
           "generations": "\nwater = 14\n</reasoning>\n<answer>\n\\boxed{14}\n</answer>" + EOT}
    g = d1_grade("gsm8k", rec)
    assert (g.extracted, g.correct) == (14.0, False)


def test_gsm8k_example_3_answer_tag_fallback_last_number():
    rec = {"question": "Jordan has 2 children who wear diapers. ...", "ground_truth": 5.0,
           "generations": "\n2 * 5 = 10 changes, half is 5\n</reasoning>\n<answer>\n5 changes/day\n</answer>" + EOT}
    g = d1_grade("gsm8k", rec)
    assert (g.extracted, g.correct, g.details["source"]) == (5.0, True, "answer_tag")


def test_gsm8k_example_4_negative_ground_truth_is_null_and_wrong():
    rec = {"question": "The highest temperature ever recorded in Southlandia is -48 degrees ...", "ground_truth": None,
           "generations": "\n(-48 + 21 - 3) / 3 = -10\n</reasoning>\n<answer>\n\\boxed{-10}\n</answer>" + EOT}
    g = d1_grade("gsm8k", rec)
    assert (g.extracted, g.correct) == (-10.0, False)
    # the robust grader, given the true answer, counts it
    assert robust_grade("gsm8k", rec, answer="-10").correct


@pytest.mark.parametrize(
    "generation, expected",
    [
        ("\\boxed{12} then \\boxed{18}", 12.0),  # first box wins
        ("\\boxed{1,000}", 1.0),  # float fails -> first number "1"
        ("\\boxed{\\frac{1}{2}}", 1.0),  # non-greedy capture "\frac{1" -> 1
        ("\\boxed{\\$18}", 18.0),
        ("\\boxed{...} \\boxed{} \\boxed{7}", 7.0),  # placeholders skipped
        ("\\boxed{x} \\boxed{9}", 9.0),  # a box without a number does not stop the search
        ("<answer>\n3.5\n</answer> <answer>4</answer>", 3.5),  # FIRST answer block, float of it
        ("<answer>12 apples and 13 pears</answer>", 13.0),  # last number of the block
        ("The answer is 18.", None),  # no box, no tags: nothing
    ],
)
def test_gsm8k_d1_extraction_rules(generation, expected):
    g = d1_grade("gsm8k", {"question": "q", "ground_truth": 18.0, "generations": generation})
    assert g.extracted == expected
    assert g.correct == (expected == 18.0)


def test_gsm8k_ground_truth_from_dataset_drops_negatives(data_dir):
    from d1rl.tasks import TaskConfig
    from d1rl.tasks.gsm8k import d1_ground_truth

    task = get_task("gsm8k", TaskConfig(name="gsm8k", data_dir=str(data_dir)))
    test = task.load_split("test")
    assert test[489]["answer"] == "-10" and test[1113]["answer"] == "-3"
    assert d1_ground_truth(test[489]["solution"]) is None and d1_ground_truth(test[1113]["solution"]) is None
    assert d1_ground_truth(test[0]["solution"]) == 18.0
    assert d1_ground_truth("#### $1,080.50") == 1080.5
    # graded from a dataset row, d1 mode: even "-10" is wrong; robust: right
    row = test[489]
    assert not task.grade("<answer>\\boxed{-10}</answer>", row, "d1").correct
    assert task.grade("<answer>\\boxed{-10}</answer>", row, "robust").correct


@pytest.mark.parametrize(
    "generation, answer, correct",
    [
        ("so \\boxed{1,080}", "1,080", True),
        ("\\boxed{12} first, then corrected: \\boxed{18}", "18", True),  # last box
        ("<answer>\n$18.00\n</answer>", "18", True),
        ("<answer>\\boxed{\\frac{36}{2}}</answer>", "18", True),
        ("<answer>\\boxed{2^3}</answer>", "8", True),  # math-verify
        ("<answer>\\boxed{-3}</answer>", "-3", True),
        ("<answer>\\boxed{3}</answer>", "-3", False),
        ("she makes 18 dollars", "18", True),  # last number of the text when there is no box/tag
        ("nothing here", "18", False),
    ],
)
def test_gsm8k_robust(generation, answer, correct):
    task = get_task("gsm8k")
    assert task.grade(generation, {"question": "q", "answer": answer}, "robust").correct is correct


# ----------------------------------------------------------------------------------------------------------------- MATH


@pytest.mark.parametrize(
    "generation, truth, extracted, correct",
    [
        ("\n2004 = 12 * 167\n</reasoning>\n<answer>\n\\boxed{0}\n</answer>" + EOT, "0", "0", True),
        ("\nso x = 2\n</reasoning>\n<answer>\n\\boxed{x = 2}\n</answer>" + EOT, "2", "x = 2", True),
        ("\nside 2\n</reasoning>\n<answer>\n\\boxed{2}\n</answer>" + EOT, "16 \\sqrt{3}", "2", False),
        ("\nx = 9/19\n</reasoning>\n<answer>\n\\boxed{9/19}\n</answer>" + EOT, "\\frac9{19}", "9/19", True),
        ("\nratio\n</reasoning>\n<answer>\n\\boxed{\\frac{3}{4}}\n</answer>" + EOT, "\\frac 34", "\\frac{3}{4}", True),
    ],
)
def test_math_examples(generation, truth, extracted, correct):
    g = d1_grade("math", {"question": "q", "ground_truth": truth, "generations": generation})
    assert (g.extracted, g.correct) == (extracted, correct)


def test_math_d1_fallbacks():
    # no box: the WHOLE text is the answer (so an answer only in tags is wrong)
    gen = "\nreasoning\n</reasoning>\n<answer>\n5\n</answer>" + EOT
    g = d1_grade("math", {"question": "q", "ground_truth": "5", "generations": gen})
    assert g.extracted == gen and not g.correct
    # unbalanced braces -> None -> first <answer> block
    gen = "\\boxed{5\n</reasoning>\n<answer> 5 </answer>"
    g = d1_grade("math", {"question": "q", "ground_truth": "5", "generations": gen})
    assert (g.extracted, g.correct) == ("5", True)
    # "\boxed " with a space: text after the LAST occurrence up to "$"
    gen = "we get $\\boxed{4}$ hmm no, $\\boxed 7$ final"
    g = d1_grade("math", {"question": "q", "ground_truth": "7", "generations": gen})
    assert (g.extracted, g.correct) == ("7", True)
    # empty box -> fallback to the answer block
    gen = "\\boxed{} <answer>3</answer>"
    assert d1_grade("math", {"question": "q", "ground_truth": "3", "generations": gen}).extracted == "3"


def test_math_robust():
    task = get_task("math")
    row = {"question": "q", "answer": "\\frac{14}{3}"}
    assert task.grade("<answer>\\boxed{14/3}</answer>", row, "robust").correct
    assert task.grade("<answer>\\boxed{\\dfrac{14}{3}}</answer><|eot_id|>", row, "robust").correct
    assert task.grade("<answer>14/3</answer>", row, "robust").correct  # answer tag without box
    assert not task.grade("<answer>\\boxed{3}</answer>", row, "robust").correct
    row = {"question": "q", "answer": "10"}
    assert task.grade("\\boxed{10.0}", row, "robust").correct  # d1 says no
    assert not task.grade("\\boxed{10.0}", row, "d1").correct
    row = {"question": "q", "answer": "\\left( 3, \\frac{\\pi}{2} \\right)"}
    g = task.grade("\\boxed{(3,\\pi/2)}", row, "robust")
    assert g.correct and g.details["via"] == "math_verify"


# ------------------------------------------------------------------------------------------------------------ Countdown


def test_countdown_example_1_correct():
    rec = {"question": "Numbers: [49, 55, 53]\nTarget: 51", "ground_truth": [[49, 55, 53], 51],
           "generations": "\n49 + 55 = 104, 104 - 53 = 51\n</reasoning>\n<answer>\n\\boxed{49 + 55 - 53}\n</answer>" + EOT}
    g = d1_grade("countdown", rec)
    assert (g.extracted, g.correct, g.details["evaluation_result"]) == ("49 + 55 - 53", True, 51)


def test_countdown_example_2_numbers_check_fails():
    rec = {"question": "Numbers: [33, 21, 52]\nTarget: 2", "ground_truth": [[33, 21, 52], 2],
           "generations": "\n52 / 21 is about 2\n</reasoning>\n<answer>\n\\boxed{52 / 21}\n</answer>" + EOT}
    g = d1_grade("countdown", rec)
    assert (g.extracted, g.correct, g.details["evaluation_result"]) == ("52 / 21", False, None)


def test_countdown_example_3_leading_space_kept_wrong_number():
    rec = {"question": "Numbers: [60, 85, 87]\nTarget: 62", "ground_truth": [[60, 85, 87], 62],
           "generations": "\n85 - 60 = 25\n</reasoning>\n<answer>\n\\boxed{ (85 - 60) - 25}\n</answer>" + EOT}
    g = d1_grade("countdown", rec)
    assert (g.extracted, g.correct) == (" (85 - 60) - 25", False)


def test_countdown_example_4_no_backslash_whole_text_equals_rule():
    gen = ("\nFirst, 99 - 79 + 61 - 20 - 41 = 20. Then 99 - 79 = 20.\n</reasoning>\n<answer>\n<boxed{99 - 79 + 61}\n"
           "</answer>" + EOT)
    rec = {"question": "Numbers: [79, 99, 61]\nTarget: 81", "ground_truth": [[79, 99, 61], 81], "generations": gen}
    g = d1_grade("countdown", rec)
    assert (g.extracted, g.correct) == ("99 - 79 + 61 - 20 - 41", False)


def test_countdown_d1_eval_quirks():
    q = {"question": "Numbers: [2, 3, 1]\nTarget: 8"}
    # "**" passes d1's whitelist and eval computes it
    assert d1_grade("countdown", {**q, "ground_truth": [[2, 3, 1], 8], "generations": "\\boxed{2**3*1}"}).correct
    # failures give inf (evaluation_result), never an exception
    g = d1_grade("countdown", {**q, "ground_truth": [[2, 3, 1], 8], "generations": "\\boxed{2 3 1}"})
    assert g.details["evaluation_result"] == float("inf") and not g.correct
    g = d1_grade("countdown", {**q, "ground_truth": [[2, 3, 1], 8], "generations": "\\boxed{(2)(3)(1)}"})
    assert g.details["evaluation_result"] == float("inf")
    # LaTeX operators are translated, "= target" is cut
    g = d1_grade("countdown", {**q, "ground_truth": [[2, 3, 1], 6], "generations": "\\boxed{2 \\times 3 \\cdot 1 = 6}"})
    assert (g.extracted, g.correct) == ("2 * 3 * 1", True)
    # ground truth not a list: numbers/target parsed from the question (d1 fallback)
    g = d1_grade("countdown", {**q, "ground_truth": None, "generations": "\\boxed{(2+3)*1+3}"})
    assert not g.correct  # 3 used twice
    g = d1_grade("countdown", {**q, "ground_truth": "x", "generations": "\\boxed{2*(3+1)}"})
    assert g.correct


def test_countdown_robust():
    task = get_task("countdown")
    row = {"question": "Numbers: [49, 55, 53]\nTarget: 51", "numbers": [49, 55, 53], "target": 51, "answer": "51"}
    assert task.grade("<answer>\n49 + 55 - 53 = 51\n</answer>", row, "robust").correct
    assert task.grade("<answer>51 = 55 - 53 + 49</answer>", row, "robust").correct
    assert task.grade("$\\boxed{55 - 53 + 49}$", row, "robust").correct
    assert task.grade("\\boxed{55 − 53 + 49}", row, "robust").correct  # unicode minus
    assert not task.grade("<answer>55 + 53 - 49</answer>", row, "robust").correct
    assert not task.grade("<answer>55 ** 53 + 49</answer>", row, "robust").correct  # no powers
    assert not task.grade("<answer>__import__('os') or 49+55-53</answer>", row, "robust").correct
    row = {"numbers": [4, 6, 3], "target": 8, "question": "", "answer": "8"}
    assert task.grade("\\boxed{4 / 6 * (3 * 4) }", row, "robust").correct is False  # 4 used twice
    row = {"numbers": [6, 4, 3], "target": 8, "question": "", "answer": "8"}
    assert task.grade("\\boxed{\\frac{6}{3} * 4}", row, "robust").correct


# --------------------------------------------------------------------------------------------------------------- Sudoku


@pytest.mark.parametrize(
    "puzzle, solution, answer_block, extracted, cells",
    [
        ("4320004330100004", "4321124334122134", "4320004330120004", "4320004330120004", 1),
        ("0204032001400402", "1234432121433412", "12343214412", "1234321441200000", 2),
        ("0104000214003041", "2134431214233241", "01040002140003041", "0104000214000304", 0),
        ("0204032001400402", "1234432121433412", "1234432121433412", "1234432121433412", 8),
    ],
)
def test_sudoku_examples(puzzle, solution, answer_block, extracted, cells):
    gen = f"\nrow by row\n</reasoning>\n<answer>\n{answer_block}\n</answer>{EOT}"
    rec = {"question": f"Solve the following Sudoku puzzle: {puzzle}\n", "ground_truth": solution, "generations": gen}
    g = d1_grade("sudoku", rec)
    assert (g.extracted, g.details["correct_cells"], g.details["empty_cells"]) == (extracted, cells, 8)
    assert g.correct == (cells == 8)


@pytest.mark.parametrize(
    "generation, found",
    [
        ("<answer>\nSolution:\n```\n1234 4321\n2143 3412\n```\n</answer>", "1234432121433412"),  # (a) fenced block
        ("<answer>[1234432121433412]<|eot_id|>", "[1234432121433412]"),  # (b) up to eot; keeps non-digits
        ("<answer></answer>\n1234432121433412<|eot_id|>", "1234432121433412"),  # (c) after </answer>
        ("final grid 1234432121433412 </answer>", "1234432121433412"),  # (d): nothing after </answer>
        ("grid 1234432121433412 </answer> then 4444", "then4444"),  # (c) wins over (d) when text follows
        ("I think 1234432121433412 is it", "1234432121433412"),  # (e) standalone 16 digits
        ("no digits at all", ""),
    ],
)
def test_sudoku_d1_patterns(generation, found):
    from d1rl.tasks.sudoku import d1_extract

    assert d1_extract(generation) == found


def test_sudoku_robust_puzzle_accuracy_next_to_cells():
    task = get_task("sudoku")
    row = {"question": "", "puzzle": "0204032001400402", "solution": "1234432121433412", "answer": "1234432121433412"}
    g = task.grade("<answer>\n1234\n4321\n2143\n3412\n</answer>", row, "robust")
    assert g.correct and g.details["correct_cells"] == 8 and g.details["solved"]
    g = task.grade("<answer>3214432121433412</answer>", row, "robust")  # two empty cells swapped: 6 of 8, not solved
    assert not g.correct and g.details["correct_cells"] == 6 and g.score == 0.75
    g = task.grade("grid:\n1234\n4321\n2143\n3412", row, "robust")  # no tags: 4 rows of 4
    assert g.correct and g.details["source"] == "digits"
