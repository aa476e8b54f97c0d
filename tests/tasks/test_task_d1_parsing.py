"""d1's MATH helpers (d1-reference §5.2): strip_string steps, is_equiv, last_boxed_only_string quirks."""

import pytest

from d1rl.tasks.parsing import (
    D1ParseError,
    d1_is_equiv,
    d1_last_boxed_only_string,
    d1_remove_boxed,
    d1_strip_string,
    last_answer_block,
    last_boxed_content,
    numbers_in,
)
from fractions import Fraction


@pytest.mark.parametrize(
    "a, b",
    [
        ("\\frac 34", "\\frac{3}{4}"),
        ("9/19", "\\frac9{19}"),
        ("x = 2", "2"),
        ("90^\\circ", "90"),
        ("\\dfrac{1}{2}", "\\frac{1}{2}"),
        ("\\dfrac{33}{100}", "\\frac{33}{100}"),
        ("(-1,6)", "(-1, 6)"),
        ("120", "120^\\circ"),
        ("55^\\circ", "55"),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\frac{\\pi}{2})"),
        ("0.5", "\\frac12"),
        ("\\$18", "18"),
        ("50\\%", "50"),
        (".5", "0.5"),
        ("5 \\text{ cm}", "5"),
    ],
)
def test_equivalences_d1_accepts(a, b):
    assert d1_is_equiv(a, b)


@pytest.mark.parametrize(
    "a, b",
    [
        ("10.0", "10"),  # no numeric comparison of strings
        ("$18$", "18"),  # a bare "$" is not removed
        ("50%", "50"),  # only "\%" is removed
        ("xy = 2", "2"),  # left side longer than 2 characters
        ("16 \\sqrt{3}", "2"),
    ],
)
def test_equivalences_d1_rejects(a, b):
    assert not d1_is_equiv(a, b)


def test_strip_string_steps():
    assert d1_strip_string("\\frac12") == "\\frac{1}{2}"
    assert d1_strip_string("\\frac1{72}") == "\\frac{1}{72}"
    assert d1_strip_string("\\sqrt3") == "\\sqrt{3}"
    assert d1_strip_string("3/4") == "\\frac{3}{4}"
    assert d1_strip_string("k = \\tfrac{1}{3}") == "\\frac{1}{3}"
    assert d1_strip_string("1\\\\2") == "1\\2"
    assert d1_strip_string("") == ""


def test_strip_string_raises_and_is_equiv_falls_back_to_raw_strings():
    # int("x") inside the a/b rule is not caught by d1 -> strip_string raises -> raw comparison
    with pytest.raises(ValueError):
        d1_strip_string("x/2")
    assert d1_is_equiv("x/2", "x/2")
    assert not d1_is_equiv("x/2", "x / 2")  # would be equal after stripping, but strip raised
    with pytest.raises(D1ParseError):
        d1_strip_string("1 \\text{ m} 2 \\text{ s}")
    with pytest.raises(IndexError):
        d1_strip_string("2\\sqrt")


def test_float_branch_only_in_eval_copy():
    assert d1_is_equiv(18.0, "18.0000001", float_branch=True)
    assert not d1_is_equiv(18.0, "18", float_branch=False)  # reward copy: strip_string(18.0) raises -> 18.0 != "18"
    assert d1_is_equiv(None, None) and not d1_is_equiv("1", None)


def test_last_boxed_only_string_quirks():
    assert d1_last_boxed_only_string("a \\boxed{1} b \\boxed{\\frac{1}{2}} c") == "\\boxed{\\frac{1}{2}}"
    assert d1_last_boxed_only_string("no box here") == "no box here"  # whole text
    assert d1_last_boxed_only_string("\\boxed{1} then \\boxed{2") is None  # unbalanced LAST box
    # "\boxed " (space) anywhere wins, up to the first "$" after its last occurrence
    assert d1_last_boxed_only_string("\\boxed{7} and $\\boxed 5$ end") == "\\boxed 5"
    assert d1_last_boxed_only_string("x \\fbox{3} y") == "\\fbox{3}"
    assert d1_remove_boxed("\\boxed{3}") == "3"
    assert d1_remove_boxed("\\boxed 5") == "5"
    assert d1_remove_boxed("\\fbox{3}") == "\\fbox{3}"
    with pytest.raises(TypeError):
        d1_remove_boxed(None)


def test_robust_helpers():
    assert last_boxed_content("\\boxed{1} and \\boxed{\\frac{3}{4}}") == "\\frac{3}{4}"
    assert last_boxed_content("\\boxed{12} then \\boxed{3") == "12"  # unbalanced last box does not hide earlier ones
    assert last_boxed_content("nothing") is None
    assert last_answer_block("<answer>1</answer> <answer>\n 2 \n</answer>") == "2"
    assert last_answer_block("<answer>1</answer> <answer> 7") == "7"  # unclosed last block
    assert numbers_in("$1,080 and -3 or 2.5, \\frac{3}{4}, 7/2") == [
        Fraction(1080), Fraction(-3), Fraction(5, 2), Fraction(3, 4), Fraction(7, 2)
    ]
