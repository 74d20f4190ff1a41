"""The three action protocols, each on its own: calls, answers, malformed text, round trips."""

from __future__ import annotations

import pytest

from toolenv.protocols import JsonProtocol, ReactProtocol, TriceProtocol, make_protocol
from toolenv.types import ToolCall

TOOLS = ["calculator"]


class TestTrice:
    p = TriceProtocol()

    def test_whole_call(self) -> None:
        a = self.p.parse("  calculator((12/60)*50) ", TOOLS)
        assert a.kind == "call" and a.calls[0].name == "calculator" and a.calls[0].positional == "(12/60)*50"

    def test_embedded_call_to_known_tool(self) -> None:
        a = self.p.parse("Let me use calculator(3*(4+5)) here.", TOOLS)
        assert a.kind == "call" and a.calls[0].positional == "3*(4+5)"

    def test_unknown_whole_call_is_a_call_the_env_rejects(self) -> None:
        a = self.p.parse("calcuator(2+2)", TOOLS)
        assert a.kind == "call" and a.calls[0].name == "calcuator"

    def test_answers(self) -> None:
        assert self.p.parse("She earned $10.", TOOLS).answer == "She earned $10."
        assert self.p.parse("f(x) = 3 so 3", TOOLS).kind == "answer"

    def test_unclosed_call_is_invalid(self) -> None:
        a = self.p.parse("calculator((1+2)", TOOLS)
        assert a.kind == "invalid" and "closing parenthesis" in (a.error or "")

    def test_round_trip(self) -> None:
        text = self.p.format_call(ToolCall("calculator", {"expression": "48/2"}))
        assert text == "calculator(48/2)"
        assert self.p.parse(text, TOOLS).calls[0].positional == "48/2"


class TestReact:
    p = ReactProtocol()

    def test_call_with_json(self) -> None:
        a = self.p.parse('Thought: multiply\nAction: calculator\nAction Input: {"expression": "12*7"}\n', TOOLS)
        assert a.kind == "call" and a.thought == "multiply" and dict(a.calls[0].arguments) == {"expression": "12*7"}

    def test_json_between_first_and_last_brace(self) -> None:
        a = self.p.parse('Action: calculator\nAction Input: here {"expression": "{1}"} ok', TOOLS)
        assert dict(a.calls[0].arguments) == {"expression": "{1}"}

    def test_plain_input_is_positional(self) -> None:
        a = self.p.parse("Action: calculator\nAction Input: 2+3", TOOLS)
        assert a.calls[0].positional == "2+3"

    def test_hallucinated_observation_is_cut(self) -> None:
        a = self.p.parse('Action: calculator\nAction Input: {"expression": "1+1"}\nObservation: 3\nFinal Answer: 3', TOOLS)
        assert a.kind == "call"

    def test_final_answer_first_wins(self) -> None:
        a = self.p.parse("Thought: done\nFinal Answer: 84\nAction: calculator", TOOLS)
        assert a.kind == "answer" and a.answer == "84\nAction: calculator"

    @pytest.mark.parametrize(
        ("text", "needle"),
        [
            ("just some text", "Could not find 'Action:'"),
            ("Action: calculator\nAction Input: {bad json}", "not valid JSON"),
            ("Action: calculator\nAction Input: {\"a\": 1", "not valid JSON"),
            ("Action:   \nAction Input: {}", "names no tool"),
        ],
    )
    def test_malformed(self, text: str, needle: str) -> None:
        a = self.p.parse(text, TOOLS)
        assert a.kind == "invalid" and needle in (a.error or "")

    def test_round_trip(self) -> None:
        call = ToolCall("calculator", {"expression": "2+3"})
        parsed = self.p.parse(self.p.format_call(call), TOOLS)
        assert parsed.calls[0].name == "calculator" and dict(parsed.calls[0].arguments) == {"expression": "2+3"}
        assert self.p.parse(self.p.format_answer("5"), TOOLS).answer == "5"


class TestJson:
    p = JsonProtocol()

    def test_tagged_calls(self) -> None:
        text = (
            '<tool_call>{"name": "calculator", "arguments": {"expression": "1+1"}}</tool_call>\n'
            '<tool_call>{"name": "calculator", "arguments": "{\\"expression\\": \\"2+2\\"}"}</tool_call>'
        )
        a = self.p.parse(text, TOOLS)
        assert a.kind == "call" and [dict(c.arguments)["expression"] for c in a.calls] == ["1+1", "2+2"]

    def test_unclosed_tag_and_bare_object(self) -> None:
        assert self.p.parse('<tool_call>{"name": "calculator", "arguments": {}}', TOOLS).kind == "call"
        assert self.p.parse('{"name": "calculator", "arguments": {"expression": "3"}}', TOOLS).kind == "call"

    def test_openai_nesting(self) -> None:
        a = self.p.parse('<tool_call>{"function": {"name": "calculator", "arguments": {"expression": "3"}}}</tool_call>')
        assert a.calls[0].name == "calculator"

    @pytest.mark.parametrize(
        ("text", "needle"),
        [
            ("<tool_call>{not json}</tool_call>", "not valid JSON"),
            ("<tool_call>[1, 2]</tool_call>", "must be a JSON object"),
            ('<tool_call>{"arguments": {}}</tool_call>', 'no "name"'),
            ('<tool_call>{"name": "c", "arguments": [1]}</tool_call>', "must be a JSON object"),
            ('<tool_call>{"name": "c", "arguments": "{oops"}</tool_call>', "not valid JSON"),
            ("<think>only thinking</think>", "Empty response"),
        ],
    )
    def test_malformed(self, text: str, needle: str) -> None:
        a = self.p.parse(text, TOOLS)
        assert a.kind == "invalid" and needle in (a.error or "")

    def test_answer_drops_thinking(self) -> None:
        a = self.p.parse("<think>6*7</think> 42")
        assert a.kind == "answer" and a.answer == "42" and a.thought == "6*7"


def test_make_protocol_names_the_choices() -> None:
    with pytest.raises(ValueError, match=r"expected one of \['json', 'python', 'react', 'trice'\]\. Did you mean 'react'\?"):
        make_protocol("reakt")


@pytest.mark.parametrize("name", ["react", "json", "trice", "python"])
def test_deeply_nested_input_is_a_malformed_action(name: str) -> None:
    deep = '{"a":' * 100_000 + "1" + "}" * 100_000
    texts = [f"Action: f\nAction Input: {deep}", f"<tool_call>{deep}</tool_call>",
             '<tool_call>{"name": "f", "arguments": "' + "[" * 100_000 + '"}</tool_call>', "[f(a=" + "[" * 100_000 + ")]"]
    for text in texts:
        action = make_protocol(name).parse(text, ["f"])
        assert action.kind in ("call", "answer", "invalid")
