"""Actions a trainer has already parsed: an OpenAI-style assistant message, or a list of calls.

Trainers that run a model's own tool-call parser (TRL, verifiers, SkyRL, vLLM's tool parsers) hold
calls as data, not text. :meth:`toolenv.core.ToolEnv.step` accepts them as they are:

- an assistant message ``{"role": "assistant", "content": str | None, "tool_calls": [...]}``, each
  tool call OpenAI's ``{"type": "function", "function": {"name": ..., "arguments": <JSON text or
  object>}}`` (the ``{"name", "arguments"}`` form inside ``tool_calls`` is read too). With tool
  calls the step runs them (``content`` is kept as the thought); without, ``content`` is the final
  answer;
- a list of calls ``[{"name": ..., "arguments": {...}}, ...]``.

The step then runs exactly as for the equivalent text: the same tools, rewards, terms and errors
(``tests/toolenv/test_structured_actions.py`` checks every protocol). A structured action that is
malformed (no name, arguments that are not a JSON object, an unknown key) is an invalid action with
a message naming the field, never an exception; the transcript records the action in the env's
protocol (:func:`render`), so a chat built from it reads like a text episode.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from toolenv.protocols.base import Action, Protocol
from toolenv.types import ToolCall

__all__ = ["is_structured", "parse_structured", "render"]

_MESSAGE_KEYS = frozenset({"role", "content", "tool_calls", "name", "reasoning_content", "refusal", "function_call", "audio", "annotations"})


def is_structured(action: Any) -> bool:
    """Whether ``action`` has a structured form's shape (a mapping, or a list of mappings).

    >>> is_structured({"role": "assistant", "content": "42"}), is_structured([{"name": "f"}]), is_structured("f(1)")
    (True, True, False)
    """
    if isinstance(action, Mapping):
        return True
    return isinstance(action, (list, tuple)) and all(isinstance(c, Mapping) for c in action)


def _call(raw: Any, where: str) -> ToolCall | str:
    """One call from ``{"name", "arguments"}`` or OpenAI's ``{"type": "function", "function": {...}}``; an error string if malformed."""
    if not isinstance(raw, Mapping):
        return f"{where} must be an object with 'name' and 'arguments', got {type(raw).__name__}"
    fn = raw.get("function") if "function" in raw else raw
    if not isinstance(fn, Mapping):
        return f"{where}.function must be an object with 'name' and 'arguments', got {type(fn).__name__}"
    name = fn.get("name")
    if not isinstance(name, str) or not name.strip():
        return f"{where} has no tool name (expected a non-empty string in 'name')"
    arguments = fn.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as e:
            return f"{where}.arguments of {name} is not valid JSON ({e.msg} at position {e.pos})"
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, Mapping):
        return f"{where}.arguments of {name} must be a JSON object, got {type(arguments).__name__}"
    return ToolCall(name.strip(), dict(arguments))


def parse_structured(action: Any) -> Action:
    """Read a structured action (see the module docstring); never raises.

    >>> parse_structured([{"name": "calculator", "arguments": {"expression": "6*7"}}]).calls[0].arguments
    {'expression': '6*7'}
    >>> msg = {"role": "assistant", "content": None, "tool_calls": [
    ...     {"id": "c1", "type": "function", "function": {"name": "get_city", "arguments": "{\\"city\\": \\"Oslo\\"}"}}]}
    >>> parse_structured(msg).calls[0]
    ToolCall(name='get_city', arguments={'city': 'Oslo'}, positional=None, raw='')
    >>> parse_structured({"role": "assistant", "content": "It is 42."}).answer
    'It is 42.'
    >>> parse_structured({"role": "user", "content": "hi"}).error
    "Expected an assistant message (role 'assistant'), got role 'user'."
    """
    if isinstance(action, Mapping):
        unknown = sorted(str(k) for k in action if k not in _MESSAGE_KEYS)
        if unknown:
            return Action.invalid(f"Unknown key(s) {unknown} in the assistant message: expected 'role', 'content' and 'tool_calls'.")
        role = action.get("role", "assistant")
        if role != "assistant":
            return Action.invalid(f"Expected an assistant message (role 'assistant'), got role {role!r}.")
        content = action.get("content")
        if content is not None and not isinstance(content, str):
            return Action.invalid(f"Expected the message's content to be text or null, got {type(content).__name__}.")
        tool_calls = action.get("tool_calls") or []
        if not isinstance(tool_calls, (list, tuple)):
            return Action.invalid(f"Expected tool_calls to be a list, got {type(tool_calls).__name__}.")
        if not tool_calls:
            if content is None or not content.strip():
                return Action.invalid("Empty action: the assistant message has neither content nor tool_calls.")
            return Action("answer", answer=content.strip())
        calls = [_call(c, f"tool_calls[{i}]") for i, c in enumerate(tool_calls)]
        errors = [c for c in calls if isinstance(c, str)]
        if errors:
            return Action.invalid(f"Invalid structured action: {errors[0]}.")
        return Action("call", calls=tuple(c for c in calls if isinstance(c, ToolCall)), thought=(content or "").strip() or None)
    if isinstance(action, (list, tuple)):
        if not action:
            return Action.invalid("Empty action: an empty list of calls.")
        calls = [_call(c, f"calls[{i}]") for i, c in enumerate(action)]
        errors = [c for c in calls if isinstance(c, str)]
        if errors:
            return Action.invalid(f"Invalid structured action: {errors[0]}.")
        return Action("call", calls=tuple(c for c in calls if isinstance(c, ToolCall)))
    return Action.invalid(f"Expected text, an assistant message or a list of calls, got {type(action).__name__}.")


def render(action: Action, protocol: Protocol, original: Any) -> str:
    """The text a model following ``protocol`` would have written for a parsed structured action."""
    if action.kind == "call":
        return "\n".join(protocol.format_call(c) for c in action.calls)
    if action.kind == "answer" and action.answer is not None:
        return protocol.format_answer(action.answer)
    try:
        return json.dumps(original, ensure_ascii=False, default=str)[:2000]
    except (TypeError, ValueError):  # pragma: no cover - json.dumps with default=str does not raise on plain data
        return repr(original)[:2000]
