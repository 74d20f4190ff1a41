"""Tools: plain typed Python functions, wrapped with a JSON schema, a time limit and an output limit.

A tool is any function with type hints and a Google-style docstring::

    def add(a: int, b: int) -> int:
        '''Add two integers.

        Args:
            a: The first number.
            b: The second number.
        '''
        return a + b

:class:`Tool` derives the JSON schema the model reads from the signature and docstring (the
same shape ``transformers.utils.get_json_schema`` produces, without importing transformers),
binds parsed arguments to the signature with light coercion (``"3"`` -> ``3`` for an ``int``
parameter), and runs the call under a wall-clock limit and an output-size limit. A call never
raises: every failure comes back as a :class:`ToolResult` with ``ok=False`` and a message the
model can read.

The time limit uses ``SIGALRM`` (``signal.setitimer``) when the call runs in the main thread of
a process, as each env of a ``SyncVectorEnv`` or an ``AsyncVectorEnv`` worker does: it
interrupts Python code (``ToolTimeout`` is a ``BaseException``, repeated until the call gives
up), and the caller's own handler and timer are put back afterwards. A single C-level operation
cannot be interrupted, which is why tools such as the calculator also bound their own work. In
other threads (servers, trainers' thread pools) the call runs in a daemon thread and the step
waits at most the limit; an overrunning call is reported as a timeout and left to finish on its
own. The decimal context and mpmath's precision are restored after every call.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import json
import re
import signal
import threading
import time
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from toolenv.types import ToolCall

__all__ = ["Tool", "ToolArgumentError", "ToolResult", "ToolTimeout", "as_tool", "did_you_mean", "process_state_kept"]

DEFAULT_TIMEOUT_S = 1.0
DEFAULT_MAX_OUTPUT_CHARS = 2_000

_ARG_LINE = re.compile(r"^\s*(\*{0,2}\w+)\s*(?:\(([^)]*)\))?\s*:\s*(.*)$")
_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Returns|Return|Raises|Yields|Examples?|Notes?)\s*:\s*$")


#: After the limit, the alarm repeats this often until the call gives up (a tool that catches one
#: ``ToolTimeout`` with ``except BaseException`` is interrupted again).
_REPEAT_S = 0.05


@contextlib.contextmanager
def process_state_kept() -> typing.Iterator[None]:
    """Put back process-wide numeric state a tool may change: the decimal context, mpmath's precision.

    Model arguments reach tools such as BFCL's math API, which set ``decimal``'s precision or
    ``mpmath.mp.dps`` from a ``precision=`` argument and leave it for everything else in the process.
    """
    import decimal
    import sys

    context = decimal.getcontext().copy()
    mp = getattr(sys.modules.get("mpmath"), "mp", None)
    prec = getattr(mp, "prec", None)
    try:
        yield
    finally:
        decimal.setcontext(context)
        if mp is None:
            mp = getattr(sys.modules.get("mpmath"), "mp", None)
            prec = 53 if mp is not None else None  # mpmath was first imported during the call: its default
        if mp is not None and prec is not None and mp.prec != prec:
            mp.prec = prec


class ToolArgumentError(ValueError):
    """The arguments of a call do not fit the tool's signature."""


class ToolTimeout(BaseException):
    """A tool call ran past its time limit.

    A ``BaseException`` (like ``KeyboardInterrupt``), so a tool's own ``except Exception`` cannot
    swallow it; the alarm also repeats every 50 ms until the call returns.
    """


@dataclass(frozen=True, slots=True)
class ToolResult:
    """The outcome of one tool call.

    Attributes:
        ok: The call bound its arguments and returned without error in time.
        output: Text for the model: the value, or an error message. Already size-limited.
        value: The tool's return value (``None`` on failure).
        error: ``None``, or the failure kind: ``"arguments"``, ``"unknown_tool"``, ``"timeout"`` or ``"exception"``.
        elapsed: Wall-clock seconds spent in the call.
    """

    ok: bool
    output: str
    value: Any = None
    error: Literal["arguments", "unknown_tool", "timeout", "exception"] | None = None
    elapsed: float = 0.0


def did_you_mean(name: str, choices: typing.Iterable[str]) -> str:
    """A `` Did you mean 'x'?`` suffix for an unknown name, or ``""`` when nothing is close.

    >>> did_you_mean("calcuator", ["calculator", "search"])
    " Did you mean 'calculator'?"
    """
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{match[0]}'?" if match else ""


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into its description and per-argument help."""
    lines = inspect.cleandoc(doc).splitlines()
    description: list[str] = []
    args: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    arg_indent = 0
    for line in lines:
        header = _SECTION.match(line)
        if header:
            section = header.group(1).lower()
            current = None
            continue
        if section is None:
            description.append(line)
        elif section in ("args", "arguments", "parameters") and line.strip():
            indent = len(line) - len(line.lstrip())
            m = _ARG_LINE.match(line)
            if m and (current is None or indent <= arg_indent):
                current, arg_indent = m.group(1).lstrip("*"), indent
                args[current] = m.group(3).strip()
            elif current is not None:
                args[current] = f"{args[current]} {line.strip()}".strip()
    text = "\n".join(description).strip()
    return " ".join(text.split("\n\n")[0].split()), args


def _json_type(tp: Any) -> dict[str, Any]:
    """JSON schema of a Python type annotation."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or tp is inspect.Parameter.empty:
        return {}
    if origin in (typing.Union, types.UnionType):
        non_null = [a for a in args if a is not type(None)]
        schema: dict[str, Any] = _json_type(non_null[0]) if len(non_null) == 1 else {"anyOf": [_json_type(a) for a in non_null]}
        if len(non_null) < len(args):
            schema = {**schema, "nullable": True}
        return schema
    if origin is Literal:
        values = list(args)
        base = _json_type(type(values[0])) if values else {}
        return {**base, "enum": values}
    if origin in (list, tuple, set, frozenset, typing.Sequence) or tp in (list, tuple, set):
        array: dict[str, Any] = {"type": "array"}
        if args and args[0] is not Ellipsis:
            array["items"] = _json_type(args[0])
        return array
    if origin in (dict, typing.Mapping) or tp is dict:
        return {"type": "object"}
    simple = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}
    if tp in simple:
        return {"type": simple[tp]}
    return {}


def _coerce(value: Any, schema: Mapping[str, Any], arg: str, tool: str) -> Any:
    """Coerce a parsed argument to its schema type, or raise :class:`ToolArgumentError`."""
    if value is None and schema.get("nullable"):
        return None
    kind = schema.get("type")
    ok = True
    if kind == "string":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        ok = isinstance(value, str)
    elif kind == "integer":
        if isinstance(value, str):
            try:
                value = int(value.strip().replace(",", ""))
            except ValueError:
                ok = False
        elif isinstance(value, float) and value.is_integer():
            value = int(value)
        ok = ok and isinstance(value, int) and not isinstance(value, bool)
    elif kind == "number":
        if isinstance(value, str):
            try:
                value = float(value.strip().replace(",", ""))
            except ValueError:
                ok = False
        ok = ok and isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind == "boolean":
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            value = value.strip().lower() == "true"
        ok = isinstance(value, bool)
    elif kind == "array":
        ok = isinstance(value, (list, tuple))
    elif kind == "object":
        ok = isinstance(value, dict)
    if not ok:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise ToolArgumentError(
            f"Argument '{arg}' of {tool} expects {kind}, got {type(value).__name__} {shown}."
        )
    if "enum" in schema and value not in schema["enum"]:
        raise ToolArgumentError(
            f"Argument '{arg}' of {tool} must be one of {schema['enum']}, got {value!r}."
        )
    return value


def _printable(value: Any) -> str:
    """A return value as text: JSON for plain data, else ``str``; a value that cannot be printed
    (an int past Python's 4,300-digit limit, a broken ``__str__``) says so instead of raising."""
    try:
        if isinstance(value, (dict, list, tuple, int, float, bool)):
            try:
                return json.dumps(value, ensure_ascii=False, default=str)
            except (TypeError, ValueError, RecursionError):
                pass
        return str(value)
    except Exception as e:
        return f"<unprintable {type(value).__name__}: {type(e).__name__}: {e}>"


def _on_alarm(signum: int, frame: Any) -> None:
    raise ToolTimeout()


class Tool:
    """A callable tool with a JSON schema, argument binding, a time limit and an output limit.

    Args:
        fn: The function to wrap. Its type hints and Google-style docstring give the schema.
        name: The name the model uses; defaults to the function's name.
        description: Overrides the docstring's summary.
        timeout: Wall-clock limit of one call, in seconds.
        max_output_chars: Output longer than this is cut, with a note saying how much was cut.
        concurrent: Whether calls may run at the same time as the other calls of one action (a tool
            that keeps no state between calls); default: the function's ``concurrent_safe`` attribute.
        isolate: Run every call in a forked worker process, killed at the time limit: the one mode
            that also stops work no in-process limit can interrupt (a single C-level operation).
            A bound method's instance state comes back from the worker after a call that finished,
            and stays as it was after one that was killed, so the env's state stays consistent.
            Costs a fork per call (milliseconds); Linux and macOS (``fork``) only.

    Example:
        >>> def add(a: int, b: int) -> int:
        ...     '''Add two integers.
        ...
        ...     Args:
        ...         a: The first number.
        ...         b: The second number.
        ...     '''
        ...     return a + b
        >>> tool = Tool(add)
        >>> tool.schema["function"]["parameters"]["required"]
        ['a', 'b']
        >>> tool(ToolCall("add", {"a": 2, "b": "3"})).output
        '5'
        >>> tool(ToolCall("add", {"a": 2})).output
        "Error: add is missing required argument 'b'. Expected arguments: a, b."
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
        isolate: bool = False,
        concurrent: bool | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"Expected a callable tool, got {type(fn).__name__}.")
        if timeout <= 0:
            raise ValueError(f"Expected timeout > 0 seconds, got {timeout}.")
        if max_output_chars < 16:
            raise ValueError(f"Expected max_output_chars >= 16, got {max_output_chars}.")
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", type(fn).__name__))
        self.timeout = float(timeout)
        self.max_output_chars = int(max_output_chars)
        #: Run each call in a forked worker process that is killed at the limit (see :meth:`_run_isolated`).
        self.isolate = bool(isolate)
        #: Calls of this tool may run at the same time as other calls of the same action (it keeps no
        #: state between calls); default: the function's ``concurrent_safe`` attribute, else False.
        self.concurrent = bool(getattr(fn, "concurrent_safe", False) if concurrent is None else concurrent)
        summary, arg_help = _parse_docstring(inspect.getdoc(fn) or "")
        self.description = description or summary
        try:
            hints = typing.get_type_hints(fn)
        except Exception:  # unresolvable forward references: fall back to untyped
            hints = {}
        properties: dict[str, dict[str, Any]] = {}
        required: list[str] = []
        self._params: list[str] = []
        self._accepts_kwargs = False
        for p in inspect.signature(fn).parameters.values():
            if p.kind is p.VAR_KEYWORD:
                self._accepts_kwargs = True
                continue
            if p.kind is p.VAR_POSITIONAL or p.name == "self":
                continue
            prop = _json_type(hints.get(p.name, p.annotation))
            if p.name in arg_help:
                prop["description"] = arg_help[p.name]
            properties[p.name] = prop
            self._params.append(p.name)
            if p.default is p.empty:
                required.append(p.name)
        self.parameters: dict[str, Any] = {"type": "object", "properties": properties, "required": required}

    @property
    def schema(self) -> dict[str, Any]:
        """The OpenAI/Hugging Face tool schema: ``{"type": "function", "function": {...}}``."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    def signature_text(self) -> str:
        """A one-line signature for prompts, e.g. ``calculator(expression: string)``."""
        props = self.parameters["properties"]
        args = ", ".join(f"{k}: {v.get('type', 'any')}" for k, v in props.items())
        return f"{self.name}({args})"

    def bind(self, call: ToolCall) -> dict[str, Any]:
        """Map a parsed call onto keyword arguments, or raise :class:`ToolArgumentError`."""
        props = self.parameters["properties"]
        expected = ", ".join(self._params) or "none"
        if call.positional is not None:
            if call.arguments:
                raise ToolArgumentError(f"{self.name} takes either one positional input or named arguments, not both.")
            targets = self.parameters["required"] or self._params
            if len(targets) != 1:
                raise ToolArgumentError(
                    f"{self.name} needs named arguments ({expected}); got one positional input."
                )
            arguments: Mapping[str, Any] = {targets[0]: call.positional}
        else:
            arguments = call.arguments
        if not isinstance(arguments, Mapping):
            raise ToolArgumentError(f"Expected the arguments of {self.name} as an object, got {type(arguments).__name__}.")
        bound: dict[str, Any] = {}
        for key, value in arguments.items():
            if key not in props and not self._accepts_kwargs:
                raise ToolArgumentError(
                    f"{self.name} got an unexpected argument '{key}'.{did_you_mean(str(key), props)}"
                    f" Expected arguments: {expected}."
                )
            bound[key] = _coerce(value, props.get(key, {}), str(key), self.name)
        for key in self.parameters["required"]:
            if key not in bound:
                raise ToolArgumentError(
                    f"{self.name} is missing required argument '{key}'. Expected arguments: {expected}."
                )
        return bound

    def _run(self, kwargs: dict[str, Any]) -> Any:
        if self.isolate:
            return self._run_isolated(kwargs)
        with process_state_kept():
            if threading.current_thread() is not threading.main_thread():
                return self._run_in_thread(kwargs)
            # the caller's own SIGALRM handler and timer are put back afterwards, the timer with
            # the time it had left (fired at once if it ran out during the call)
            caller_remaining, caller_interval = signal.getitimer(signal.ITIMER_REAL)
            previous = signal.signal(signal.SIGALRM, _on_alarm)
            start = time.monotonic()
            signal.setitimer(signal.ITIMER_REAL, self.timeout, _REPEAT_S)
            try:
                return self.fn(**kwargs)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
                if caller_remaining > 0:
                    left = caller_remaining - (time.monotonic() - start)
                    signal.setitimer(signal.ITIMER_REAL, max(left, 1e-6), caller_interval)

    def _run_isolated(self, kwargs: dict[str, Any]) -> Any:
        """The call in a forked child: its value (and a bound method's instance state) come back
        through a pipe; at the limit the child is killed and the call reported as a timeout."""
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        receive, send = ctx.Pipe(duplex=False)
        owner = getattr(self.fn, "__self__", None)

        def child() -> None:
            try:
                value = self.fn(**kwargs)
                state = vars(owner) if owner is not None and hasattr(owner, "__dict__") else None
                send.send(("ok", value, state))
            except BaseException as e:  # noqa: BLE001 - reported to the parent
                try:
                    send.send(("error", e, None))
                except Exception:
                    send.send(("error", RuntimeError(f"{type(e).__name__}: {e}"), None))
            finally:
                send.close()

        worker = ctx.Process(target=child, daemon=True)
        worker.start()
        send.close()
        try:
            if not receive.poll(self.timeout):
                raise ToolTimeout()
            try:
                kind, value, state = receive.recv()
            except (EOFError, OSError):
                raise RuntimeError(f"{self.name}'s worker process ended without a result (exit code {worker.exitcode}).") from None
        finally:
            if worker.is_alive():
                worker.kill()
            worker.join(1.0)
            receive.close()
        if kind == "error":
            raise value
        if state is not None and owner is not None:
            owner.__dict__.update(state)  # the call's effect on the instance, as if it had run here
        return value

    def _run_in_thread(self, kwargs: dict[str, Any]) -> Any:
        """Off the main thread there is no SIGALRM: the call runs in a daemon thread and the step
        waits at most the time limit. A call that overruns is reported as a timeout and left to
        finish on its own (Python cannot stop a thread); its result is dropped."""
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = self.fn(**kwargs)
            except BaseException as e:  # delivered to the caller below
                box["error"] = e

        worker = threading.Thread(target=target, name=f"toolenv-tool-{self.name}", daemon=True)
        worker.start()
        worker.join(self.timeout)
        if worker.is_alive():
            raise ToolTimeout()
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def format_output(self, value: Any) -> str:
        """Render a return value as text for the model, cut to ``max_output_chars``."""
        if isinstance(value, str):
            text = value
        elif value is None:
            text = ""
        else:
            text = _printable(value)
        if len(text) > self.max_output_chars:
            cut = len(text) - self.max_output_chars
            text = f"{text[: self.max_output_chars]}... [output truncated: {cut} more characters]"
        return text

    def __call__(self, call: ToolCall) -> ToolResult:
        """Bind and run a call. Never raises for anything the model wrote."""
        start = time.perf_counter()
        try:
            kwargs = self.bind(call)
        except ToolArgumentError as e:
            return ToolResult(False, self._error_text(str(e)), error="arguments", elapsed=time.perf_counter() - start)
        try:
            value = self._run(kwargs)
        except ToolTimeout:
            return ToolResult(
                False, self._error_text(f"{self.name} timed out after {self.timeout:g} s."),
                error="timeout", elapsed=time.perf_counter() - start,
            )
        except Exception as e:  # the tool's own failure is feedback for the model
            # Tools that validate input raise ValueError/TypeError with a message meant for the
            # reader; anything else also names the exception type (KeyError: 'Atlantis').
            plain = isinstance(e, (ValueError, TypeError)) and str(e)
            message = str(e) if plain else f"{type(e).__name__}: {e}".rstrip(": ")
            return ToolResult(False, self._error_text(message), error="exception", elapsed=time.perf_counter() - start)
        elapsed = time.perf_counter() - start
        if elapsed > self.timeout:
            return ToolResult(False, self._error_text(f"{self.name} timed out after {self.timeout:g} s."),
                              error="timeout", elapsed=elapsed)
        text = self.format_output(value)
        if text.startswith("<unprintable ") and not isinstance(value, str):
            return ToolResult(False, self._error_text(f"{self.name} returned a value that cannot be shown: {text}"),
                              error="exception", elapsed=elapsed)
        return ToolResult(True, text, value=value, elapsed=elapsed)

    def _error_text(self, message: str) -> str:
        return self.format_output(f"Error: {message}")

    def __repr__(self) -> str:
        return f"Tool({self.signature_text()})"


def as_tool(obj: Tool | Callable[..., Any], **kwargs: Any) -> Tool:
    """Wrap a function as a :class:`Tool`; a :class:`Tool` passes through unchanged."""
    return obj if isinstance(obj, Tool) else Tool(obj, **kwargs)
