"""Tools: JSON schema from signature and docstring, argument binding, time and output limits."""

from __future__ import annotations

import time
from typing import Literal

import pytest

from tests.conftest import require
from toolenv.tools import Tool
from toolenv.types import ToolCall


def convert(amount: float, unit: Literal["km", "mi"], precise: bool = False, tags: list[str] | None = None) -> str:
    """Convert a distance.

    A longer paragraph that is not part of the summary.

    Args:
        amount: How much to convert, a number
            that may span two lines.
        unit: The target unit.
        precise: Keep all decimals.
        tags: Optional labels.
    """
    return f"{amount} {unit}"


def test_schema_from_signature_and_docstring() -> None:
    schema = Tool(convert).schema
    fn = schema["function"]
    assert schema["type"] == "function"
    assert fn["name"] == "convert"
    assert fn["description"] == "Convert a distance."
    props = fn["parameters"]["properties"]
    assert props["amount"] == {"type": "number", "description": "How much to convert, a number that may span two lines."}
    assert props["unit"]["enum"] == ["km", "mi"] and props["unit"]["type"] == "string"
    assert props["precise"]["type"] == "boolean"
    assert props["tags"]["type"] == "array" and props["tags"]["items"] == {"type": "string"}
    assert props["tags"]["nullable"] is True
    assert fn["parameters"]["required"] == ["amount", "unit"]


def test_schema_matches_transformers_get_json_schema() -> None:
    transformers_utils = require("transformers.utils", "pip install -e .")

    def add(a: int, b: float = 1.0) -> float:
        """Add two numbers.

        Args:
            a: The first number.
            b: The second number.
        """
        return a + b

    theirs = transformers_utils.get_json_schema(add)
    ours = Tool(add).schema
    assert ours["function"]["name"] == theirs["function"]["name"]
    assert ours["function"]["description"] == theirs["function"]["description"]
    assert ours["function"]["parameters"]["required"] == theirs["function"]["parameters"]["required"]
    for key in ("a", "b"):
        assert ours["function"]["parameters"]["properties"][key] == theirs["function"]["parameters"]["properties"][key]


def test_binding_coerces_and_reports() -> None:
    tool = Tool(convert)
    assert tool(ToolCall("convert", {"amount": "1,500", "unit": "km"})).output == "1500.0 km"
    bad_enum = tool(ToolCall("convert", {"amount": 1, "unit": "miles"}))
    assert not bad_enum.ok and bad_enum.error == "arguments" and "must be one of ['km', 'mi']" in bad_enum.output
    unexpected = tool(ToolCall("convert", {"amount": 1, "unit": "km", "precize": True}))
    assert "unexpected argument 'precize'" in unexpected.output and "Did you mean 'precise'?" in unexpected.output
    wrong_type = tool(ToolCall("convert", {"amount": "lots", "unit": "km"}))
    assert "expects number, got str 'lots'" in wrong_type.output
    positional = tool(ToolCall("convert", positional="3"))
    assert positional.error == "arguments" and "needs named arguments" in positional.output


def test_positional_binds_to_the_single_required_parameter() -> None:
    def echo(text: str, upper: bool = False) -> str:
        """Echo text.

        Args:
            text: What to echo.
            upper: Upper-case it.
        """
        return text.upper() if upper else text

    assert Tool(echo)(ToolCall("echo", positional="hi there")).output == "hi there"


def test_exceptions_become_results() -> None:
    def boom(x: int) -> int:
        """Fail.

        Args:
            x: Anything.
        """
        raise RuntimeError("kaput")

    result = Tool(boom)(ToolCall("boom", {"x": 1}))
    assert not result.ok and result.error == "exception" and result.output == "Error: RuntimeError: kaput"


def test_time_limit_interrupts_python_code() -> None:
    def spin(n: int) -> int:
        """Loop forever.

        Args:
            n: Ignored.
        """
        while True:
            n += 1

    start = time.perf_counter()
    result = Tool(spin, timeout=0.05)(ToolCall("spin", {"n": 0}))
    assert result.error == "timeout" and "timed out after 0.05 s" in result.output
    assert time.perf_counter() - start < 2.0  # interrupted, not run to completion


def test_output_limit() -> None:
    def big(n: int) -> str:
        """Big output.

        Args:
            n: Characters.
        """
        return "x" * n

    out = Tool(big, max_output_chars=100)(ToolCall("big", {"n": 10_000})).output
    assert out.startswith("x" * 100) and out.endswith("[output truncated: 9900 more characters]")
    assert len(out) < 200


def test_structured_output_is_json() -> None:
    def lookup(key: str) -> dict:
        """Look up.

        Args:
            key: Key.
        """
        return {"key": key, "value": 3}

    assert Tool(lookup)(ToolCall("lookup", {"key": "a"})).output == '{"key": "a", "value": 3}'


def test_bad_tool_definitions_raise() -> None:
    with pytest.raises(TypeError, match="Expected a callable tool"):
        Tool(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout > 0"):
        Tool(convert, timeout=0)
