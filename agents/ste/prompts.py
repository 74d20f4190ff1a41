"""The prompts of STE's exploration and how their replies are read.

Three prompts per trial, after Wang et al. (2024) and their ``prompt_explore.txt``:

1. **Imagine** (:func:`imagine_messages`): the API's documentation, the long-term memory of
   every earlier trial on this API (one line each, ``"query | solved yes"``) and, after the
   first trial of an episode, the short-term memory of the episode's trials so far (query,
   final answer, verdict), asking for a new, natural, specific user query — going deeper on
   the same family within an episode, away from explored ground across episodes.
2. **Try**: the query in the Explore env (``toolenv/Explore-v0``), whose system prompt is
   :meth:`toolenv.protocols.react.ReactProtocol.instructions` over the API — the very prompt
   fine-tuning data and evaluation use. Nothing here: the env builds it.
3. **Reflect** (:data:`REFLECTION_PROMPT`): appended to the attempt's conversation; the
   reply is read by :func:`parse_reflection`.

**Guided mode** (opt-in, for small explorers that do not write ReAct zero-shot): the replies of
the try step are prefilled with the ReAct scaffolding, so the model writes only what carries
information — the argument values after :func:`guided_call_prefill` (``...Action Input: {`` and,
one at a time, each required parameter's name, :func:`guided_parameters`), the answer after
:data:`GUIDED_ANSWER`. An API whose required parameters are not all scalars gets the ``{``
alone and writes the whole object, cut where it closes (:func:`close_json`). The query is
imagined from a short prompt with one demonstration (:func:`guided_imagine_messages`) that
shows an example call built from the schema (:func:`example_arguments`) and the same
memories. Reflecting is unchanged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "GUIDED_ANSWER",
    "GUIDED_DEMO_QUERY",
    "IMAGINE_SYSTEM",
    "QUERY_STOP",
    "REFLECTION_PROMPT",
    "clean_query",
    "close_json",
    "example_arguments",
    "guided_call_prefill",
    "guided_imagine_messages",
    "guided_parameters",
    "imagine_messages",
    "ltm_line",
    "parse_reflection",
]

IMAGINE_SYSTEM = "You are a helpful assistant."

#: Stop strings for imagining a query: the model starts solving it instead.
QUERY_STOP: tuple[str, ...] = ("Thought:", "\nAction:", "Final Answer:")

#: Guided mode: the prefix of a final-answer reply; the model writes the answer after it.
GUIDED_ANSWER = "Thought: I now know the final answer.\nFinal Answer:"

REFLECTION_PROMPT = 'Do you think you successfully fulfilled this query in the end? Respond with "Yes" or "No".'

_INTRO = (
    "Your task is to answer users' queries as best you can. You have access to the following API, "
    "which you can call to help with your response:\n\n{doc}\n\n"
    "Now you have the chance to explore the API. You do this by 1) synthesizing a natural user query "
    "that calling the API could help with, and 2) trying to respond to that query with the help of the API."
)
_FIRST = " Here, you can focus on queries that only require calling the API once."
_LTM_PRE = "Below are queries you have already explored and whether you successfully solved them with the API's help:"
_LTM_POST = (
    "Based on these, try to explore queries that can help you understand the API further; avoid "
    "synthesizing queries that are too close to the existing ones."
)
_STM_PRE = "In this session you have already tried these queries:"
_STM_POST = (
    "Now you know a bit more about the API. Synthesize another user query that explores the API a bit "
    "further and consolidates your understanding of it, going deeper on the same kind of query based on "
    "what you discovered in this session."
)
_ASK = (
    "Make the query natural: do not mention the API's name or its documentation, since the user does not "
    "know which APIs you have. Make it as specific as possible. Input just the user query alone; do NOT "
    "solve it now.\n\nUser Query:"
)
_STM_ANSWER_CHARS = 400


def ltm_line(query: str, reflection: str | None) -> str:
    """One long-term-memory line; a trial without a verdict counts as not solved.

    >>> ltm_line("Where is Oslo?", "yes")
    'Where is Oslo? | solved yes'
    >>> ltm_line("Where is Oslo?", None)
    'Where is Oslo? | solved no'
    """
    return f"{' '.join(query.split())} | solved {'yes' if reflection == 'yes' else 'no'}"


def _stm_block(stm: Sequence[Mapping[str, Any]]) -> str:
    lines = [_STM_PRE]
    for k, item in enumerate(stm, 1):
        answer = item.get("final_answer")
        answer = "(none)" if answer is None else " ".join(str(answer).split())
        if len(answer) > _STM_ANSWER_CHARS:
            answer = answer[:_STM_ANSWER_CHARS] + " ..."
        verdict = item.get("reflection")
        lines += [
            f"Query {k}: {item.get('query', '')}",
            f"Final answer: {answer}",
            f"Solved: {verdict if verdict in ('yes', 'no') else 'unsure'}",
        ]
    return "\n".join(lines)


def imagine_messages(doc: str, ltm: Sequence[str], stm: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """The conversation that asks the explorer for a new query.

    Args:
        doc: The API's documentation (:meth:`toolenv.tools.pool.Api.doc_text`).
        ltm: Long-term memory lines (:func:`ltm_line`) of every earlier trial on the API.
        stm: The episode's earlier trials: ``{"query", "final_answer", "reflection"}`` each.

    Example:
        >>> m = imagine_messages("API: f", ["q1 | solved yes"], [])
        >>> [x["role"] for x in m], m[1]["content"].endswith("User Query:")
        (['system', 'user'], True)
        >>> "q1 | solved yes" in m[1]["content"]
        True
    """
    parts = [_INTRO.format(doc=doc) + ("" if stm else _FIRST)]
    if ltm:
        parts.append(_LTM_PRE + "\n" + "\n".join(ltm) + "\n\n" + _LTM_POST)
    if stm:
        parts.append(_stm_block(stm) + "\n\n" + _STM_POST)
    parts.append(_ASK)
    return [{"role": "system", "content": IMAGINE_SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


_LABEL = re.compile(r"^\s*(?:\*\*)?\s*(?:(?:new|synthesi[sz]ed|another|user)\s+)*query(?:\s*\d+)?\s*(?:\*\*)?\s*:\s*(?:\*\*)?",
                    re.IGNORECASE)
#: A lead-in on the query's own line: "A user could ask:", "Here is a question:", "Ask:".
_LEAD_IN = re.compile(r"^[^\"\n:?]{0,60}\b(?:ask|asks|question|query)\b[^\"\n:?]{0,12}:\s*(?=\S)", re.IGNORECASE)
_QUOTES = "\"'`*“”‘’ "
_MAX_QUERY_CHARS = 1000


def clean_query(text: str) -> str:
    """The query in an imagination reply: labels, quotes and afterthoughts removed, one line.

    The first paragraph is kept (a lead-in ending with a colon is skipped, on its own line or
    before the query: ``A user could ask: "..."``); ``""`` when the reply holds no query.

    >>> clean_query('User Query: "What is the weather in Lima tomorrow?"\\n\\nThis tests the API.')
    'What is the weather in Lima tomorrow?'
    >>> clean_query("Sure, here is one:\\n\\n**Query:** How far is Oslo from Rome?")
    'How far is Oslo from Rome?'
    >>> clean_query('A user could ask: "Who manages the Sales department?')
    'Who manages the Sales department?'
    >>> clean_query("   ")
    ''
    """
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    while len(paragraphs) > 1 and paragraphs[0].rstrip(_QUOTES).endswith(":"):
        paragraphs = paragraphs[1:]
    query = paragraphs[0] if paragraphs else ""
    previous = None
    while previous != query:
        previous = query
        query = _LABEL.sub("", query, count=1).strip().strip(_QUOTES).strip()
        query = _LEAD_IN.sub("", query, count=1).strip().strip(_QUOTES).strip()
    return " ".join(query.split())[:_MAX_QUERY_CHARS]


_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def parse_reflection(text: str) -> str | None:
    """``"yes"``, ``"no"`` or ``None``: the first standalone Yes or No of a reflection reply.

    >>> parse_reflection("Yes, the API returned the city.")
    'yes'
    >>> parse_reflection("**No.** I never got a result; yes, I tried.")
    'no'
    >>> parse_reflection("y"), parse_reflection("Nope, unclear") is None
    ('yes', True)
    """
    stripped = text.strip().strip(_QUOTES + ".!").lower()
    if stripped in ("y", "n"):
        return "yes" if stripped == "y" else "no"
    m = _YES_NO.search(text)
    return m.group(1).lower() if m else None


# ---------------------------------------------------------------------------------- guided mode
def guided_call_prefill(api: str) -> str:
    """Guided mode: the prefix of a call reply; the model continues with the JSON arguments.

    >>> print(guided_call_prefill("get_city"))
    Thought: I should call get_city.
    Action: get_city
    Action Input: {
    """
    return f"Thought: I should call {api}.\nAction: {api}\nAction Input: {{"


def close_json(continuation: str) -> str:
    """An argument continuation (after the prefill's ``{``) cut where that JSON object closes.

    A small model runs on after the arguments (another ``Thought:``, a made-up observation);
    what follows the object is dropped. A continuation whose object never closes or is not
    JSON is returned whole: the env reports the malformed action as it would any other.

    >>> close_json('"city": "Oslo"}\\nThought: now {x}')
    '"city": "Oslo"}'
    >>> close_json("}"), close_json('"city": "Os')
    ('}', '"city": "Os')
    """
    try:
        _, end = json.JSONDecoder().raw_decode("{" + continuation)
    except (ValueError, RecursionError):
        return continuation
    return continuation[: end - 1]


#: JSON-schema types whose values guided mode has the model write one at a time.
_SCALARS = ("string", "integer", "number", "boolean")
_PLACEHOLDER = {"string": "<string>", "integer": 1, "number": 1.5, "boolean": True, "array": [], "object": {}}
_EXAMPLE_VALUE = re.compile(r"""e\.g\.,?\s*(?:"([^"]+)"|'([^']+)'|(-?\d+(?:\.\d+)?)\b)""")


def _required(doc: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    params = doc.get("parameters") or {}
    props = params.get("properties") or {}
    return [(name, props.get(name) or {}) for name in params.get("required") or [] if isinstance(name, str)]


def guided_parameters(doc: Mapping[str, Any]) -> list[tuple[str, str]] | None:
    """The required parameters ``(name, type)`` of an API whose required parameters are all scalars, else ``None``.

    >>> guided_parameters({"parameters": {"properties": {"city": {"type": "string"}, "n": {"type": "integer"}},
    ...                                   "required": ["city"]}})
    [('city', 'string')]
    >>> guided_parameters({"parameters": {"properties": {"xs": {"type": "array"}}, "required": ["xs"]}}) is None
    True
    """
    out = []
    for name, schema in _required(doc):
        kind = schema.get("type")
        if kind not in _SCALARS:
            return None
        out.append((name, str(kind)))
    return out


def example_arguments(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Example arguments of an API: its required parameters with the value its description gives
    after "e.g." (``e.g. "Paris"``), else a placeholder of its type.

    >>> example_arguments({"parameters": {"properties": {"city": {"type": "string", "description": 'e.g. "Paris"'},
    ...     "days": {"type": "integer"}}, "required": ["city", "days"]}})
    {'city': 'Paris', 'days': 1}
    """
    out: dict[str, Any] = {}
    for name, schema in _required(doc):
        kind = schema.get("type")
        found = _EXAMPLE_VALUE.search(str(schema.get("description", "")))
        if found and (found.group(1) or found.group(2)) and kind in (None, "string"):
            out[name] = found.group(1) or found.group(2)
        elif found and found.group(3) and kind in ("integer", "number"):
            out[name] = json.loads(found.group(3))
        else:
            out[name] = _PLACEHOLDER.get(str(kind), "<string>")
    return out


_GUIDED_ASK = (
    "Write one question that a user could ask and that this API helps to answer. Use concrete values. "
    "Write only the question."
)
_GUIDED_LTM = "Questions asked before (ask a different one):"
_GUIDED_STM = "Questions asked in this session (ask another one of the same kind):"
#: The demonstration of guided imagining: an API of no pool, and a question a user could ask of it.
_DEMO_DOC = (
    "API: get_book\nDescription: Look up a book: its author, year of publication and number of pages.\n"
    "Parameters:\n- title (string, required): The book's title, e.g. \"Dune\".\n"
    "Returns: title, author, year and pages.\nExample call: get_book {\"title\": \"Dune\"}"
)
#: The demonstration's question; a small explorer sometimes copies it, and such a query is dropped.
GUIDED_DEMO_QUERY = "Who wrote Dune, and how many pages does it have?"


def guided_imagine_messages(
    api: str, doc_text: str, doc: Mapping[str, Any], ltm: Sequence[str], stm: Sequence[Mapping[str, Any]]
) -> list[dict[str, str]]:
    """Guided mode's conversation asking for a new query: short and with one demonstration, for a small explorer.

    A first turn asks the question of a made-up API (``get_book``) and answers it with a user's
    question; the second shows the API's documentation, an example call
    (:func:`example_arguments`), the long-term memory lines and the session's earlier queries,
    and asks again.

    Example:
        >>> m = guided_imagine_messages("f", "API: f", {"parameters": {"properties": {"x": {"type": "string"}},
        ...     "required": ["x"]}}, ["q1 | solved no"], [{"query": "q2"}])
        >>> [x["role"] for x in m]
        ['system', 'user', 'assistant', 'user']
        >>> print(m[-1]["content"])
        API: f
        Example call: f {"x": "<string>"}
        <BLANKLINE>
        Questions asked before (ask a different one):
        q1 | solved no
        <BLANKLINE>
        Questions asked in this session (ask another one of the same kind):
        q2
        <BLANKLINE>
        Write one question that a user could ask and that this API helps to answer. Use concrete values. Write only the question.
    """
    parts = [f"{doc_text}\nExample call: {api} {json.dumps(example_arguments(doc), ensure_ascii=False)}"]
    if ltm:
        parts.append(_GUIDED_LTM + "\n" + "\n".join(ltm))
    if stm:
        parts.append(_GUIDED_STM + "\n" + "\n".join(" ".join(str(x.get("query", "")).split()) for x in stm))
    parts.append(_GUIDED_ASK)
    return [{"role": "system", "content": IMAGINE_SYSTEM}, {"role": "user", "content": f"{_DEMO_DOC}\n\n{_GUIDED_ASK}"},
            {"role": "assistant", "content": GUIDED_DEMO_QUERY}, {"role": "user", "content": "\n\n".join(parts)}]
