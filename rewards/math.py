"""Math rewards: numeric match, tool-use detection and TRICE's execution-feedback score.

Every function takes a batch: ``completions`` (one string per sample) plus keyword columns of
the same length, and returns one float per sample, as TRL's reward functions do. Envs take
these functions as arguments, so offline data is scored by the very same code.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

__all__ = [
    "TRICE_SCORES",
    "extract_number",
    "numeric_match",
    "round2_equal",
    "trice_score",
    "uses_tool",
]

_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")
#: TRICE's score ladder (``generate_data/score.py``): best first.
TRICE_SCORES = (20.0, 15.0, 10.0, 5.0, 0.0)


def extract_number(text: str | float | int | None) -> float | None:
    """The number a response states: the whole text if it is a number, else its last number.

    Thousands separators and currency signs are ignored; ``None`` when there is no number.

    >>> extract_number("She earned $1,234.50 in May and 12 in June.")
    12.0
    >>> extract_number("1,234.5"), extract_number("-0.25"), extract_number("no idea")
    (1234.5, -0.25, None)
    """
    if text is None:
        return None
    if isinstance(text, (int, float)):
        return float(text) if math.isfinite(text) else None
    s = text.strip()
    try:  # fast path: the answer is just a number
        value = float(s)
        return value if math.isfinite(value) else None
    except ValueError:
        pass
    last = None
    for last in _NUMBER.finditer(s):  # noqa: B007 - keep the last match
        pass
    if last is None:
        return None
    value = float(last.group(0).replace(",", ""))
    return value if math.isfinite(value) else None


def round2_equal(pred: float | None, gold: float | None) -> bool:
    """TRICE's check: equal after rounding both to 2 decimals.

    >>> round2_equal(0.333333, 0.33), round2_equal(10.0, 10.01)
    (True, False)
    """
    if pred is None or gold is None:
        return False
    return round(pred, 2) == round(gold, 2)


def _batch(completions: Any) -> Sequence[str]:
    """The completions column, refusing a lone string (which would be scored character by character)."""
    if isinstance(completions, (str, bytes)) or not isinstance(completions, Sequence):
        raise TypeError(
            f"Expected completions to be a batch (a list of strings, one per sample), got {type(completions).__name__} "
            f"{completions!r:.60}; wrap a single completion in a list: [completion]."
        )
    return completions


def _column(values: Any, n: int, name: str) -> list[Any]:
    if values is None:
        return [None] * n
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        return [values] * n
    if len(values) != n:
        raise ValueError(f"Expected {name} to have one entry per completion ({n}), got {len(values)}.")
    return list(values)


def _prediction(completion: str, tool_value: Any) -> float | None:
    number = extract_number(completion)
    return number if number is not None else extract_number(tool_value)


def numeric_match(
    completions: Sequence[str],
    *,
    answer: Sequence[str] | str,
    tool_value: Sequence[Any] | None = None,
    **kwargs: Any,
) -> list[float]:
    """1.0 where the predicted number equals the gold answer after rounding to 2 decimals.

    The prediction is the last number in the completion or, when it states none, the value of
    the last executed tool call (``tool_value``).

    >>> numeric_match(["She earned $10.", "It is 9.999", "calculator(3+7)"], answer=["10"] * 3,
    ...               tool_value=[None, None, "10"])
    [1.0, 1.0, 0.0]
    >>> numeric_match(["I do not know"], answer=["4"], tool_value=["4"])
    [1.0]
    """
    n = len(_batch(completions))
    answers = _column(answer, n, "answer")
    values = _column(tool_value, n, "tool_value")
    return [
        1.0 if round2_equal(_prediction(c, v), extract_number(a)) else 0.0
        for c, a, v in zip(completions, answers, values)
    ]


def uses_tool(completions: Sequence[str], *, tool_names: Sequence[str] = ("calculator",), **kwargs: Any) -> list[float]:
    """1.0 where the completion contains a call ``name(`` of one of the tools (TRICE's detection).

    >>> uses_tool(["calculator(2+3)", "The answer is 5", "use calculator ( 1+1 )"])
    [1.0, 0.0, 1.0]
    """
    _batch(completions)
    patterns = [re.compile(rf"(?<![\w.]){re.escape(t)}\s*\(") for t in tool_names]
    return [1.0 if any(p.search(c) for p in patterns) else 0.0 for c in completions]


def trice_score(
    completions: Sequence[str],
    *,
    answer: Sequence[str] | str,
    tool_used: Sequence[bool] | None = None,
    gold_tool_used: bool = True,
    tool_value: Sequence[Any] | None = None,
    tool_names: Sequence[str] = ("calculator",),
    **kwargs: Any,
) -> list[float]:
    """TRICE's execution-feedback score for a group of candidate responses to ONE task.

    As in TRICE's ``score.py``: a correct answer whose tool use (used / not used) agrees with
    the gold solution scores 20; a correct answer with different tool use scores 15, and then
    the wrong answers start one rung lower. Wrong answers are ranked by their distance to the
    gold answer and take successive rungs of 15/10/5/0 (one wrong answer takes the first rung
    left; unparseable ones rank last; the ladder floors at 0). The gold response itself, put
    in the group, scores 20.

    Args:
        completions: The candidates' texts (all for the same task).
        answer: The gold answer (one string, or one per candidate).
        tool_used: Whether each candidate used a tool; detected with :func:`uses_tool` if omitted.
        gold_tool_used: Whether the gold solution uses a tool.
        tool_value: The executed tool value of each candidate. As in TRICE's evaluation, a
            candidate that executed a call is judged by that value; one without (``None``)
            by the last number of its text.
        tool_names: Tools to detect when ``tool_used`` is omitted.

    >>> trice_score(["calculator(6*7)", "42", "41", "30", "no"], answer="42",
    ...             tool_value=["42", None, None, None, None])
    [20.0, 15.0, 10.0, 5.0, 0.0]
    >>> trice_score(["calculator(6*7)", "40"], answer="42", tool_value=["42", None])
    [20.0, 15.0]
    """
    n = len(_batch(completions))
    answers = _column(answer, n, "answer")
    values = _column(tool_value, n, "tool_value")
    used = [bool(u) for u in tool_used] if tool_used is not None else [u > 0 for u in uses_tool(completions, tool_names=tool_names)]
    if len(used) != n:
        raise ValueError(f"Expected tool_used to have one entry per completion ({n}), got {len(used)}.")
    scores = [0.0] * n
    rung = 1
    wrong: list[tuple[float, int]] = []
    for i, (c, a, v) in enumerate(zip(completions, answers, values)):
        gold = extract_number(a)
        pred = extract_number(v) if v is not None else extract_number(c)
        if round2_equal(pred, gold):
            if used[i] != gold_tool_used:
                scores[i] = TRICE_SCORES[1]
                rung = 2
            else:
                scores[i] = TRICE_SCORES[0]
        else:
            distance = abs(pred - gold) if pred is not None and gold is not None else math.inf
            wrong.append((distance, i))
    wrong.sort(key=lambda t: t[0])  # stable: ties keep candidate order
    for _, i in wrong:
        scores[i] = TRICE_SCORES[min(rung, len(TRICE_SCORES) - 1)]
        rung += 1
    return scores
