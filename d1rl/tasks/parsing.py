"""Answer extraction helpers shared by rewards and graders: d1's behaviour, reproduced on purpose, and robust ones.

The ``d1_*`` functions reproduce d1's MATH helpers (``last_boxed_only_string``, ``remove_boxed``, ``strip_string``,
``is_equiv``; d1-reference §5.2) including their failure modes, because d1's published accuracies depend on them:

* ``d1_last_boxed_only_string`` returns the WHOLE text when there is no ``\\boxed``/``\\fbox`` and ``None`` when the
  braces never balance; if ``"\\boxed "`` (with a space) occurs anywhere it wins over brace matching.
* ``d1_strip_string`` raises on some inputs (a ``\\text{ `` that occurs twice, an ``a/b`` whose parts are not
  integers, a trailing ``\\sqrt`` or ``\\frac``); ``d1_is_equiv`` then compares the RAW strings. Exceptions are
  therefore part of the behaviour and are kept (only ``AssertionError`` is replaced by :class:`D1ParseError`,
  because asserts vanish under ``python -O``).

The ``robust_*`` helpers are what our default graders use.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any


class D1ParseError(ValueError):
    """Raised where d1's helpers fail an ``assert`` (callers treat it like any exception, as d1 does)."""


# ---------------------------------------------------------------------------------------------------------------
# d1's boxed-answer helpers (d1-reference §5.2)
# ---------------------------------------------------------------------------------------------------------------


def d1_last_boxed_only_string(text: str) -> str | None:
    """The last ``\\boxed{...}`` (or ``\\fbox{...}``) with its brace-matched content, d1 style.

    Quirks kept: ``"\\boxed "`` (space form) anywhere → ``"\\boxed "`` + text after its LAST occurrence up to the
    first ``$``; no ``\\boxed``/``\\fbox`` → the whole text; unbalanced braces → None.
    """
    if "\\boxed " in text:
        return "\\boxed " + text.split("\\boxed ")[-1].split("$")[0]
    start = text.rfind("\\boxed")
    if start < 0:
        start = text.rfind("\\fbox")
        if start < 0:
            return text
    depth = 0
    for i in range(start, len(text)):
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return None


def d1_remove_boxed(s: str) -> str:
    """Strip a ``\\boxed `` / ``\\boxed{...}`` wrapper; anything else comes back unchanged.

    Raises TypeError for None (as d1 does: callers rely on it to detect unbalanced braces) and
    :class:`D1ParseError` if ``"\\boxed "`` occurs but not at the start.
    """
    if "\\boxed " in s:
        if not s.startswith("\\boxed "):
            raise D1ParseError("'\\boxed ' not at the start")
        return s[len("\\boxed ") :]
    if s.startswith("\\boxed{") and s.endswith("}"):
        return s[len("\\boxed{") : -1]
    return s


def _d1_fix_fracs(string: str) -> str:
    parts = string.split("\\frac")
    out = parts[0]
    for sub in parts[1:]:
        out += "\\frac"
        if sub[0] == "{":  # IndexError for an empty part (text ends in \frac): propagates, like d1
            out += sub
            continue
        if len(sub) < 2:
            return string
        a, b = sub[0], sub[1]
        if b != "{":
            out += "{" + a + "}{" + b + "}" + sub[2:]
        else:
            out += "{" + a + "}" + b + sub[2:]
    return out


def _d1_fix_a_slash_b(string: str) -> str:
    parts = string.split("/")
    if len(parts) != 2:
        return string
    # int() failures (ValueError) are deliberately NOT caught: d1 only catches its assert, so "x/2" makes
    # strip_string raise and is_equiv fall back to comparing raw strings.
    a, b = int(parts[0]), int(parts[1])
    if string != f"{a}/{b}":
        return string
    return "\\frac{" + str(a) + "}{" + str(b) + "}"


def _d1_remove_right_units(string: str) -> str:
    if "\\text{ " in string:
        parts = string.split("\\text{ ")
        if len(parts) != 2:
            raise D1ParseError("'\\text{ ' occurs more than once")
        return parts[0]
    return string


def _d1_fix_sqrt(string: str) -> str:
    if "\\sqrt" not in string:
        return string
    parts = string.split("\\sqrt")
    out = parts[0]
    for sub in parts[1:]:
        if sub[0] != "{":  # IndexError for an empty part: propagates, like d1
            out += "\\sqrt{" + sub[0] + "}" + sub[1:]
        else:
            out += "\\sqrt" + sub
    return out


def d1_strip_string(string: str) -> str:
    """d1's MATH answer normalisation, step by step in d1's order (may raise; see module docstring)."""
    string = string.replace("\n", "")
    string = string.replace("\\!", "")
    string = string.replace("\\\\", "\\")
    string = string.replace("tfrac", "frac").replace("dfrac", "frac")
    string = string.replace("\\left", "").replace("\\right", "")
    string = string.replace("^{\\circ}", "").replace("^\\circ", "")
    string = string.replace("\\$", "")  # only backslash-dollar; a bare "$" stays
    string = _d1_remove_right_units(string)
    string = string.replace("\\%", "")  # d1 has this replace twice (its second literal is the same string)
    string = string.replace(" .", " 0.").replace("{.", "{0.")
    if len(string) == 0:
        return string
    if string[0] == ".":
        string = "0" + string
    sides = string.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:  # "k = 5" -> "5"
        string = sides[1]
    string = _d1_fix_sqrt(string)
    string = string.replace(" ", "")
    string = _d1_fix_fracs(string)
    if string == "0.5":
        string = "\\frac{1}{2}"
    string = _d1_fix_a_slash_b(string)
    return string


def d1_is_equiv(str1: Any, str2: Any, *, float_branch: bool = True) -> bool:
    """d1's ``is_equiv``: strip_string equality, raw equality when strip_string raises.

    ``float_branch=True`` is the evaluation copy (parser_helper.py): if either side is a Python float, compare
    numerically with tolerance 1e-6. The reward copy (math500_utils.py) has no float branch (``float_branch=False``).
    """
    if float_branch and (type(str1) is float or type(str2) is float):
        try:
            return abs(float(str1) - float(str2)) < 1e-6
        except Exception:
            return False
    if str1 is None and str2 is None:
        return True
    if str1 is None or str2 is None:
        return False
    try:
        return d1_strip_string(str1) == d1_strip_string(str2)
    except Exception:
        return str1 == str2


def d1_extract_xml_answer(text: str) -> str:
    """d1 reward helper: text after the LAST ``<answer>``, cut at the next ``</answer>``, stripped (whole text if no tag)."""
    return text.split("<answer>")[-1].split("</answer>")[0].strip()


def d1_last_answer_block(text: str) -> str | None:
    """Content of the LAST ``<answer>...</answer>`` (DOTALL), stripped; None if there is none (d1 countdown/sudoku)."""
    matches = re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL)
    return matches[-1].strip() if matches else None


def d1_first_answer_block(text: str) -> str | None:
    """Content of the FIRST ``<answer>...</answer>`` (DOTALL), not stripped; None if there is none (d1 eval parsers)."""
    match = re.search(r"<answer>(.*?)</answer>", text, re.DOTALL)
    return match.group(1) if match else None


# ---------------------------------------------------------------------------------------------------------------
# robust helpers
# ---------------------------------------------------------------------------------------------------------------

_SPECIAL_TOKEN = re.compile(r"<\|[A-Za-z0-9_]+\|>")


def clean_special_tokens(text: str) -> str:
    """Drop chat special tokens such as ``<|eot_id|>`` / ``<|endoftext|>`` (eval generations keep them)."""
    return _SPECIAL_TOKEN.sub("", text)


def last_boxed_content(text: str) -> str | None:
    """Content of the LAST ``\\boxed{...}``/``\\fbox{...}`` with balanced braces, or of ``\\boxed x`` (space form).

    Unlike d1, an unbalanced last box does not hide earlier, well-formed ones, and no box → None.
    """
    for match in reversed(list(re.finditer(r"\\(?:boxed|fbox)\s*", text))):
        pos = match.end()
        if pos < len(text) and text[pos] == "{":
            depth = 0
            for i in range(pos, len(text)):
                if text[i] == "{":
                    depth += 1
                elif text[i] == "}":
                    depth -= 1
                    if depth == 0:
                        return text[pos + 1 : i].strip()
            continue  # unbalanced: try an earlier box
        if match.group(0).endswith(" "):  # "\boxed 5": up to the next $ or line end
            rest = re.split(r"[$\n]", text[pos:], maxsplit=1)[0].strip()
            if rest:
                return rest
    return None


def last_answer_block(text: str) -> str | None:
    """Content of the last ``<answer>...</answer>``; an unclosed last ``<answer>`` runs to the end of the text."""
    closed = re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL)
    last_open = text.rfind("<answer>")
    if last_open >= 0 and "</answer>" not in text[last_open:]:
        tail = text[last_open + len("<answer>") :].strip()
        if tail:
            return tail
    return closed[-1].strip() if closed else None


_NUMBER = re.compile(
    r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*-?\d+(?:\.\d+)?)?"
    r"|\\[dt]?frac\{\s*-?\d+(?:\.\d+)?\s*\}\{\s*-?\d+(?:\.\d+)?\s*\}"
)


def to_fraction(token: str) -> Fraction | None:
    """A number written as ``1,080`` / ``-3`` / ``2.50`` / ``3/4`` / ``\\frac{3}{4}`` as an exact Fraction."""
    token = token.strip()
    frac = re.fullmatch(r"-?\\[dt]?frac\{\s*(-?[\d.]+)\s*\}\{\s*(-?[\d.]+)\s*\}", token)
    if frac:
        num, den = frac.groups()
        sign = -1 if token.startswith("-") else 1
        try:
            value = Fraction(num) / Fraction(den)
        except (ValueError, ZeroDivisionError):
            return None
        return sign * value
    token = token.replace(",", "")
    try:
        if "/" in token:
            num, den = token.split("/", 1)
            return Fraction(num.strip()) / Fraction(den.strip())
        return Fraction(token)
    except (ValueError, ZeroDivisionError):
        return None


def numbers_in(text: str) -> list[Fraction]:
    """Every number in ``text`` (thousands separators, negatives, decimals, ``a/b`` and ``\\frac{a}{b}``), in order."""
    cleaned = text.replace("\\$", "").replace("$", "").replace("\\!", "").replace("{,}", ",")
    out = []
    for match in _NUMBER.finditer(cleaned):
        value = to_fraction(match.group(0))
        if value is not None:
            out.append(value)
    return out


def math_verify_equal(gold: str, prediction: str) -> bool:
    """Mathematical equivalence by math-verify (``parse`` + ``verify``); False when either side does not parse.

    Both strings are answers (not whole solutions), so they are wrapped in ``$...$`` for math-verify's LaTeX
    extraction. math-verify's timeouts use ``signal.alarm``, which only works in the main thread; elsewhere they
    are switched off.
    """
    import threading

    try:
        from math_verify import parse, verify
    except ImportError as err:  # pragma: no cover - declared in the [math] extra
        raise ImportError("the robust MATH grader needs math-verify: pip install 'math-verify[antlr4-9-3]'") from err
    if not gold or not prediction:
        return False
    main = threading.current_thread() is threading.main_thread()
    timeout = 5 if main else None
    try:
        gold_parsed = parse(f"${gold}$", parsing_timeout=timeout)
        pred_parsed = parse(f"${prediction}$", parsing_timeout=timeout)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))
    except Exception:
        return False
