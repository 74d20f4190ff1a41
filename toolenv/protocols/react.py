"""ReAct style, as STE and ToolBench prompt it: ``Thought / Action / Action Input`` or ``Final Answer``."""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

from toolenv.protocols.base import Action, Protocol, tool_list
from toolenv.types import ToolCall

if TYPE_CHECKING:
    from toolenv.tools.base import Tool

__all__ = ["ReactProtocol", "json_between_braces"]

_FINAL = re.compile(r"Final\s*Answer\s*:", re.IGNORECASE)
_ACTION = re.compile(r"^[ \t]*Action\s*:[ \t]*(.*)$", re.IGNORECASE | re.MULTILINE)
_INPUT = re.compile(r"^[ \t]*Action\s*Input\s*:", re.IGNORECASE | re.MULTILINE)
_THOUGHT = re.compile(r"Thought\s*:\s*(.*?)(?=^[ \t]*Action\s*:|Final\s*Answer\s*:|\Z)", re.IGNORECASE | re.DOTALL | re.MULTILINE)
_OBSERVATION = re.compile(r"^[ \t]*Observation\s*:", re.IGNORECASE | re.MULTILINE)


def json_between_braces(text: str) -> Any:
    """Decode the JSON between the first ``{`` and the last ``}`` of ``text`` (STE's rule).

    Raises ``ValueError`` when there is no such span or it is not valid JSON.

    >>> json_between_braces('sure: {"expression": "2+3"} done')
    {'expression': '2+3'}
    """
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise ValueError("no JSON object between braces")
    try:
        return json.loads(text[start : end + 1])
    except RecursionError:  # hostile nesting: a malformed action, not a crash
        raise ValueError("JSON nested too deeply") from None


class ReactProtocol(Protocol):
    """ReAct / ToolBench / STE format.

    A call::

        Thought: I need to multiply.
        Action: calculator
        Action Input: {"expression": "12*7"}

    An answer: ``Final Answer: 84``. Whichever of ``Action:`` and ``Final Answer:`` comes first
    decides. The action input is the JSON between its first ``{`` and last ``}``; input that is
    not JSON is passed as one positional text input. Text after a hallucinated
    ``Observation:`` is ignored.

    Example:
        >>> p = ReactProtocol()
        >>> a = p.parse('Thought: easy\\nAction: calculator\\nAction Input: {"expression": "12*7"}')
        >>> a.kind, a.calls[0].name, dict(a.calls[0].arguments), a.thought
        ('call', 'calculator', {'expression': '12*7'}, 'easy')
        >>> p.parse("Thought: done\\nFinal Answer: 84").answer
        '84'
    """

    name = "react"
    stop = ("\nObservation:",)

    def parse(self, text: str, tool_names: Collection[str] = ()) -> Action:
        obs = _OBSERVATION.search(text)
        if obs:
            text = text[: obs.start()]
        thought_m = _THOUGHT.search(text)
        thought = thought_m.group(1).strip() if thought_m else None
        final = _FINAL.search(text)
        action = _ACTION.search(text)
        if final and (action is None or final.start() < action.start()):
            return Action("answer", answer=text[final.end() :].strip(), thought=thought)
        if action is None:
            return Action.invalid(
                "Could not find 'Action:' or 'Final Answer:'. Reply with\n"
                "Thought: ...\nAction: <tool name>\nAction Input: {...JSON arguments...}\n"
                "or\nFinal Answer: <answer>"
            )
        name = action.group(1).strip().strip("`'\"").strip()
        if not name:
            return Action.invalid("'Action:' names no tool.")
        rest = text[action.end() :]
        inp = _INPUT.search(rest)
        if inp is None:
            return Action("call", calls=(ToolCall(name, {}, raw=text[action.start() :].strip()),), thought=thought)
        raw_input = rest[inp.end() :].strip()
        raw = text[action.start() :].strip()
        if "{" in raw_input:
            try:
                args = json_between_braces(raw_input)
            except ValueError as e:
                return Action.invalid(f"Action Input is not valid JSON ({e}). Write the arguments as a JSON object.")
            if not isinstance(args, dict):
                return Action.invalid("Action Input must be a JSON object of arguments.")
            return Action("call", calls=(ToolCall(name, args, raw=raw),), thought=thought)
        positional = raw_input.strip().strip("`").strip()
        if len(positional) >= 2 and positional[0] == positional[-1] and positional[0] in "'\"":
            positional = positional[1:-1]
        return Action("call", calls=(ToolCall(name, positional=positional, raw=raw),), thought=thought)

    def format_call(self, call: ToolCall) -> str:
        args = dict(call.arguments) if call.positional is None else call.positional
        payload = json.dumps(args, ensure_ascii=False) if isinstance(args, dict) else args
        return f"Thought: I should use {call.name}.\nAction: {call.name}\nAction Input: {payload}"

    def format_answer(self, answer: str) -> str:
        return f"Thought: I now know the final answer.\nFinal Answer: {answer}"

    def format_observation(self, output: str) -> str:
        return f"Observation: {output}"

    def instructions(self, tools: Sequence[Tool]) -> str:
        return (
            "You can use these tools:\n"
            f"{tool_list(tools)}\n"
            "Use this format:\n"
            "Thought: what to do next\n"
            "Action: the tool name\n"
            'Action Input: the arguments as a JSON object, e.g. {"expression": "2+3"}\n'
            "You will get back 'Observation: <result>'. Repeat as needed, then finish with\n"
            "Thought: I now know the final answer.\n"
            "Final Answer: the answer"
        )
