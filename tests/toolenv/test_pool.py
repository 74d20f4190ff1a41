"""The API pool: specs, docs, fresh tools, custom functions, BFCL classes, errors."""

from __future__ import annotations

import textwrap
import types
from pathlib import Path

import pytest

from tests.conftest import require
from toolenv.tools import Tool
from toolenv.tools.pool import APICHAIN_APIS, Api, api_pool, bfcl_default_config, make_tools
from toolenv.types import ToolCall

_JSON_TYPES = {"string", "integer", "number", "boolean", "array", "object", "null"}


def word_count(text: str, unique: bool = False) -> int:
    """Count the words of a text.

    Args:
        text: The text to count, e.g. "to be or not to be".
        unique: Count each distinct word once.

    Returns:
        The number of words.
    """
    words = text.split()
    return len(set(words)) if unique else len(words)


def _types(schema: dict) -> set[str]:
    out = {schema["type"]} if "type" in schema else set()
    for sub in schema.get("properties", {}).values():
        out |= _types(sub)
    if isinstance(schema.get("items"), dict):
        out |= _types(schema["items"])
    return out


# ------------------------------------------------------------------------------------ APIChain
def test_apichain_spec_gives_the_nine_apis_in_env_order() -> None:
    pool = api_pool(["apichain"])
    assert [a.name for a in pool] == list(APICHAIN_APIS)
    assert {a.source for a in pool} == {"apichain"}
    for api in pool:
        assert set(api.doc) == {"name", "description", "parameters"}
        assert api.doc["name"] == api.name and api.doc["description"]
        assert api.doc["parameters"]["type"] == "object"
        assert _types(api.doc["parameters"]) <= _JSON_TYPES


def test_single_api_and_calculator_specs() -> None:
    pool = api_pool(["apichain:get_weather", "calculator"])
    assert [(a.name, a.source) for a in pool] == [("get_weather", "apichain"), ("calculator", "calculator")]
    assert api_pool("apichain:calculator") == api_pool("calculator")
    weather = pool[0].make_tool()(ToolCall("get_weather", {"city": "Oslo", "day": "Mon"}))
    assert weather.ok and '"day": "Monday"' in weather.output
    assert pool[1].make_tool()(ToolCall("calculator", {"expression": "6*7"})).output == "42"


def test_make_tool_is_fresh_and_takes_limits() -> None:
    api = api_pool("apichain:get_city")[0]
    a, b = api.make_tool(), api.make_tool(timeout=2.5, max_output_chars=20)
    assert a is not b and isinstance(a, Tool)
    assert b.timeout == 2.5 and b.max_output_chars == 20
    assert "[output truncated" in b(ToolCall("get_city", {"city": "Paris"})).output
    failed = a(ToolCall("get_city", {"city": "Pariss"}))
    assert not failed.ok and "Did you mean 'Paris'?" in failed.output


def test_pool_is_deduplicated_and_ordered() -> None:
    pool = api_pool(["calculator", "apichain:get_city", "apichain", "calculator"])
    assert [a.name for a in pool] == ["calculator", "get_city", *[n for n in APICHAIN_APIS if n != "get_city"]]


def test_doc_text_lists_parameters_and_returns() -> None:
    text = api_pool("apichain:convert_units")[0].doc_text()
    assert text.splitlines()[0] == "API: convert_units"
    assert "- value (number, required): The number to convert" in text
    assert "- to_unit (string, required)" in text
    assert text.splitlines()[-1] == "Returns: value (rounded to 4 decimals) and unit."


# -------------------------------------------------------------------------------------- custom
def test_custom_callable_needs_nothing_but_the_function() -> None:
    (api,) = api_pool([word_count])
    assert api.name == "word_count"
    assert api.source == "custom:tests.toolenv.test_pool:word_count"
    assert api.doc["parameters"] == {
        "type": "object",
        "properties": {"text": {"type": "string", "description": 'The text to count, e.g. "to be or not to be".'},
                       "unique": {"type": "boolean", "description": "Count each distinct word once."}},
        "required": ["text"],
    }
    assert api.returns == "The number of words."
    assert "- unique (boolean, optional): Count each distinct word once." in api.doc_text()
    assert api.make_tool()(ToolCall("word_count", {"text": "a b a", "unique": "true"})).output == "2"


def test_custom_module_spec() -> None:
    (api,) = api_pool(["tests.toolenv.test_pool:word_count"])
    assert api == api_pool([word_count])[0]
    assert api.make_tool()(ToolCall("word_count", {"text": "x y"})).output == "2"


def test_custom_file_spec_and_star(tmp_path: Path) -> None:
    path = tmp_path / "my_tools.py"
    path.write_text(textwrap.dedent('''
        import math

        def shout(text: str) -> str:
            """Upper-case a text.

            Args:
                text: What to shout.
            """
            return text.upper()

        def circle_area(radius: float) -> float:
            """Area of a circle.

            Args:
                radius: The radius.
            """
            return math.pi * radius ** 2

        def _helper() -> None:
            pass
    '''))
    (shout,) = api_pool([f"{path}:shout"])
    assert shout.source == "custom:my_tools:shout"
    assert shout.make_tool()(ToolCall("shout", {"text": "hi"})).output == "HI"
    assert [a.name for a in api_pool([f"{path}:*"])] == ["shout", "circle_area"]


def test_tool_objects_pass() -> None:
    tool = Tool(word_count, name="count_words", description="Count words.")
    (api,) = api_pool([tool])
    assert (api.name, api.doc["description"]) == ("count_words", "Count words.")
    made = api.make_tool()
    assert made is not tool and made.name == "count_words"
    assert made(ToolCall("count_words", {"text": "a b c"})).output == "3"


def test_custom_tools_run_in_an_env() -> None:
    from toolenv.core import ToolEnv
    from toolenv.datasets import ListTaskSet
    from toolenv.types import Task

    tasks = ListTaskSet([Task("t-0", "How many words are in 'a b c'?", "3")], name="t", split="test")
    env = ToolEnv(tasks, make_tools(api_pool([word_count, "calculator"])), protocol="react")
    env.reset(seed=0)
    obs, *_ = env.step('Action: word_count\nAction Input: {"text": "a b c"}')
    assert obs == "Observation: 3"


# -------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("calculater", "Did you mean 'calculator'?"),
        ("apichian", "Did you mean 'apichain'?"),
        ("apichain:get_cty", "Did you mean 'get_city'?"),
        ("tests.toolenv.test_pool:word_cont", "Did you mean 'word_count'?"),
        ("no_such_module_xyz:fn", "Expected an importable module"),
        ("", "Expected a pool spec"),
    ],
)
def test_unknown_specs_raise_with_a_hint(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        api_pool([spec])


def test_name_clash_between_sources_raises() -> None:
    def get_city(city: str) -> str:
        """Another get_city.

        Args:
            city: A city.
        """
        return city

    with pytest.raises(ValueError, match="Expected unique API names"):
        api_pool(["apichain:get_city", get_city])


def test_api_without_factory_cannot_make_tools() -> None:
    with pytest.raises(ValueError, match="Expected an Api made by api_pool"):
        Api("x", {"name": "x", "description": "", "parameters": {}}, "custom:x").make_tool()


# ---------------------------------------------------------------------------------------- BFCL
@pytest.fixture(scope="module")
def bfcl() -> types.ModuleType:
    require("mpmath", "pip install --no-deps bfcl-eval==2026.3.23 && pip install mpmath")
    return require("bfcl_eval", "pip install --no-deps bfcl-eval==2026.3.23 && pip install mpmath")


def test_bfcl_pool_covers_every_multi_turn_class(bfcl: types.ModuleType) -> None:
    pool = api_pool(["bfcl"])
    classes = {a.bfcl_class for a in pool}
    assert classes == {"GorillaFileSystem", "MathAPI", "MessageAPI", "TwitterAPI", "TicketAPI", "TradingBot",
                       "TravelAPI", "VehicleControlAPI"}
    assert len({a.name for a in pool}) == len(pool) > 100
    for api in pool:
        assert api.source == f"bfcl:{api.bfcl_class}"
        assert _types(api.doc["parameters"]) <= _JSON_TYPES, api.name
        assert api.doc["description"] and not api.doc["description"].endswith("Python 3 syntax.")


def test_bfcl_class_and_function_specs(bfcl: types.ModuleType) -> None:
    fs = api_pool("bfcl:GorillaFileSystem")
    assert [a.name for a in fs][:3] == ["cat", "cd", "cp"]
    (ls,) = api_pool("bfcl:GorillaFileSystem.ls")
    assert ls == next(a for a in fs if a.name == "ls")
    assert "Returns: current_directory_content (array of string)" in ls.doc_text()
    with pytest.raises(ValueError, match="Did you mean 'GorillaFileSystem'"):
        api_pool("bfcl:GorillaFileSytem")
    with pytest.raises(ValueError, match="Did you mean 'ls'"):
        api_pool("bfcl:GorillaFileSystem.lss")


def test_bfcl_tools_run_on_fresh_instances_with_the_default_scenario(bfcl: types.ModuleType) -> None:
    assert "root" in bfcl_default_config("GorillaFileSystem")
    by_name = {a.name: a for a in api_pool("bfcl:GorillaFileSystem")}
    cd, ls = by_name["cd"].make_tool(), by_name["ls"].make_tool()
    top = ls(ToolCall("ls", {})).output
    assert top == '{"current_directory_content": ["document", "archive"]}'
    assert cd(ToolCall("cd", {"folder": "document"})).ok
    assert ls(ToolCall("ls", {})).output == top  # separate make_tool() calls: separate instances


def test_make_tools_shares_one_instance_per_class(bfcl: types.ModuleType) -> None:
    tools = {t.name: t for t in make_tools(api_pool(["bfcl:GorillaFileSystem", "calculator"]))}
    assert tools["cd"](ToolCall("cd", {"folder": "document"})).ok
    assert "final_report.pdf" in tools["ls"](ToolCall("ls", {})).output
    failed = tools["cat"](ToolCall("cat", {"file_name": "nope.txt"}))
    assert not failed.ok and "nope.txt" in failed.output
    bad = tools["cd"](ToolCall("cd", {"dir": "x"}))
    assert not bad.ok and bad.error == "arguments"
    again = {t.name: t for t in make_tools(api_pool(["bfcl:GorillaFileSystem"]))}
    assert "archive" in again["ls"](ToolCall("ls", {})).output  # a new call: a fresh scenario


def test_every_bfcl_class_loads_its_default_scenario(bfcl: types.ModuleType) -> None:
    probes = {
        "MathAPI": ("add", {"a": 2, "b": 3}, "5"),
        "TradingBot": ("get_current_time", {}, "current_time"),
        "VehicleControlAPI": ("check_tire_pressure", {}, "tire"),
        "TravelAPI": ("list_all_airports", {}, "["),
        "MessageAPI": ("list_users", {}, "user_list"),
        "TwitterAPI": ("get_user_stats", {"username": "nobody"}, ""),
        "TicketAPI": ("get_user_tickets", {}, ""),
        "GorillaFileSystem": ("pwd", {}, "current_working_directory"),
    }
    for class_name, (name, args, expected) in probes.items():
        tools = {t.name: t for t in make_tools(api_pool(f"bfcl:{class_name}"))}
        result = tools[name](ToolCall(name, args))
        assert expected in result.output, (class_name, result.output)
