"""Pairwise preference and win rate (StepTool's / ToolEval's third metric).

A solution is a dict ``{"query", "steps", "answer", "passed"}`` (``steps`` as
:func:`rewards.steps.format_steps` reads them). A :data:`Preference` says how much solution ``a``
is preferred over ``b`` on the same query: 1 (a), 0 (b) or 0.5 (a tie). The win rate of a system
against a reference is the mean preference over the queries both answered, ties counted half,
as ToolEval counts them.

:func:`rule_preference` prefers the solution that passed (the task's judge said Solved) and calls
everything else a tie. :func:`llm_preference` asks a language model, through any
``generate(prompt) -> reply``, which solution better solves the query, in both orders (ToolEval
shuffles the order; asking both ways removes position bias), and averages the two verdicts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rewards.steps import format_steps

__all__ = ["PAIRWISE_PROMPT", "Preference", "llm_preference", "parse_preference", "rule_preference", "win_rate"]

Preference = Callable[[Mapping[str, Any], Mapping[str, Any]], float]

#: The comparison asked of an LLM: ToolEval's criteria (does it solve the query, then how well), in our words.
PAIRWISE_PROMPT = """You compare two attempts at the same user query, each made of tool calls and a final answer.
Prefer the attempt that solves the query; if both or neither do, prefer the one whose answer is more
accurate and complete and whose tool use is more sensible. Answer with one word: A, B or Tie.

Query: {query}

Attempt A:
{steps_a}
Final answer: {answer_a}

Attempt B:
{steps_b}
Final answer: {answer_b}

Which attempt is better (A, B or Tie)?"""


def rule_preference(a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
    """1 when only ``a`` passed, 0 when only ``b`` did, 0.5 otherwise.

    >>> rule_preference({"passed": True}, {"passed": False}), rule_preference({"passed": False}, {"passed": False})
    (1.0, 0.5)
    """
    pa, pb = bool(a.get("passed")), bool(b.get("passed"))
    return 0.5 if pa == pb else (1.0 if pa else 0.0)


def parse_preference(reply: str) -> float:
    """An LLM's verdict: ``A`` -> 1, ``B`` -> 0, ``Tie`` (or anything unclear) -> 0.5.

    >>> parse_preference("B"), parse_preference("Attempt A is better."), parse_preference("Tie."), parse_preference("?")
    (0.0, 1.0, 0.5, 0.5)
    """
    import re

    words = re.findall(r"\b(A|B|tie)\b", reply, flags=re.IGNORECASE)
    if not words:
        return 0.5
    first = words[0].lower()
    return 1.0 if first == "a" else 0.0 if first == "b" else 0.5


def llm_preference(generate: Callable[[str], str], *, prompt: str = PAIRWISE_PROMPT) -> Preference:
    """A :data:`Preference` from a language model, asked in both orders and averaged.

    >>> prefer = llm_preference(lambda p: "A")  # a judge that always picks the first: position bias cancels
    >>> prefer({"query": "q", "steps": [], "answer": "1"}, {"query": "q", "steps": [], "answer": "2"})
    0.5
    """

    def ask(a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
        text = (prompt.replace("{query}", str(a.get("query", "")))
                .replace("{steps_a}", format_steps(a.get("steps") or [])).replace("{answer_a}", str(a.get("answer") or "(none)"))
                .replace("{steps_b}", format_steps(b.get("steps") or [])).replace("{answer_b}", str(b.get("answer") or "(none)")))
        return parse_preference(generate(text))

    def prefer(a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
        return (ask(a, b) + 1.0 - ask(b, a)) / 2

    return prefer


def win_rate(pairs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]], preference: Preference = rule_preference) -> float:
    """Mean preference of the first solution of each pair over the second (ties half); 0.5 for no pairs.

    >>> win_rate([({"passed": True}, {"passed": False}), ({"passed": True}, {"passed": True})])
    0.75
    """
    if not pairs:
        return 0.5
    return sum(preference(a, b) for a, b in pairs) / len(pairs)
