"""TRICE style: the whole response is either one call such as ``calculator((12/60)*50)`` or an answer."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from toolenv.protocols.base import Action, Protocol, tool_list
from toolenv.types import ToolCall

if TYPE_CHECKING:
    from toolenv.tools.base import Tool

__all__ = ["TriceProtocol"]

_WHOLE_CALL = re.compile(r"\s*([A-Za-z_]\w*)\s*\(")
_ANY_CALL = re.compile(r"(?<![\w.])([A-Za-z_]\w*)\s*\(")


def _balanced(text: str, open_at: int) -> int:
    """Index of the parenthesis that closes the one at ``open_at``, or -1."""
    depth = 0
    for i in range(open_at, len(text)):
        c = text[i]
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
    return -1


class TriceProtocol(Protocol):
    """TRICE's API syntax (Qiao et al., NAACL 2024): ``tool(input)`` or a plain answer.

    A response whose whole text is ``name(...)`` is a call; so is a response that contains a
    call to one of the env's tools (``"I will use calculator(2+3)"``), the first one counting,
    as TRICE's evaluation finds it with a regular expression. Anything else is a final answer.
    A call whose parentheses do not close is invalid, and so is a whole-text call to an
    unknown tool name (the env adds a "did you mean").

    Example:
        >>> p = TriceProtocol()
        >>> p.parse("calculator((12/60)*50)", ["calculator"]).calls[0].positional
        '(12/60)*50'
        >>> p.parse("She earned $10.", ["calculator"]).kind
        'answer'
        >>> p.parse("calculator((12/60", ["calculator"]).error
        "The call to calculator is missing a closing parenthesis ')'."
    """

    name = "trice"

    def parse(self, text: str, tool_names: Collection[str] = ()) -> Action:
        stripped = text.strip()
        if not stripped:
            return Action.invalid("Empty response: write a tool call such as calculator(2+3) or an answer.")
        whole = _WHOLE_CALL.match(stripped)
        if whole and stripped.endswith(")"):
            close = _balanced(stripped, whole.end() - 1)
            if close == len(stripped) - 1:
                return self._call(whole.group(1), stripped[whole.end() : close], stripped)
        for m in _ANY_CALL.finditer(stripped):
            name = m.group(1)
            if name not in tool_names:
                continue
            close = _balanced(stripped, m.end() - 1)
            if close < 0:
                return Action.invalid(f"The call to {name} is missing a closing parenthesis ')'.")
            return self._call(name, stripped[m.end() : close], stripped[m.start() : close + 1])
        return Action("answer", answer=stripped)

    @staticmethod
    def _call(name: str, body: str, raw: str) -> Action:
        return Action("call", calls=(ToolCall(name, positional=body.strip(), raw=raw),))

    def format_call(self, call: ToolCall) -> str:
        if call.positional is not None:
            return f"{call.name}({call.positional})"
        return f"{call.name}({', '.join(str(v) for v in call.arguments.values())})"

    def instructions(self, tools: Sequence[Tool]) -> str:
        example = f"{tools[0].name}(...)" if tools else "tool(...)"
        return (
            "You can use these tools:\n"
            f"{tool_list(tools)}\n"
            f"To use a tool, reply with only the call, for example {example}. "
            "You will get the result back. When you know the answer, reply with the answer alone."
        )
