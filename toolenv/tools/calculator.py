"""A safe arithmetic calculator tool.

The model sends a plain-text arithmetic expression; :func:`calculator` returns
its value as a short string. This is the calculator of TRICE's math task.

Safety model:

* Nothing the model writes is ever executed. The text is parsed with
  :func:`ast.parse` (parsing only, no code object is ever made) and the tree is
  walked by a small evaluator that knows a whitelist of node types: numeric
  literals, ``+ - * / // % **``, unary ``+``/``-`` and calls of a few
  bare-name math functions (:data:`ALLOWED_FUNCTIONS`) with positional
  arguments. Every other node (names, attributes, subscripts, strings,
  lambdas, comprehensions, comparisons, keywords, ...) is refused with a
  :class:`CalculatorError` naming what is not allowed.
* Every call is bounded by construction, so no timeout is needed here:
  input longer than :data:`MAX_EXPRESSION_CHARS` is refused before any
  parsing; the tree may have at most :data:`MAX_NODES` nodes and
  :data:`MAX_DEPTH` levels; powers are checked *before* they are computed
  (``|exponent| <= 1000`` and at most 300 digits in the result, estimated as
  ``exponent * log10(|base|)``), products of big integers are checked by
  their bit lengths, and every intermediate value must stay within
  ``1e300`` (floats) or ``10**300`` (ints). ``9**9**9**9`` is refused in
  microseconds.
* Every failure, including parser errors, division by zero, math domain
  errors and overflow, surfaces as :class:`CalculatorError` with a short
  message meant to be shown to the model.

Before parsing, a few things models commonly write are normalized: ``^`` for
powers, the symbols ``×``, ``÷`` and ``−``, thousands separators
(``1,000,000``), percentages (``50%`` is ``0.5``; a ``%`` followed by a
number, a name or ``(`` stays the modulo operator), currency signs
(``$``, ``€``, ``£``), a trailing ``=`` or ``= ?`` and a trailing period.

Example:
    >>> calculator("(12/60)*50")
    '10'
    >>> calculator("2^10 - 1,000")
    '24'
    >>> calculator("20% * $80")
    '16'
"""

from __future__ import annotations

import ast
import difflib
import math
import operator
import re
import warnings
from collections.abc import Callable

__all__ = [
    "ALLOWED_FUNCTIONS",
    "MAX_DEPTH",
    "MAX_EXPRESSION_CHARS",
    "MAX_NODES",
    "CalculatorError",
    "calculator",
    "evaluate",
    "format_number",
]

Number = int | float

MAX_EXPRESSION_CHARS: int = 1000
"""Longer input is refused before any other work."""

MAX_NODES: int = 500
"""Most syntax-tree nodes an expression may have."""

MAX_DEPTH: int = 100
"""Deepest nesting of the syntax tree."""

_MAX_EXPONENT = 1000
_MAX_DIGITS = 300
_INT_LIMIT = 10**_MAX_DIGITS
_FLOAT_LIMIT = 1e300
# Ints below this many bits are below 10**300 (2**996 < 10**300 < 2**997).
_MAX_PRODUCT_BITS = 1000


class CalculatorError(ValueError):
    """Raised for any expression the calculator refuses or cannot evaluate; message is shown to the model, so make it short and clear."""


# --------------------------------------------------------------------------
# Normalization of what models write
# --------------------------------------------------------------------------

# Strings made only of these characters need no normalization at all.
_PLAIN_RE = re.compile(r"[0-9+\-*/(). ]*")
# A number followed by a letter, or a backslash: the only inputs for which
# ``ast.parse`` may emit a warning (invalid decimal literal / escape).
_MAY_WARN_RE = re.compile(r"[0-9.][A-Za-z_]|\\")
_TRANSLATE = str.maketrans(
    {
        "^": "**",
        "×": "*",
        "÷": "/",
        "−": "-",
        "²": "**2",
        "³": "**3",
        "\t": " ",
        "\n": " ",
        "\r": " ",
        "\f": " ",
        "\v": " ",
        "\u00a0": " ",
    }
)
_CURRENCY_RE = re.compile(r"[$€£]\s*(?=[0-9.])|(?<=[0-9.])\s*[$€£]")
_THOUSANDS_RE = re.compile(r"(?<=[0-9]),(?=[0-9]{3}(?![0-9]))")
# A percent sign is "percent" unless a number, a name or "(" follows it.
_PERCENT_NUMBER_RE = re.compile(r"(?<![\w.])((?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\s*%(?!\s*[\w(.])")
_PERCENT_PAREN_RE = re.compile(r"\)\s*%(?!\s*[\w(.])")


def _strip_trailing(text: str) -> str:
    """Drops trailing ``=``, ``?`` and a sentence-ending period."""
    while text:
        last = text[-1]
        if last == "=" or last == "?":
            text = text[:-1].rstrip()
        elif last == "." and (len(text) == 1 or not text[-2].isdigit()):
            text = text[:-1].rstrip()
        else:
            break
    return text


def _normalize(text: str) -> str:
    """Rewrites model-style notation into Python arithmetic syntax."""
    text = text.translate(_TRANSLATE)
    if "$" in text or "€" in text or "£" in text:
        text = _CURRENCY_RE.sub("", text)
    if "," in text:
        text = _THOUSANDS_RE.sub("", text)
    if "%" in text:
        text = _PERCENT_NUMBER_RE.sub(r"(\1/100)", text)
        text = _PERCENT_PAREN_RE.sub(")/100", text)
    return text.strip()


def _parse(text: str) -> ast.expr:
    """Parses ``text`` into an expression tree (no code is compiled)."""
    try:
        if _MAY_WARN_RE.search(text) is None:
            tree = ast.parse(text, mode="eval")
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        reason = (exc.msg or "invalid syntax").rstrip(".")
        raise CalculatorError(f"Could not parse expression: {reason}.") from None
    except (RecursionError, MemoryError):
        raise CalculatorError("Could not parse expression: too deeply nested.") from None
    except ValueError as exc:  # e.g. null bytes on some Python versions
        raise CalculatorError(f"Could not parse expression: {exc}.") from None
    return tree.body


# --------------------------------------------------------------------------
# Arithmetic with bounds checked before the work is done
# --------------------------------------------------------------------------


def _checked(value: object) -> Number:
    """Returns ``value`` if it is a real number within the limits."""
    kind = type(value)
    if kind is int:
        if -_INT_LIMIT <= value <= _INT_LIMIT:  # type: ignore[operator]
            return value  # type: ignore[return-value]
        raise CalculatorError(f"Result too large: more than {_MAX_DIGITS} digits.")
    if kind is float:
        if -_FLOAT_LIMIT <= value <= _FLOAT_LIMIT:  # type: ignore[operator]
            return value  # type: ignore[return-value]
        if value != value:
            raise CalculatorError("Result is not a number.")
        raise CalculatorError(f"Result too large: magnitude above 1e{_MAX_DIGITS}.")
    if isinstance(value, complex):
        raise CalculatorError("Result is not a real number.")
    raise CalculatorError(f"Expected a number as result, got {type(value).__name__}.")


def _power(base: Number, exponent: Number) -> Number:
    """``base ** exponent``, refused before computing if it would be huge."""
    if exponent > _MAX_EXPONENT or exponent < -_MAX_EXPONENT:
        raise CalculatorError(f"Exponent too large: {exponent} (limit {_MAX_EXPONENT}).")
    if base == 0:
        if exponent < 0:
            raise ZeroDivisionError
        return _checked(base**exponent)
    if base < 0 and type(exponent) is float and not exponent.is_integer():
        raise CalculatorError("Result is not a real number: negative base with a fractional exponent.")
    digits = exponent * math.log10(abs(base))
    if digits > _MAX_DIGITS:
        raise CalculatorError(f"Result too large: about {int(digits) + 1} digits (limit {_MAX_DIGITS}).")
    return _checked(base**exponent)


def _multiply(left: Number, right: Number) -> Number:
    """``left * right``, with huge integer products refused beforehand."""
    if type(left) is int and type(right) is int and left.bit_length() + right.bit_length() > _MAX_PRODUCT_BITS + 2:
        raise CalculatorError(f"Result too large: more than {_MAX_DIGITS} digits.")
    return _checked(left * right)


def _simple(fn: Callable[[Number, Number], Number]) -> Callable[[Number, Number], Number]:
    """Wraps a cheap binary operator with the result check."""

    def apply(left: Number, right: Number) -> Number:
        return _checked(fn(left, right))

    return apply


_BINARY_OPS: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: _simple(operator.add),
    ast.Sub: _simple(operator.sub),
    ast.Mult: _multiply,
    ast.Div: _simple(operator.truediv),
    ast.FloorDiv: _simple(operator.floordiv),
    ast.Mod: _simple(operator.mod),
    ast.Pow: _power,
}

_OPERATOR_SYMBOLS: dict[type[ast.AST], str] = {
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.MatMult: "@",
    ast.Not: "not",
    ast.Invert: "~",
}


# --------------------------------------------------------------------------
# Whitelisted functions
# --------------------------------------------------------------------------


def _round(value: Number, ndigits: Number | None = None) -> Number:
    """``round`` that insists on whole-number digits."""
    if ndigits is None:
        return round(value)
    if type(ndigits) is float and ndigits.is_integer():
        ndigits = int(ndigits)
    if type(ndigits) is not int:
        raise CalculatorError(f"round() needs a whole number of digits, got {format_number(ndigits)}.")
    if ndigits < -_MAX_DIGITS - 1:
        # |value| <= 10**300, so this rounds to zero; CPython would otherwise
        # compute 10**-ndigits for an int first.
        return 0 if type(value) is int else 0.0
    return round(value, ndigits)


def _min(*args: Number) -> Number:
    return min(args)


def _max(*args: Number) -> Number:
    return max(args)


def _log(value: Number, base: Number | None = None) -> float:
    return math.log(value) if base is None else math.log(value, base)


# name -> (implementation, fewest arguments, most arguments or -1 for any)
_FUNCTIONS: dict[str, tuple[Callable[..., Number], int, int]] = {
    "abs": (abs, 1, 1),
    "ceil": (math.ceil, 1, 1),
    "exp": (math.exp, 1, 1),
    "floor": (math.floor, 1, 1),
    "log": (_log, 1, 2),
    "log10": (math.log10, 1, 1),
    "max": (_max, 1, -1),
    "min": (_min, 1, -1),
    "round": (_round, 1, 2),
    "sqrt": (math.sqrt, 1, 1),
}

ALLOWED_FUNCTIONS: tuple[str, ...] = tuple(sorted(_FUNCTIONS))
"""Names of the functions an expression may call."""

_ALLOWED_TEXT = ", ".join(ALLOWED_FUNCTIONS)
_FUNCTION_HINTS = {
    "ln": "log",
    "log2": "log(x, 2)",
    "pow": "the ^ operator",
    "fabs": "abs",
    "int": "floor",
    "trunc": "floor",
}


def _unknown_function(name: str) -> CalculatorError:
    """Builds the error for a call of a function that is not whitelisted."""
    hint = _FUNCTION_HINTS.get(name)
    if hint is None:
        close = difflib.get_close_matches(name, ALLOWED_FUNCTIONS, n=1)
        hint = close[0] if close else None
    did_you_mean = f" Did you mean {hint}?" if hint else ""
    return CalculatorError(f"Unknown function '{name}'.{did_you_mean} Allowed: {_ALLOWED_TEXT}.")


def _call(node: ast.Call, depth: int, budget: list[int]) -> Number:
    """Evaluates a call of a whitelisted function."""
    func = node.func
    if type(func) is not ast.Name:
        if type(func) is ast.Constant and type(func.value) in (int, float):
            raise CalculatorError(
                "Not allowed in a calculator expression: a number followed by '('; write * to multiply, e.g. 2*(3+4)."
            )
        raise _refusal(func)
    name = func.id
    entry = _FUNCTIONS.get(name)
    if entry is None:
        raise _unknown_function(name)
    if node.keywords:
        raise CalculatorError("Not allowed in a calculator expression: keyword arguments (use positional ones).")
    impl, fewest, most = entry
    count = len(node.args)
    if count < fewest or (most >= 0 and count > most):
        if fewest == most:
            wanted = f"{fewest} argument" + ("" if fewest == 1 else "s")
        elif most < 0:
            wanted = f"at least {fewest} argument" + ("" if fewest == 1 else "s")
        else:
            wanted = f"{fewest} to {most} arguments"
        raise CalculatorError(f"{name}() takes {wanted}, got {count}.")
    args = [_eval(arg, depth, budget) for arg in node.args]
    try:
        result = impl(*args)
    except CalculatorError:
        raise
    except ZeroDivisionError:
        raise CalculatorError("Division by zero.") from None
    except OverflowError:
        raise CalculatorError(f"Result too large: {name}() overflowed.") from None
    except (ValueError, TypeError):
        shown = ", ".join(format_number(arg) for arg in args)
        raise CalculatorError(f"Math domain error: {name}({shown}) is undefined.") from None
    return _checked(result)


# --------------------------------------------------------------------------
# Evaluator
# --------------------------------------------------------------------------

_NODE_NAMES: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access",
    ast.Subscript: "indexing or slicing",
    ast.Slice: "slicing",
    ast.Lambda: "lambda functions",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.List: "lists",
    ast.Tuple: "tuples (a comma outside function arguments; write 1234 or 1,234)",
    ast.Set: "sets",
    ast.Dict: "dicts",
    ast.Compare: "comparisons",
    ast.BoolOp: "boolean operators (and/or)",
    ast.IfExp: "conditional expressions (if/else)",
    ast.NamedExpr: "assignments",
    ast.JoinedStr: "strings",
    ast.FormattedValue: "strings",
    ast.Starred: "starred arguments",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
}

_CONSTANT_NAMES: dict[type, str] = {
    str: "strings",
    bytes: "bytes",
    bool: "booleans",
    type(None): "None",
    complex: "complex numbers",
    type(...): "'...'",
}


def _refusal(node: ast.AST) -> CalculatorError:
    """Builds the error naming why ``node`` is not allowed."""
    kind = type(node)
    if kind is ast.Name:
        name = node.id  # type: ignore[attr-defined]
        if name in _FUNCTIONS:
            return CalculatorError(f"Function '{name}' must be called with arguments, e.g. {name}(2).")
        return CalculatorError(
            f"Unknown name '{name}': only numbers, operators and the functions {_ALLOWED_TEXT} are allowed."
        )
    if kind is ast.Constant:
        what = _CONSTANT_NAMES.get(type(node.value), type(node.value).__name__)  # type: ignore[attr-defined]
    elif kind is ast.BinOp or kind is ast.UnaryOp:
        op = type(node.op)  # type: ignore[attr-defined]
        what = f"the '{_OPERATOR_SYMBOLS.get(op, op.__name__)}' operator"
    else:
        what = _NODE_NAMES.get(kind, kind.__name__)
    return CalculatorError(f"Not allowed in a calculator expression: {what}.")


def _eval(node: ast.AST, depth: int, budget: list[int]) -> Number:
    """Evaluates a whitelisted expression tree."""
    depth += 1
    if depth > MAX_DEPTH:
        raise CalculatorError(f"Expression too deeply nested (limit {MAX_DEPTH} levels).")
    budget[0] -= 1
    if budget[0] < 0:
        raise CalculatorError(f"Expression too long: more than {MAX_NODES} parts.")
    kind = type(node)
    if kind is ast.BinOp:
        # Walk a left-leaning chain such as 1+2+3+... iteratively, so long
        # sums are bounded by MAX_NODES rather than by MAX_DEPTH.
        steps: list[tuple[Callable[[Number, Number], Number], ast.expr]] = []
        while type(node) is ast.BinOp:
            apply = _BINARY_OPS.get(type(node.op))  # type: ignore[attr-defined]
            if apply is None:
                raise _refusal(node)
            steps.append((apply, node.right))  # type: ignore[attr-defined]
            node = node.left  # type: ignore[attr-defined]
        budget[0] -= len(steps) - 1
        value = _eval(node, depth, budget)
        for apply, right in reversed(steps):
            value = apply(value, _eval(right, depth, budget))
        return value
    if kind is ast.Constant:
        value = node.value  # type: ignore[attr-defined]
        value_kind = type(value)
        if value_kind is int:
            if value > _INT_LIMIT:
                raise CalculatorError(f"Number too large: {len(str(value))} digits (limit {_MAX_DIGITS}).")
            return value  # type: ignore[no-any-return]
        if value_kind is float:
            if value > _FLOAT_LIMIT:
                raise CalculatorError(f"Number too large (limit 1e{_MAX_DIGITS}).")
            return value  # type: ignore[no-any-return]
        raise _refusal(node)
    if kind is ast.UnaryOp:
        op = type(node.op)  # type: ignore[attr-defined]
        if op is ast.USub:
            return -_eval(node.operand, depth, budget)  # type: ignore[attr-defined]
        if op is ast.UAdd:
            return +_eval(node.operand, depth, budget)  # type: ignore[attr-defined]
        raise _refusal(node)
    if kind is ast.Call:
        return _call(node, depth, budget)  # type: ignore[arg-type]
    raise _refusal(node)


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def evaluate(expression: str) -> int | float:
    """Evaluates an arithmetic expression safely.

    Args:
        expression: Arithmetic in Python or everyday notation, e.g.
            ``"(12/60)*50"``, ``"2^10 - 1,000"`` or ``"20% * $80"``.

    Returns:
        The value; an ``int`` where Python integer arithmetic would give one
        (``7*6`` is ``42``), otherwise a ``float`` (``/`` always gives one).

    Raises:
        CalculatorError: If the expression is empty, too long, malformed, uses
            anything outside the whitelist, or its value is undefined or too
            large.

    Example:
        >>> evaluate("2^10 - 1,000")
        24
        >>> evaluate("50%")
        0.5
    """
    if not isinstance(expression, str):
        raise CalculatorError(f"Expected the expression as a string, got {type(expression).__name__}.")
    length = len(expression)
    if length > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"Expression too long: {length} characters (limit {MAX_EXPRESSION_CHARS}).")
    text = expression.strip()
    if text and text[-1] in "=?.":
        text = _strip_trailing(text)
    if _PLAIN_RE.fullmatch(text) is None:
        text = _normalize(text)
    if not text:
        raise CalculatorError("Empty expression.")
    body = _parse(text)
    try:
        return _eval(body, 0, [MAX_NODES])
    except CalculatorError:
        raise
    except ZeroDivisionError:
        raise CalculatorError("Division by zero.") from None
    except OverflowError:
        raise CalculatorError("Result too large.") from None
    except RecursionError:
        raise CalculatorError("Expression too deeply nested.") from None
    except MemoryError:
        raise CalculatorError("Expression too large to evaluate.") from None
    except (ArithmeticError, ValueError, TypeError) as exc:
        raise CalculatorError(f"Could not evaluate expression: {exc}.") from None


def format_number(value: int | float) -> str:
    """Formats a calculator result the way a person would write it.

    Ints are written in full. Floats with magnitude in ``[1e-6, 1e15]`` are
    written without exponent, rounded to at most 10 decimals (and about 15
    significant digits, so binary noise never shows), with trailing zeros
    dropped; other floats use ``e`` notation with up to 10 significant digits.

    Args:
        value: The number to format.

    Returns:
        The formatted number.

    Raises:
        TypeError: If ``value`` is not an int or a float.

    Example:
        >>> format_number(24.0), format_number(0.1 + 0.2), format_number(1 / 3)
        ('24', '0.3', '0.3333333333')
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"Expected an int or a float, got {type(value).__name__}.")
    if isinstance(value, int):
        return str(int(value))
    if value != value:
        return "nan"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude == math.inf:
        return "inf" if value > 0 else "-inf"
    if 1e-6 <= magnitude <= 1e15:
        decimals = min(10, max(0, 14 - math.floor(math.log10(magnitude))))
        text = f"{value:.{decimals}f}"
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return "0" if text == "-0" else text
    return f"{value:.10g}"


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression and return its value.

    Args:
        expression: An arithmetic expression, e.g. "(12/60)*50" or "2^10 - 1,000".
    """
    return format_number(evaluate(expression))


calculator.concurrent_safe = True  # type: ignore[attr-defined]  # a pure function: calls of one action may overlap
