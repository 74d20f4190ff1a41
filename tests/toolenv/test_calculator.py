"""Tests for the safe arithmetic calculator tool."""

from __future__ import annotations

import math
import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolenv.tools.calculator import (
    MAX_EXPRESSION_CHARS,
    CalculatorError,
    calculator,
    evaluate,
    format_number,
)

# --------------------------------------------------------------------------
# Arithmetic
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 + 2", 3),
        ("7*6", 42),
        ("2 + 3 * 4", 14),
        ("(2 + 3) * 4", 20),
        ("10 - 2 - 3", 5),
        ("100 / 10 / 5", 2.0),
        ("7 // 2", 3),
        ("-7 // 2", -4),
        ("-3 + 5", 2),
        ("--3", 3),
        ("+4", 4),
        ("-2**2", -4),
        ("2**-1", 0.5),
        ("2**3**2", 512),
        ("2^10", 1024),
        ("2^10 - 1,000", 24),
        ("(12/60)*50", 10.0),
        (".5 + 3.", 3.5),
        ("1e3 + 1", 1001.0),
        ("3 × 4", 12),
        ("12 ÷ 4", 3.0),
        ("10 − 4", 6),
        ("5²", 25),
    ],
)
def test_arithmetic(expression: str, expected: int | float) -> None:
    result = evaluate(expression)
    assert result == expected
    assert type(result) is type(expected)


def test_ints_stay_ints_and_division_gives_float() -> None:
    assert type(evaluate("7*6")) is int
    assert type(evaluate("6/3")) is float
    assert evaluate("2**100") == 2**100


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1,000,000", 1_000_000),
        ("1,234.5", 1234.5),
        ("1,000 + 2,500", 3500),
        ("min(1,2)", 1),
        ("max(3,1,2)", 3),
        ("max(1, 234)", 234),
    ],
)
def test_thousands_separators_and_function_commas(expression: str, expected: int | float) -> None:
    assert evaluate(expression) == expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("50%", 0.5),
        ("20% * 80", 16),
        ("80 * 20%", 16),
        ("12.5%", 0.125),
        ("(5 + 5)%", 0.1),
        ("7 % 3", 1),
        ("7%3", 1),
        ("10 % (4)", 2),
        ("10 % abs(-4)", 2),
    ],
)
def test_percent_versus_modulo(expression: str, expected: int | float) -> None:
    assert evaluate(expression) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("$5 + $3", 8),
        ("€1,200 - £200", 1000),
        ("5€ * 2", 10),
        ("20% * $80", 16),
        ("2 + 2 =", 4),
        ("2 + 2 = ?", 4),
        ("2 + 2=?", 4),
        ("  (2 + 3).  ", 5),
        ("3.", 3.0),
        ("1 +\n2", 3),
    ],
)
def test_everyday_notation(expression: str, expected: int | float) -> None:
    assert evaluate(expression) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("sqrt(16)", 4.0),
        ("abs(-3)", 3),
        ("round(2.567, 2)", 2.57),
        ("round(2.6)", 3),
        ("min(4, 2, 8)", 2),
        ("max(4)", 4),
        ("floor(2.7)", 2),
        ("ceil(2.1)", 3),
        ("log(8, 2)", 3.0),
        ("log(exp(2))", 2.0),
        ("log10(1000)", 3.0),
        ("sqrt(9) + 2^3", 11.0),
        ("round(1234, -2)", 1200),
        ("round(5, -10^300)", 0),
        ("round(2.5, 10^300)", 2.5),
    ],
)
def test_functions(expression: str, expected: int | float) -> None:
    assert evaluate(expression) == pytest.approx(expected)


def test_long_left_leaning_sum_is_not_a_nesting_error() -> None:
    assert evaluate("+".join(["1"] * 200)) == 200


# --------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (24.0, "24"),
        (0.1 + 0.2, "0.3"),
        (1 / 3, "0.3333333333"),
        (2 / 3, "0.6666666667"),
        (-0.0, "0"),
        (0.0, "0"),
        (42, "42"),
        (-7, "-7"),
        (123456.789, "123456.789"),
        (1e-6, "0.000001"),
        (1e15, "1000000000000000"),
        (30000000000.000004, "30000000000"),
        (-2.5, "-2.5"),
        (10**20, "100000000000000000000"),
    ],
)
def test_format_number(value: int | float, expected: str) -> None:
    assert format_number(value) == expected


def test_format_number_uses_e_notation_outside_plain_range() -> None:
    assert float(format_number(1e20)) == 1e20
    assert "e" in format_number(1e20)
    assert "e" in format_number(1.5e-9)
    assert float(format_number(1.5e-9)) == 1.5e-9
    assert format_number(math.inf) == "inf"
    assert format_number(math.nan) == "nan"


def test_format_number_rejects_non_numbers() -> None:
    with pytest.raises(TypeError, match="Expected an int or a float, got str"):
        format_number("1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got bool"):
        format_number(True)


def test_calculator_tool_returns_formatted_string() -> None:
    assert calculator("(12/60)*50") == "10"
    assert calculator("2^10 - 1,000") == "24"
    assert calculator("1/3") == "0.3333333333"
    assert calculator("20% * 80") == "16"


def test_calculator_docstring_shape() -> None:
    doc = calculator.__doc__
    assert doc is not None
    assert doc.splitlines()[0] == "Evaluate an arithmetic expression and return its value."
    assert "Args:" in doc
    assert "expression:" in doc
    assert typing.get_type_hints(calculator) == {"expression": str, "return": str}


# --------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("9**9**9**9", "too large"),
        ("10**100000", "too large"),
        ("2**5000", "too large"),
        ("10**400", "Result too large"),
        ("(10**200)*(10**200)", "Result too large"),
        ("1e400", "Number too large"),
        ("__import__('os')", "Unknown function '__import__'"),
        ("().__class__", "attribute access"),
        ("(lambda: 1)()", "lambda"),
        ("[x for x in range(10)]", "comprehensions"),
        ("'a'*10", "strings"),
        ("open('x')", "Unknown function 'open'"),
        ("1/0", "Division by zero."),
        ("5 % 0", "Division by zero."),
        ("0**-1", "Division by zero."),
        ("", "Empty expression."),
        ("   ", "Empty expression."),
        ("= ?", "Empty expression."),
        ("1 if 1 else 2", "conditional expressions"),
        ("1<2", "comparisons"),
        ("1 and 2", "boolean operators"),
        ("round(2.5, ndigits=1)", "keyword arguments"),
        ("max(*[1, 2])", "starred"),
        ("x + 1", "Unknown name 'x'"),
        ("sqrt", "must be called"),
        ("2(3)", "write * to multiply"),
        ("1 << 2", "'<<' operator"),
        ("~1", "'~' operator"),
        ("1j", "complex numbers"),
        ("True + 1", "booleans"),
        ("(1, 2)", "tuples"),
        ("{1: 2}", "dicts"),
        ("[1][0]", "indexing"),
        ("sqrt(-1)", "Math domain error"),
        ("log(0)", "Math domain error"),
        ("exp(1000)", "Result too large"),
        ("(-8)**(1/3)", "not a real number"),
        ("sqrt(1, 2)", "sqrt() takes 1 argument, got 2"),
        ("min()", "at least 1 argument"),
        ("2 +", "Could not parse expression"),
        ("(1 + 2", "Could not parse expression"),
    ],
)
def test_refusals(expression: str, message: str) -> None:
    with pytest.raises(CalculatorError) as excinfo:
        evaluate(expression)
    assert message in str(excinfo.value)


def test_unknown_function_lists_allowed_and_suggests() -> None:
    with pytest.raises(CalculatorError) as excinfo:
        evaluate("sqr(4)")
    text = str(excinfo.value)
    assert "Did you mean sqrt?" in text
    assert "Allowed: abs, ceil, exp, floor, log, log10, max, min, round, sqrt." in text


def test_huge_input_is_refused_before_parsing() -> None:
    with pytest.raises(CalculatorError) as excinfo:
        evaluate("1" * 10_000_000)
    assert str(excinfo.value) == "Expression too long: 10000000 characters (limit 1000)."
    evaluate("1" * 10 + " " * (MAX_EXPRESSION_CHARS - 10))  # at the limit is fine


@pytest.mark.parametrize(
    "expression",
    [
        "(" * 500 + "1" + ")" * 500,
        "(" * 300 + "1" + ")" * 300,
        "-" * 900 + "1",
        "2**" * 200 + "2",
        "abs(" * 150 + "1" + ")" * 150,
    ],
)
def test_deep_nesting_is_refused(expression: str) -> None:
    with pytest.raises(CalculatorError) as excinfo:
        evaluate(expression)
    text = str(excinfo.value)
    assert "nested" in text or "too long" in text


def test_too_many_parts_is_refused() -> None:
    with pytest.raises(CalculatorError, match="more than 500 parts"):
        evaluate("+".join(["1"] * 400))


def test_non_string_is_refused() -> None:
    with pytest.raises(CalculatorError, match="Expected the expression as a string, got int"):
        evaluate(42)  # type: ignore[arg-type]


def test_calculator_error_is_value_error() -> None:
    assert issubclass(CalculatorError, ValueError)
    with pytest.raises(ValueError):
        calculator("1/0")


# --------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------


def _evaluates_or_refuses(expression: str) -> None:
    try:
        result = evaluate(expression)
    except CalculatorError as exc:
        assert str(exc)
    else:
        assert type(result) in (int, float)
        assert isinstance(format_number(result), str)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_evaluates_or_refuses(expression: str) -> None:
    _evaluates_or_refuses(expression)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789+-*/^%().,  e", max_size=60))
def test_arithmetic_text_evaluates_or_refuses(expression: str) -> None:
    _evaluates_or_refuses(expression)
