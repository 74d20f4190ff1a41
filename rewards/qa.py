"""Question-answering rewards: TRICE's answer check, normalised exact match and token F1 against gold aliases.

Batch functions in the style of :mod:`rewards.math`: ``completions`` plus keyword columns of the
same length, one float per sample. ``aliases`` is a column of lists (every acceptable answer);
without it the single ``answer`` is the only alias.

TRICE's evaluation (``evaluate/evaluate.py``, ``qa_evaluate``) counts a prediction right when a
gold answer, lower-cased, occurs in it, the prediction cut to its first 20 words: that is
:func:`contains_match`. :func:`exact_match` and :func:`token_f1` are the SQuAD / open-domain QA
scores (answers normalised: lower case, no punctuation, no articles, single spaces).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any

__all__ = ["contains_match", "exact_match", "normalize_answer", "token_f1", "trice_text_score"]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, punctuation and articles removed, whitespace collapsed.

    >>> normalize_answer("The  Eiffel Tower!")
    'eiffel tower'
    """
    text = "".join(c for c in str(text).lower() if c not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _aliases(n: int, answer: Sequence[str] | str | None, aliases: Sequence[Sequence[str]] | None) -> list[list[str]]:
    if aliases is not None:
        if len(aliases) != n:
            raise ValueError(f"Expected one aliases list per completion ({n}), got {len(aliases)}.")
        return [list(a) if not isinstance(a, str) else [a] for a in aliases]
    if answer is None:
        raise ValueError("Expected answer= or aliases= with the gold answers.")
    if isinstance(answer, str):
        return [[answer]] * n
    if len(answer) != n:
        raise ValueError(f"Expected one answer per completion ({n}), got {len(answer)}.")
    return [[a] for a in answer]


def contains_match(completions: Sequence[str], *, answer: Sequence[str] | str | None = None,
                   aliases: Sequence[Sequence[str]] | None = None, max_words: int = 20, **kwargs: Any) -> list[float]:
    """1.0 where a gold alias, lower-cased, occurs in the prediction's first ``max_words`` words (TRICE's check).

    >>> contains_match(["It is Paris, France.", "London"], aliases=[["paris"], ["Paris", "City of Light"]])
    [1.0, 0.0]
    """
    golds = _aliases(len(completions), answer, aliases)
    out = []
    for c, g in zip(completions, golds):
        pred = " ".join(str(c).split()[:max_words]).lower()
        out.append(1.0 if any(a and a.lower() in pred for a in g) else 0.0)
    return out


def exact_match(completions: Sequence[str], *, answer: Sequence[str] | str | None = None,
                aliases: Sequence[Sequence[str]] | None = None, **kwargs: Any) -> list[float]:
    """1.0 where the normalised prediction equals a normalised alias.

    >>> exact_match(["The Beatles.", "beatles were great"], aliases=[["Beatles"], ["The Beatles"]])
    [1.0, 0.0]
    """
    golds = _aliases(len(completions), answer, aliases)
    return [1.0 if any(normalize_answer(c) == normalize_answer(a) for a in g) else 0.0 for c, g in zip(completions, golds)]


def _f1(pred: str, gold: str) -> float:
    p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
    common = sum((Counter(p) & Counter(g)).values())
    if not p or not g:
        return float(p == g)
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def token_f1(completions: Sequence[str], *, answer: Sequence[str] | str | None = None,
             aliases: Sequence[Sequence[str]] | None = None, **kwargs: Any) -> list[float]:
    """The best token-level F1 of the normalised prediction against any alias (SQuAD's F1).

    >>> [round(x, 3) for x in token_f1(["the Eiffel tower in Paris"], aliases=[["Eiffel Tower"]])]
    [0.667]
    """
    golds = _aliases(len(completions), answer, aliases)
    return [max((_f1(c, a) for a in g), default=0.0) for c, g in zip(completions, golds)]


def trice_text_score(completions: Sequence[str | None], *, aliases: Sequence[str], tool_used: Sequence[bool], gold_tool_used: bool,
                     **kwargs: Any) -> list[float]:
    """TRICE's execution-feedback ladder for its text tasks (QA, LAMA, MLQA), for a group of candidates to ONE task.

    As ``get_score`` in TRICE's ``generate_data/score.py`` for a task other than math: a candidate
    whose answer contains a gold answer (case-insensitive) scores 20, or 15 when its tool use
    differs from the gold solution's (and then the wrong answers start one rung lower); every
    wrong answer gets the same next rung (15, or 10) — text answers have no distance to rank by;
    a candidate with no answer (``None`` or empty) scores 0. Any of ``aliases`` counts as gold.

    >>> trice_text_score(["Paris", "It is paris.", "Lyon", None], aliases=["Paris"], tool_used=[True, False, True, True], gold_tool_used=True)
    [20.0, 15.0, 10.0, 0.0]
    >>> trice_text_score(["Lyon", "Nice"], aliases=["Paris"], tool_used=[True, True], gold_tool_used=True)
    [15.0, 15.0]
    """
    from rewards.math import TRICE_SCORES

    if len(tool_used) != len(completions):
        raise ValueError(f"Expected tool_used to have one entry per completion ({len(completions)}), got {len(tool_used)}.")
    scores = [0.0] * len(completions)
    rung = 1
    wrong = []
    for i, c in enumerate(completions):
        if not c:
            continue
        if any(a and a.lower() in str(c).lower() for a in aliases):
            if bool(tool_used[i]) != gold_tool_used:
                scores[i], rung = TRICE_SCORES[1], 2
            else:
                scores[i] = TRICE_SCORES[0]
        else:
            wrong.append(i)
    for i in wrong:
        scores[i] = TRICE_SCORES[rung]
    return scores
