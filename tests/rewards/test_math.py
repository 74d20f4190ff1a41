"""Math rewards: number extraction, TRICE's 2-decimal match, tool-use detection, TRICE's score ladder."""

from __future__ import annotations

import pytest

from rewards import extract_number, numeric_match, trice_score, uses_tool


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("72", 72.0),
        ("  -3.5 ", -3.5),
        ("The answer is 1,234,567.", 1234567.0),
        ("$0.75 each, so $3.", 3.0),
        ("costs .5 dollars", 0.5),
        ("no number here", None),
        ("", None),
        ("inf", None),
        (None, None),
        (12, 12.0),
    ],
)
def test_extract_number(text: object, expected: float | None) -> None:
    assert extract_number(text) == expected  # type: ignore[arg-type]


def test_numeric_match_rounds_to_two_decimals() -> None:
    got = numeric_match(["3.333", "3.34", "the total is 3.33 dollars", "none"], answer="3.3333333")
    assert got == [1.0, 0.0, 1.0, 0.0]


def test_numeric_match_falls_back_to_tool_value() -> None:
    assert numeric_match(["done", "done", "7"], answer=["5", "5", "5"], tool_value=["5", None, "5"]) == [1.0, 0.0, 0.0]


def test_numeric_match_checks_column_lengths() -> None:
    with pytest.raises(ValueError, match="one entry per completion"):
        numeric_match(["1", "2"], answer=["1"])


def test_uses_tool() -> None:
    assert uses_tool(["calculator(1)", "my.calculator(1)", "calculators(1)", "no"]) == [1.0, 0.0, 0.0, 0.0]
    assert uses_tool(["WikiSearch(x)"], tool_names=["WikiSearch"]) == [1.0]


def test_trice_score_follows_the_reference_ladder() -> None:
    # Everything correct with the gold tool use: all 20.
    assert trice_score(["calculator(2*3)"] * 3, answer="6", tool_value=["6"] * 3) == [20.0] * 3
    # A correct answer without the tool drops the wrong answers' rungs by one.
    got = trice_score(["6", "calculator(2*2)", "1"], answer="6", tool_value=[None, "4", None])
    assert got == [15.0, 10.0, 5.0]
    # Without it, wrong answers take 15/10/5 by distance to gold; unparseable ones rank last.
    got = trice_score(["9", "idk", "7", "calculator(2*3)"], answer="6", tool_value=[None, None, None, "6"])
    assert got == [10.0, 5.0, 15.0, 20.0]
    # The ladder floors at 0 with many wrong answers.
    assert trice_score(["1", "2", "3", "4", "5", "0"], answer="100")[-1] == 0.0


def test_trice_score_when_gold_uses_no_tool() -> None:
    assert trice_score(["6", "calculator(6)"], answer="6", tool_value=[None, "6"], gold_tool_used=False) == [20.0, 15.0]
