"""The python protocol (BFCL's call lists): forms, literals, rejections, round trips, hostile text."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolenv.protocols import PythonProtocol, make_protocol
from toolenv.protocols.python_calls import bfcl_system_prompt, parse_python_calls
from toolenv.tools.base import Tool
from toolenv.types import ToolCall

p = PythonProtocol()
SIGS = {"cd": ["folder"], "sort": ["file_name"], "post_tweet": ["content", "tags", "mentions"], "ls": ["a"]}


def calls(text: str, tools: object = SIGS) -> list[tuple[str, dict]]:
    action = p.parse(text, tools)  # type: ignore[arg-type]
    assert action.kind == "call", action
    return [(c.name, dict(c.arguments)) for c in action.calls]


def test_registered_by_name() -> None:
    assert isinstance(make_protocol("python"), PythonProtocol)


@pytest.mark.parametrize(
    "text",
    [
        "[cd(folder='document'), ls(a=True)]",
        "  [cd(folder='document'),ls(a=True)]  ",
        "cd(folder='document'), ls(a=True)",
        "cd(folder='document')\nls(a=True)",
        "```python\n[cd(folder='document'), ls(a=True)]\n```",
        "```\ncd(folder='document')\nls(a=True)\n```",
        "`[cd(folder='document'), ls(a=True)]`",
    ],
)
def test_call_list_forms(text: str) -> None:
    assert calls(text) == [("cd", {"folder": "document"}), ("ls", {"a": True})]


def test_bare_single_call_and_dotted_names() -> None:
    assert calls("ls()") == [("ls", {})]
    assert calls("math.factorial(number=5)") == [("math.factorial", {"number": 5})]


def test_text_around_a_fence_is_the_thought() -> None:
    action = p.parse("I will list the files.\n```python\n[ls(a=True)]\n```", SIGS)
    assert action.kind == "call" and action.thought == "I will list the files."


def test_literals() -> None:
    text = "[f(a='x', b=-3, c=2.5e3, d=True, e=None, g=[1, -2.0, 'z'], h={'k': (1, 2)}, i=(), j=\"q\\\"uote\")]"
    ((name, args),) = calls(text)
    assert args == {"a": "x", "b": -3, "c": 2500.0, "d": True, "e": None, "g": [1, -2.0, "z"], "h": {"k": (1, 2)},
                    "i": (), "j": 'q"uote'}


def test_positional_arguments_are_bound_to_parameter_names() -> None:
    assert calls("sort('final_report.pdf')") == [("sort", {"file_name": "final_report.pdf"})]
    assert calls("post_tweet('hi', tags=['#a'], mentions=[])") == [
        ("post_tweet", {"content": "hi", "tags": ["#a"], "mentions": []})
    ]
    assert "multiple values" in (p.parse("sort('a', file_name='b')", SIGS).error or "")
    assert "at most 1 positional" in (p.parse("sort('a', 'b')", SIGS).error or "")


def test_positional_without_signatures() -> None:
    action = p.parse("calculator('2+3')", ["calculator"])
    assert action.calls[0].positional == "2+3" and not action.calls[0].arguments
    assert p.parse("mean([1, 2])", ["mean"]).calls[0].positional == "[1, 2]"
    assert "keywords" in (p.parse("f(1, 2)", ["f"]).error or "")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[cd(folder=document)]", "must be a literal"),
        ("[cd(folder=__import__('os').system('rm -rf /'))]", "must be a literal"),
        ("[cd(folder=lambda: 1)]", "must be a literal"),
        ("[cd(folder='a' + 'b')]", "must be a literal"),
        ("[cd(folder=[x for x in range(9)])]", "must be a literal"),
        ("[cd(folder={1, 2})]", "must be a literal"),
        ("[cd(folder=b'x')]", "must be a literal"),
        ("[cd(folder=ls())]", "must be a literal"),
        ("[__import__('os').system('ls')]", "named functions"),
        ("[().__class__.__bases__[0].__subclasses__()]", "named functions"),
        ("[(lambda: 1)()]", "named functions"),
        ("[getattr(os, 'system')('ls')]", "named functions"),
        ("[cd(*args)]", "*args"),
        ("[cd(**kwargs)]", "**kwargs"),
        ("[ls(), 42]", "only function calls"),
        ("import os\nls()", "only function calls"),
        ("ls()\nx = 1", "only function calls"),
        ("[ls(a=True), cd(folder='x'", "Could not parse"),
    ],
)
def test_rejections(text: str, message: str) -> None:
    action = p.parse(text, SIGS)
    assert action.kind == "invalid" and message in (action.error or ""), action


@pytest.mark.parametrize("text", ["I moved the file.", "[]", "Done", "import os", "42", "[1, 2]", "Note (important): no."])
def test_answers(text: str) -> None:
    action = p.parse(text, SIGS)
    assert action.kind == "answer" and action.answer == text


def test_empty_is_invalid() -> None:
    assert p.parse("   ", SIGS).kind == "invalid"


def test_parse_python_calls_never_evaluates() -> None:
    assert isinstance(parse_python_calls("[f(x=open('/etc/passwd').read())]"), str)


@pytest.mark.parametrize(
    "call",
    [
        ToolCall("cd", {"folder": "temp"}),
        ToolCall("f", {"a": -1.5, "b": [1, "two", None], "c": {"k": True}, "d": (1, 2), "e": "it's \"q\""}),
        ToolCall("ls"),
        ToolCall("calculator", positional="2+3"),
    ],
)
def test_round_trip(call: ToolCall) -> None:
    action = p.parse(p.format_call(call), [call.name])
    assert action.kind == "call" and len(action.calls) == 1
    assert dict(action.calls[0].arguments) == dict(call.arguments)
    assert action.calls[0].positional == call.positional


def test_format_calls_is_one_list() -> None:
    text = p.format_calls([ToolCall("cd", {"folder": "a"}), ToolCall("ls", {"a": True})])
    assert text == "[cd(folder='a'), ls(a=True)]"
    assert calls(text) == [("cd", {"folder": "a"}), ("ls", {"a": True})]


def test_instructions_are_bfcl_prompt() -> None:
    def ls(a: bool = False) -> str:
        """List files.

        Args:
            a: Show hidden files.
        """
        return ""

    text = p.instructions([Tool(ls)])
    assert text.startswith("You are an expert in composing functions.You are given a question")
    assert "[func_name1(params_name1=params_value1" in text and '"name": "ls"' in text
    assert text == bfcl_system_prompt([Tool(ls).schema["function"]])


HOSTILE = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=["Cs"]), max_size=200),
    st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
    st.text(alphabet="[](){}'\",=.:_-+*/ab1\n`", max_size=200),
    st.integers(1, 100_000).map(lambda n: "[f(x=" + "[" * n + "]" * n + ")]"),
    st.integers(1, 100_000).map(lambda n: "f(" * n + ")" * n),
    st.sampled_from(
        [
            "\x00" * 100_000,
            "[f(x=" + "9" * 5_000 + ")]",
            "[f(x='" + "a" * 100_000 + "')]",
            "[f(x=1e999999)]",
            "[f(" + ", ".join(f"a{i}={i}" for i in range(5_000)) + ")]",
            "```python\n" * 1_000,
            "\ud800\udfff",
            "[f(x=-(-(-1)))]",
            "[f(x=1j)]",
            "[f(x=...)]",
            "[f(x=[" + "{'a': [" * 300 + "]}" * 300 + "])]",
        ]
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(text=HOSTILE, signatures=st.sampled_from([(), ["f"], {"f": ["x"]}]))
def test_hostile_text_never_raises(text: str, signatures: object) -> None:
    action = p.parse(text, signatures)  # type: ignore[arg-type]
    assert action.kind in ("call", "answer", "invalid")
    if action.kind == "invalid":
        assert action.error
    for call in action.calls:
        p.format_call(call)


@given(st.lists(st.tuples(st.sampled_from(["f", "g.h", "é"]), st.text(max_size=6), st.sampled_from(["", "\n", "\r\n", "\r", " "])),
                min_size=1, max_size=8))
@settings(max_examples=150, deadline=None)
def test_source_segments_equal_ast_get_source_segment(parts: list[tuple[str, str, str]]) -> None:
    """The linear-time segment helper gives exactly what ``ast.get_source_segment`` gives."""
    import ast

    from toolenv.protocols.python_calls import source_segment

    src = "[" + ", ".join(f"{name}(a={text!r},{sep}b=[1,{sep}2])" for name, text, sep in parts) + "]"
    try:
        tree = ast.parse(src, mode="eval")
    except SyntaxError:
        return
    for node in ast.walk(tree):
        if hasattr(node, "lineno"):
            assert source_segment(src, node) == ast.get_source_segment(src, node)
