"""Python-style call lists, as BFCL prompts ask for: ``[cd(folder='document'), ls()]``.

The text is read with :mod:`ast` only — never ``eval`` or ``exec``: a call is an ``ast.Call``
whose function is a name or a dotted name (``math.factorial``) and whose arguments are literal
values (strings, numbers, booleans, ``None``, and lists, tuples and dicts of them; ``-3``
included). Anything else inside a call list — attribute calls on expressions, lambdas, names,
nested calls, comprehensions, ``*args`` — makes the action invalid, with a message saying
which argument was wrong. Text that is not a call list is an answer.
"""

from __future__ import annotations

import ast
import functools
import json
import re
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from toolenv.protocols.base import Action, Protocol
from toolenv.types import ToolCall

if TYPE_CHECKING:
    from toolenv.tools.base import Tool

__all__ = ["PythonProtocol", "bfcl_system_prompt", "parse_python_calls"]

# A fenced block: ```python ... ``` (the language tag is optional; an unclosed fence runs to the end).
_FENCE = re.compile(r"```[ \t]*(?:python3?|py|tool_code)?[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)
# Text that starts like a call list: ``[name(`` or ``name(`` (no space before the parenthesis, so
# prose such as "Note (important): ..." stays an answer).
_CALL_START = re.compile(r"^\[?\s*[A-Za-z_][\w.]*\(")
_SNIPPET = 60

# BFCL's default system prompt (``bfcl_eval/constants/default_prompts.py``, format
# ``ret_fmt=python&tool_call_tag=False&func_doc_fmt=json&prompt_fmt=plaintext&style=classic``),
# reproduced character for character, missing space after the first sentence included.
_BFCL_PERSONA = "You are an expert in composing functions."
_BFCL_TASK = (
    "You are given a question and a set of possible functions. Based on the question, you will need to make "
    "one or more function/tool calls to achieve the purpose. If none of the functions can be used, point it out. "
    "If the given question lacks the parameters required by the function, also point it out."
)
_BFCL_FORMAT = (
    "You should only return the function calls in your response.\n\nIf you decide to invoke any of the "
    "function(s), you MUST put it in the format of [func_name1(params_name1=params_value1, "
    "params_name2=params_value2...), func_name2(params)].  You SHOULD NOT include any other text in the response."
)
_BFCL_MULTITURN = (
    "At each turn, you should try your best to complete the tasks requested by the user within the current turn. "
    "Continue to output functions to call until you have fulfilled the user's request to the best of your ability. "
    "Once you have no more functions to call, the system will consider the current turn complete and proceed to "
    "the next turn or task."
)


def bfcl_system_prompt(functions: Sequence[Mapping[str, Any]]) -> str:
    """BFCL's default system prompt for prompting models, listing ``functions`` as indented JSON.

    >>> bfcl_system_prompt([]).startswith("You are an expert in composing functions.You are given a question")
    True
    """
    docs = json.dumps(list(functions), indent=4)
    tools = f"Here is a list of functions in json format that you can invoke.\n{docs}\n"
    return f"{_BFCL_PERSONA}{_BFCL_TASK}\n\n{_BFCL_FORMAT}\n\n{_BFCL_MULTITURN}\n\n{tools}"


class _Rejected(Exception):
    """A call list with a part that is not allowed; the message is shown to the model."""


_LINE = re.compile(r".*?(?:\r\n|\n|\r|$)")


@functools.lru_cache(maxsize=16)
def _encoded_lines(source: str) -> tuple[bytes, ...]:
    r"""The source's lines as ``ast`` splits them (``\r\n``, ``\n``, ``\r``), UTF-8 encoded, computed once per text."""
    return tuple(m.encode("utf-8") for m in _LINE.findall(source))


def source_segment(source: str, node: ast.AST) -> str | None:
    r"""``ast.get_source_segment(source, node)`` without re-splitting the source for every node.

    ``ast.get_source_segment`` splits the text into lines on each call, so taking the text of
    every call of a long one-line call list is quadratic in its length; the lines here are split
    once per text (and cached), which keeps a parse linear.

    >>> src = "[f(a='é'), g(b=[1,\n 2])]"; tree = ast.parse(src, mode="eval")
    >>> [source_segment(src, n) for n in tree.body.elts] == [ast.get_source_segment(src, n) for n in tree.body.elts]
    True
    """
    try:
        lineno, end_lineno = node.lineno - 1, node.end_lineno - 1  # type: ignore[attr-defined,operator]
        col, end_col = node.col_offset, node.end_col_offset  # type: ignore[attr-defined]
    except AttributeError:
        return None
    if end_lineno is None or end_col is None:
        return None
    lines = _encoded_lines(source)
    if lineno == end_lineno:
        return lines[lineno][col:end_col].decode("utf-8")
    first = lines[lineno][col:].decode("utf-8")
    last = lines[end_lineno][:end_col].decode("utf-8")
    return first + "".join(line.decode("utf-8") for line in lines[lineno + 1 : end_lineno]) + last


def _snippet(source: str, node: ast.AST) -> str:
    try:
        text = source_segment(source, node) or type(node).__name__
    except Exception:
        text = type(node).__name__
    text = " ".join(text.split())
    return text if len(text) <= _SNIPPET else text[: _SNIPPET - 3] + "..."


def _dotted_name(node: ast.AST) -> str | None:
    """``a.b.c`` for a Name or a chain of attributes on a Name; None for anything else."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _check_value(value: Any) -> bool:
    """Whether a literal holds only JSON-like values (no sets, bytes, complex numbers or Ellipsis)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if v is None or isinstance(v, (str, bool, int, float)):
            continue
        if isinstance(v, (list, tuple)):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        else:
            return False
    return True


def _literal(node: ast.AST, source: str, what: str) -> Any:
    try:
        value = ast.literal_eval(node)
    except Exception:
        value = _Rejected
    if value is _Rejected or not _check_value(value):
        raise _Rejected(
            f"{what} must be a literal value (a string, number, boolean, None, or a list, tuple or dict of them), "
            f"got {_snippet(source, node)}."
        )
    return value


def _call(node: ast.Call, source: str, signatures: Mapping[str, Sequence[str]] | None) -> ToolCall:
    name = _dotted_name(node.func)
    if name is None:
        raise _Rejected(f"Only calls of named functions are allowed, got {_snippet(source, node.func)}(...).")
    arguments: dict[str, Any] = {}
    for kw in node.keywords:
        if kw.arg is None:
            raise _Rejected(f"Unpacking **kwargs is not allowed in the call to {name}.")
        arguments[kw.arg] = _literal(kw.value, source, f"Argument '{kw.arg}' of {name}")
    positional: list[Any] = []
    for i, arg in enumerate(node.args):
        if isinstance(arg, ast.Starred):
            raise _Rejected(f"Unpacking *args is not allowed in the call to {name}.")
        positional.append(_literal(arg, source, f"Positional argument {i + 1} of {name}"))
    raw = _snippet_full(source, node)
    if not positional:
        return ToolCall(name, arguments, raw=raw)
    params = signatures.get(name) if signatures is not None else None
    if params is not None:
        if len(positional) > len(params):
            raise _Rejected(f"{name} takes at most {len(params)} positional argument(s), got {len(positional)}.")
        bound: dict[str, Any] = {}
        for param, value in zip(params, positional):
            if param in arguments:
                raise _Rejected(f"{name} got multiple values for argument '{param}'.")
            bound[param] = value
        return ToolCall(name, {**bound, **arguments}, raw=raw)
    if len(positional) == 1 and not arguments:
        value = positional[0]
        return ToolCall(name, positional=value if isinstance(value, str) else repr(value), raw=raw)
    raise _Rejected(f"Write the arguments of {name} as keywords: {name}(param=value, ...).")


def _snippet_full(source: str, node: ast.AST) -> str:
    try:
        return source_segment(source, node) or ""
    except Exception:
        return ""


def _calls_of(expr: ast.AST) -> list[ast.AST] | None:
    """The elements of a call list expression, or None when the expression is no call list."""
    if isinstance(expr, ast.Call):
        return [expr]
    if isinstance(expr, (ast.List, ast.Tuple)) and any(isinstance(e, ast.Call) for e in expr.elts):
        return list(expr.elts)
    return None


def _call_nodes(source: str) -> list[ast.AST] | str | None:
    """Call nodes of ``source``, an error message, or None when the text is not a call list."""
    try:
        tree: ast.AST = ast.parse(source, mode="eval")
    except Exception as e:
        eval_error: Exception | None = e
    else:
        return _calls_of(tree.body)  # type: ignore[attr-defined]
    try:  # one call (or call list) per line
        module = ast.parse(source, mode="exec")
    except Exception:
        if _CALL_START.match(source):
            detail = eval_error.msg if isinstance(eval_error, SyntaxError) and eval_error.msg else type(eval_error).__name__
            return f"Could not parse the call list ({detail}). Write calls as [func(param=value), ...]."
        return None
    nodes: list[ast.AST] = []
    others: list[ast.stmt] = []
    for stmt in module.body:
        found = _calls_of(stmt.value) if isinstance(stmt, ast.Expr) else None
        if found is None:
            others.append(stmt)
        else:
            nodes.extend(found)
    if not nodes:
        return None
    if others:
        kind = type(others[0]).__name__.lower()
        return f"Expected only function calls, got a statement ({kind}): {_snippet(source, others[0])}."
    return nodes


def parse_python_calls(
    text: str, signatures: Mapping[str, Sequence[str]] | None = None
) -> tuple[ToolCall, ...] | str | None:
    """Read a Python call list with :mod:`ast` (never ``eval``).

    Args:
        text: ``[f(a=1), g('x')]``, a bare ``f(a=1)``, or calls one per line.
        signatures: Parameter names of known functions, in order, to bind positional arguments
            (``sort('a.txt')`` → ``sort(file_name='a.txt')``). Without them a single positional
            argument becomes :attr:`ToolCall.positional`.

    Returns:
        The calls; an error message (``str``) when the text is a call list with a part that is
        not allowed; ``None`` when the text is not a call list at all (``[]`` included).

    >>> parse_python_calls("[cd(folder='docs'), ls(a=True)]")[1].arguments
    {'a': True}
    >>> parse_python_calls("[rm(path=__import__('os'))]")
    "Argument 'path' of rm must be a literal value (a string, number, boolean, None, or a list, tuple or dict of them), got __import__('os')."
    >>> parse_python_calls("All done.") is None
    True
    """
    nodes = _call_nodes(text)
    if nodes is None or isinstance(nodes, str):
        return nodes
    calls: list[ToolCall] = []
    try:
        for node in nodes:
            if not isinstance(node, ast.Call):
                raise _Rejected(f"Expected only function calls in the list, got {_snippet(text, node)}.")
            calls.append(_call(node, text, signatures))
    except _Rejected as e:
        return str(e)
    except Exception as e:  # e.g. RecursionError on absurdly nested literals
        return f"Could not read the call list ({type(e).__name__})."
    return tuple(calls)


def _render(value: Any) -> str:
    return repr(value)


class PythonProtocol(Protocol):
    """BFCL's Python call lists: ``[func(param=value, ...), ...]``; any other text is an answer.

    Also accepted: a bare single call ``ls()``, calls one per line, and calls inside a
    ```` ```python ```` fence (text around the fence is kept as the thought). An empty list
    ``[]`` is an answer (no calls), as for BFCL. Arguments must be literals; positional ones
    are bound to parameter names when ``tool_names`` maps each name to its parameters.

    Example:
        >>> p = PythonProtocol()
        >>> a = p.parse("[cd(folder='document'), mkdir(dir_name='temp')]", ["cd", "mkdir"])
        >>> a.kind, [c.name for c in a.calls], dict(a.calls[0].arguments)
        ('call', ['cd', 'mkdir'], {'folder': 'document'})
        >>> p.parse("sort('report.txt')", {"sort": ["file_name"]}).calls[0].arguments
        {'file_name': 'report.txt'}
        >>> p.parse("[f(x=lambda: 1)]").kind, p.parse("I moved the file.").kind
        ('invalid', 'answer')
        >>> p.format_call(ToolCall("cd", {"folder": "temp"}))
        "[cd(folder='temp')]"
    """

    name = "python"

    def parse(self, text: str, tool_names: Collection[str] = ()) -> Action:
        """Read one response. ``tool_names`` may be a mapping from name to parameter names."""
        try:
            return self._parse(text, tool_names)
        except Exception as e:  # the parser must never raise; report it as feedback
            return Action.invalid(f"Could not parse the response ({type(e).__name__}).")

    def _parse(self, text: str, tool_names: Collection[str]) -> Action:
        stripped = text.strip()
        if not stripped:
            return Action.invalid("Empty response: write calls such as [func(param=value)] or a reply.")
        signatures = tool_names if isinstance(tool_names, Mapping) else None
        body, thought = stripped, None
        fence = _FENCE.search(stripped)
        if fence:
            inner = fence.group(1).strip()
            if _CALL_START.match(inner):
                outside = f"{stripped[: fence.start()].strip()}\n{stripped[fence.end() :].strip()}".strip()
                body, thought = inner, outside or None
        else:
            body = stripped.strip("`").strip()
        result = parse_python_calls(body, signatures)
        if result is None:
            return Action("answer", answer=stripped)
        if isinstance(result, str):
            return Action.invalid(result)
        return Action("call", calls=result, thought=thought)

    def _args(self, call: ToolCall) -> str:
        args = [f"{k}={_render(v)}" for k, v in call.arguments.items()]
        if call.positional is not None:
            args.insert(0, _render(call.positional))
        return f"{call.name}({', '.join(args)})"

    def format_call(self, call: ToolCall) -> str:
        return f"[{self._args(call)}]"

    def format_calls(self, calls: Sequence[ToolCall]) -> str:
        """Several calls as one list: ``[a(x=1), b()]`` (one action, as parallel calls)."""
        return "[" + ", ".join(self._args(c) for c in calls) + "]"

    def instructions(self, tools: Sequence[Tool]) -> str:
        return bfcl_system_prompt([t.schema["function"] for t in tools])
