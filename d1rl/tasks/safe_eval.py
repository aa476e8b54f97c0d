"""Arithmetic expressions from model output, evaluated without ``eval``.

Countdown rewards and graders must compute the value of an expression the model wrote. d1 calls Python's ``eval``
on it (behind a character whitelist); we never do (project rule: never ``eval`` model output). Instead the text is
parsed with :mod:`ast` and only a handful of node types are interpreted.

Two dialects:

* ``"strict"`` (our default): integer literals, ``+ - * /``, parentheses and unary minus/plus, computed exactly
  with :class:`fractions.Fraction`. Anything else is an :class:`UnsafeExpression`.
* ``"python"`` (the d1-compatible mode): whatever Python's ``eval`` would accept from text that passed d1's
  whitelist ``^[\\d+\\-*/().\\s]+$`` — that also lets through float literals (``1.5``, ``.5``), ``**`` and ``//``.
  Values are computed with Python's own operators on Python ints/floats, so results (float rounding, true division,
  ZeroDivisionError, OverflowError) are exactly those of ``eval``. Parsing goes through the same compiler front end
  as ``eval``, so the same strings are syntax errors (``05``, a line break outside parentheses, ...). A power
  whose result would be astronomically large is refused instead of computed (``eval`` would hang or exhaust
  memory); such a value can never equal a Countdown target, so the verdict is unchanged.
"""

from __future__ import annotations

import ast
import math
import operator
import warnings
from fractions import Fraction
from typing import Union

Number = Union[int, float, Fraction]

# Largest power result (in bits) the python dialect computes; above it the expression counts as failed.
_MAX_POW_BITS = 4096


class UnsafeExpression(ValueError):
    """The text is not an arithmetic expression of the allowed dialect (or cannot be evaluated)."""


_STRICT_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_PYTHON_BINOPS = {**_STRICT_BINOPS, ast.FloorDiv: operator.floordiv}


def _parse(text: str) -> ast.expr:
    # eval() strips leading blanks and tabs before compiling; ast.parse does not (IndentationError), so do it here.
    source = text.lstrip(" \t")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "(1)(2)" makes the compiler warn about calling an int
        try:
            return ast.parse(source, mode="eval").body
        except (SyntaxError, ValueError) as err:  # ValueError: null bytes
            raise UnsafeExpression(f"not a valid expression: {err}") from None


def _safe_pow(base: Number, exp: Number) -> Number:
    if isinstance(base, int) and isinstance(exp, int) and exp > 0 and abs(base) > 1:
        if exp * math.log2(abs(base)) > _MAX_POW_BITS:
            raise UnsafeExpression("power too large to evaluate")
    if isinstance(base, float) or isinstance(exp, float):
        if abs(float(exp)) * math.log2(abs(float(base)) + 2.0) > _MAX_POW_BITS * 4:
            raise UnsafeExpression("power too large to evaluate")
    return base**exp


def _eval_strict(node: ast.expr) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return Fraction(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _eval_strict(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _STRICT_BINOPS:
        left, right = _eval_strict(node.left), _eval_strict(node.right)
        if isinstance(node.op, ast.Div) and right == 0:
            raise UnsafeExpression("division by zero")
        return _STRICT_BINOPS[type(node.op)](left, right)
    raise UnsafeExpression(f"unsupported element {type(node).__name__} (allowed: integers, + - * /, parentheses)")


def _eval_python(node: ast.expr) -> Number:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _eval_python(node.operand)
        return -value if isinstance(node.op, ast.USub) else +value
    if isinstance(node, ast.BinOp):
        left, right = _eval_python(node.left), _eval_python(node.right)
        try:
            if isinstance(node.op, ast.Pow):
                result = _safe_pow(left, right)
            elif type(node.op) in _PYTHON_BINOPS:
                result = _PYTHON_BINOPS[type(node.op)](left, right)
            else:
                raise UnsafeExpression(f"unsupported operator {type(node.op).__name__}")
        except (ArithmeticError, TypeError) as err:  # ZeroDivisionError, OverflowError, ...
            raise UnsafeExpression(f"{type(err).__name__}: {err}") from None
        if isinstance(result, complex):  # (-8)**0.5: eval returns a complex; d1 would then compare it. Not a number here.
            raise UnsafeExpression("complex result")
        return result
    # Calls such as "(1)(2)", tuples "()", Ellipsis "...": eval raises or returns a non-number; both end as failure.
    raise UnsafeExpression(f"unsupported element {type(node).__name__}")


def evaluate(text: str, dialect: str = "strict") -> Number:
    """Value of the arithmetic expression ``text``.

    Args:
        text: the expression, e.g. ``"(85 - 60) * 2"``.
        dialect: ``"strict"`` (exact Fractions; integers, + - * /, parentheses, unary minus) or ``"python"``
            (what d1's ``eval`` accepts after its character whitelist; Python int/float semantics).

    Raises:
        UnsafeExpression: the text is not an expression of the dialect, or evaluating it fails (division by zero).
    """
    if dialect not in ("strict", "python"):
        raise ValueError(f"unknown expression dialect {dialect!r}; use 'strict' or 'python'")
    if not isinstance(text, str):
        raise UnsafeExpression(f"expected a string, got {type(text).__name__}")
    node = _parse(text)
    return _eval_strict(node) if dialect == "strict" else _eval_python(node)


def try_evaluate(text: str, dialect: str = "strict") -> Number | None:
    """:func:`evaluate`, or None when the expression is not allowed or cannot be evaluated."""
    try:
        return evaluate(text, dialect)
    except UnsafeExpression:
        return None
    except RecursionError:  # absurdly deep nesting
        return None
