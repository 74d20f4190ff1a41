"""JSON function calls in ``<tool_call>`` tags, as modern chat templates (Qwen, Hermes) emit them."""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

from toolenv.protocols.base import Action, Protocol
from toolenv.types import ToolCall

if TYPE_CHECKING:
    from toolenv.tools.base import Tool

__all__ = ["JsonProtocol"]

_TAG = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.DOTALL)
_THINK = re.compile(r"<think>(.*?)(?:</think>|\Z)", re.DOTALL)


def _call_from_json(body: str) -> ToolCall | str:
    """A :class:`ToolCall` from one JSON call object, or an error message."""
    try:
        obj: Any = json.loads(body)
    except ValueError as e:
        return f"The tool call is not valid JSON ({e})."
    except RecursionError:
        return "The tool call is not valid JSON (nested too deeply)."
    if not isinstance(obj, dict):
        return 'The tool call must be a JSON object: {"name": ..., "arguments": {...}}.'
    if "function" in obj and isinstance(obj["function"], dict):  # OpenAI's nesting
        obj = obj["function"]
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        return 'The tool call has no "name" string.'
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):  # some models double-encode the arguments
        try:
            args = json.loads(args) if args.strip() else {}
        except (ValueError, RecursionError) as e:
            return f'The "arguments" of {name} are not valid JSON ({e}).'
    if not isinstance(args, dict):
        return f'The "arguments" of {name} must be a JSON object.'
    return ToolCall(name.strip(), args, raw=body.strip())


class JsonProtocol(Protocol):
    """``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``; several tags make parallel calls.

    A response without a tag is a final answer (text inside ``<think>`` is kept as the thought
    and left out of the answer). A bare JSON object with ``name`` and ``arguments`` also counts
    as a call, since small models often forget the tags. A missing closing tag is accepted:
    generation may stop on it.

    Example:
        >>> p = JsonProtocol()
        >>> a = p.parse('<tool_call>{"name": "calculator", "arguments": {"expression": "2+3"}}</tool_call>')
        >>> a.kind, a.calls[0].name, dict(a.calls[0].arguments)
        ('call', 'calculator', {'expression': '2+3'})
        >>> p.parse("<think>easy</think>The answer is 5.").answer
        'The answer is 5.'
    """

    name = "json"

    def parse(self, text: str, tool_names: Collection[str] = ()) -> Action:
        thought_m = _THINK.search(text)
        thought = thought_m.group(1).strip() if thought_m else None
        visible = _THINK.sub("", text)
        bodies = [m.group(1) for m in _TAG.finditer(visible)]
        if not bodies:
            stripped = visible.strip()
            if stripped.startswith("{") and stripped.endswith("}") and '"name"' in stripped:
                bodies = [stripped]
            elif not stripped:
                return Action.invalid("Empty response: write a <tool_call> or an answer.")
            else:
                return Action("answer", answer=stripped, thought=thought)
        calls: list[ToolCall] = []
        for body in bodies:
            call = _call_from_json(body.strip())
            if isinstance(call, str):
                return Action.invalid(call)
            calls.append(call)
        return Action("call", calls=tuple(calls), thought=thought)

    def format_call(self, call: ToolCall) -> str:
        args = dict(call.arguments)
        if call.positional is not None:
            args = {"input": call.positional}
        payload = json.dumps({"name": call.name, "arguments": args}, ensure_ascii=False)
        return f"<tool_call>\n{payload}\n</tool_call>"

    def instructions(self, tools: Sequence[Tool]) -> str:
        schemas = "\n".join(json.dumps(t.schema, ensure_ascii=False) for t in tools)
        return (
            "You can call these tools; their JSON schemas are inside <tools></tools>:\n"
            f"<tools>\n{schemas}\n</tools>\n"
            "To call a tool, reply with\n"
            '<tool_call>\n{"name": <tool name>, "arguments": <JSON object>}\n</tool_call>\n'
            "You will get the result back. When you know the answer, reply with the answer alone."
        )
