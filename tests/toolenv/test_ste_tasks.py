"""STE's held-out call tests: generated APIChain queries and BFCL tests, gold that passes the AST check and runs."""

from __future__ import annotations

import json
import types

import gymnasium as gym
import pytest

import toolenv  # noqa: F401  (registers the ids)
import toolenv.datasets.bfcl as bfcl_data
import toolenv.tools.pool as pool_module
from tests.conftest import require
from toolenv.datasets import DataNotFoundError
from toolenv.datasets.ste import (
    BFCL_TEST_CATEGORIES,
    CallTest,
    apichain_call_tests,
    bfcl_call_tests,
    bfcl_function_doc,
    call_to_answer,
)
from toolenv.protocols import PythonProtocol
from toolenv.tools.pool import APICHAIN_APIS, api_pool, make_tools
from toolenv.types import ToolCall

ALL_APIS = (*APICHAIN_APIS, "calculator")


def run_gold(test: CallTest, call: ToolCall | None = None) -> tuple[bool, str]:
    tools = {t.name: t for t in make_tools(api_pool(list(test.apis)))}
    call = call or test.gold_call()
    result = tools[call.name](call)
    return result.ok, result.output


# -------------------------------------------------------------------------------- APIChain
@pytest.fixture(scope="module")
def apichain_tests() -> list[CallTest]:
    return apichain_call_tests(50)


def test_every_api_gets_single_api_tests(apichain_tests: list[CallTest]) -> None:
    singles = [t for t in apichain_tests if t.env_id is None]
    for name in ALL_APIS:
        mine = [t for t in singles if t.gold_name == name]
        assert len(mine) >= (20 if name == "get_department" else 40), name
        assert all(len(t.apis) == 1 and t.functions[0]["name"] == name for t in mine)
    assert len({t.id for t in apichain_tests}) == len(apichain_tests)
    assert len({t.query for t in singles}) == len(singles)


def test_splits_never_share_a_query() -> None:
    test = {t.query.casefold() for t in apichain_call_tests(1000, multi_step=0)}
    train = {t.query.casefold() for t in apichain_call_tests(1000, split="train", multi_step=0)}
    other_seed = {t.query.casefold() for t in apichain_call_tests(1000, split="train", seed=5, multi_step=0)}
    assert len(test) > 1000 and len(train) > 1000
    assert not test & train and not test & other_seed


def test_generation_is_deterministic_and_seeded() -> None:
    a = [t.to_dict() for t in apichain_call_tests(10, multi_step=3)]
    assert a == [t.to_dict() for t in apichain_call_tests(10, multi_step=3)]
    assert a != [t.to_dict() for t in apichain_call_tests(10, seed=1, multi_step=3)]
    tests = [CallTest.from_dict(json.loads(json.dumps(d))) for d in a]  # through JSON and back
    assert tests == apichain_call_tests(10, multi_step=3)


def test_gold_passes_the_check_and_runs(apichain_tests: list[CallTest]) -> None:
    for test in apichain_tests:
        assert test.check(test.gold_calls())["valid"], test.id
        ok, output = run_gold(test)
        assert ok, (test.id, output)


def test_every_allowed_value_runs_alike(apichain_tests: list[CallTest]) -> None:
    for test in apichain_tests:
        name, params = next(iter(test.gold.items()))
        base = test.gold_call()
        _, expected = run_gold(test, base)
        for key, values in params.items():
            for value in values:
                call = ToolCall(name, {**base.arguments, key: value})
                assert test.check([call])["valid"], (test.id, key, value)
                ok, output = run_gold(test, call)
                assert ok, (test.id, key, value, output)
                if name not in ("get_distance",):  # get_distance echoes the order of the cities
                    assert output == expected, (test.id, key, value)


def test_check_judges_api_match_and_arguments() -> None:
    (test,) = apichain_call_tests(1, apis=["get_city"], multi_step=0)
    city = test.gold_call().arguments["city"]
    assert test.check([ToolCall("get_city", {"city": city.upper()})])["valid"]
    assert test.check([ToolCall("get_city", positional=city)])["valid"]
    wrong_value = test.check([{"name": "get_city", "arguments": {"city": "Atlantis"}}])
    assert wrong_value == {"valid": False, "api_match": True, "error": wrong_value["error"],
                           "error_type": "value_error:string"}
    wrong_api = test.check([ToolCall("get_country", {"country": city})])
    assert not wrong_api["valid"] and not wrong_api["api_match"]
    extra = test.check([ToolCall("get_city", {"city": city, "country": "X"})])
    assert not extra["valid"] and extra["api_match"]
    assert test.check([])["error_type"] == "ast_decoder:decoder_failed"
    assert test.check([ToolCall("get_city", {"city": city}), ToolCall("get_city", {"city": "Oslo"})])["valid"]


def test_number_arguments_take_ints_and_floats() -> None:
    for test in apichain_call_tests(20, apis=["apichain:convert_units"], multi_step=0):
        value = test.gold_call().arguments["value"]
        assert isinstance(value, float)
        if value.is_integer():
            assert test.check([ToolCall("convert_units", {**test.gold_call().arguments, "value": int(value)})])["valid"]
        assert not test.check([ToolCall("convert_units", {**test.gold_call().arguments, "value": value + 1})])["valid"]


def test_multi_step_tests_run_end_to_end(apichain_tests: list[CallTest]) -> None:
    chains = [t for t in apichain_tests if t.env_id is not None]
    assert len(chains) == 50
    env = gym.make(chains[0].env_id, protocol="react", **chains[0].env_kwargs)
    for test in chains[:12]:
        assert test.env_id == "toolenv/APIChain-Test-v1" and test.index is not None
        assert {f["name"] for f in test.functions} == set(ALL_APIS)
        obs, info = env.reset(options={"index": test.index})
        assert info["task"]["question"] == test.query
        assert env.unwrapped.task.solution[0] == test.gold_call()
        for action in env.unwrapped.gold_actions():
            *_, terminated, _, info = env.step(action)
        assert terminated and info["success"], test.id


def test_apis_filter_and_errors() -> None:
    tests = apichain_call_tests(5, apis=["find_employee", "apichain:get_department"], multi_step=5)
    assert {t.gold_name for t in tests if t.env_id is None} == {"find_employee", "get_department"}
    chains = [t for t in tests if t.env_id is not None]
    assert len(chains) == 5 and {t.gold_name for t in chains} <= {"find_employee", "get_department"}
    assert apichain_call_tests(0, multi_step=0) == []
    with pytest.raises(ValueError, match="Did you mean 'get_city'"):
        apichain_call_tests(5, apis=["get_cty"])
    with pytest.raises(ValueError, match="Did you mean 'test'"):
        apichain_call_tests(5, split="tset")
    with pytest.raises(ValueError, match="non-negative int"):
        apichain_call_tests(-1)


def test_call_to_answer_and_bfcl_doc() -> None:
    doc = {"name": "f", "parameters": {"type": "object", "properties": {
        "x": {"type": "number"}, "tags": {"type": "array", "items": {"type": "string"}},
        "opts": {"type": "object"}, "flag": {"type": "boolean", "default": False}}, "required": ["x"]}}
    answer = call_to_answer(ToolCall("f", {"x": 3, "tags": ("a", "b"), "opts": {"k": 1}}), doc)
    assert answer == {"f": {"x": [3.0], "tags": [["a", "b"]], "opts": [{"k": [1]}], "flag": ["", False]}}
    converted = bfcl_function_doc(doc)
    assert converted["parameters"]["type"] == "dict"
    assert converted["parameters"]["properties"]["x"]["type"] == "float"
    assert converted["parameters"]["properties"]["opts"]["type"] == "dict"
    assert bfcl_function_doc(converted) == converted
    test = CallTest("t", "q", (), (doc,), answer)
    assert test.check([ToolCall("f", {"x": 3, "tags": ["A", "b"], "opts": {"k": 1}, "flag": False})])["valid"]
    assert not test.check([ToolCall("f", {"x": 3, "tags": ["a"], "opts": {"k": 1}})])["valid"]


# ------------------------------------------------------------------------------------ BFCL
@pytest.fixture(scope="module")
def bfcl() -> types.ModuleType:
    require("mpmath", "pip install --no-deps bfcl-eval==2026.3.23 && pip install mpmath")
    return require("bfcl_eval", "pip install --no-deps bfcl-eval==2026.3.23 && pip install mpmath")


@pytest.mark.parametrize("category", BFCL_TEST_CATEGORIES)
def test_bfcl_gold_passes_the_check(bfcl: types.ModuleType, category: str) -> None:
    tests = bfcl_call_tests(category)
    assert len(tests) >= 200
    for test in tests:
        assert test.check(test.gold_calls())["valid"], test.id
        if test.gold:
            assert test.check([ToolCall("no_such_function", {})])["api_match"] is False


def test_bfcl_multi_turn_tests_match_the_entries(bfcl: types.ModuleType) -> None:
    tests = bfcl_call_tests("multi_turn_base")
    tasks = bfcl_data.load_bfcl_multi_turn("base")
    assert bfcl_call_tests("base", 5) == tests[:5]
    first = tests[0]
    assert (first.id, first.gold, first.turn, first.index) == (
        "multi_turn_base_0-turn0", {"cd": {"folder": ["document"]}}, 0, 0)
    assert first.apis == ("bfcl:TwitterAPI", "bfcl:GorillaFileSystem")
    assert first.query == tasks[0].meta["turns"][0]
    for test in tests:
        task = tasks[test.index]
        assert test.query == task.meta["turns"][test.turn]
        assert test.gold_name in {f["name"] for f in test.functions}
        assert {f["name"] for f in test.functions} <= {a.name for a in api_pool(list(test.apis))}
        assert test.gold_name in task.meta["ground_truth"][test.turn][0]


def test_bfcl_miss_func_offers_only_what_was_given(bfcl: types.ModuleType) -> None:
    tasks = bfcl_data.load_bfcl_multi_turn("miss_func")
    for test in bfcl_call_tests("multi_turn_miss_func"):
        meta = tasks[test.index].meta
        later = {d["name"] for turn, docs in meta["missed_functions"].items() if int(turn) > test.turn for d in docs}
        assert not later & {f["name"] for f in test.functions}, test.id


def test_bfcl_multi_turn_gold_runs_in_the_env(bfcl: types.ModuleType) -> None:
    """Replaying each entry's earlier turns, every test's gold call runs and its turn still passes BFCL's checks."""
    from toolenv.envs.bfcl import _signatures_of

    python = PythonProtocol()
    by_entry: dict[int, dict[int, CallTest]] = {}
    for test in bfcl_call_tests("multi_turn_base"):
        assert test.index is not None and test.turn is not None
        by_entry.setdefault(test.index, {})[test.turn] = test
    env = gym.make("toolenv/BFCLMultiTurn-v0", max_episode_steps=1_000)
    for index, turns in by_entry.items():
        env.reset(options={"index": index})
        task = env.unwrapped.task
        signatures = {m: p for c in task.meta["involved_classes"] for m, p in _signatures_of(c).items()}
        for k, strings in enumerate(task.meta["ground_truth"]):
            calls = env.unwrapped._parse_truth(strings, signatures, task.id)
            if k in turns:
                *_, info = env.step(python.format_calls([turns[k].gold_call()]))
                assert info["calls_ok"] == [True], (turns[k].id, info["tool_outputs"])
                calls = calls[1:]
            if calls:
                env.step(python.format_calls(calls))
            *_, info = env.step("Done.")
            assert info["turn_verdict"]["valid"], (task.id, k)


def test_bfcl_single_turn_gold_solves_the_env(bfcl: types.ModuleType) -> None:
    python = PythonProtocol()
    for category in ("simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance"):
        tests = bfcl_call_tests(category, 15)
        assert len(tests) == 15
        env = gym.make(tests[0].env_id, **tests[0].env_kwargs)
        for test in tests:
            _, info = env.reset(options={"index": test.index})
            assert info["task"]["id"] == test.id and info["prompt"] == test.query and test.apis == ()
            reply = python.format_calls(test.gold_calls()) if test.gold else "No function fits."
            *_, info = env.step(reply)
            assert info["success"], test.id


def test_bfcl_irrelevance_wants_no_call(bfcl: types.ModuleType) -> None:
    test = bfcl_call_tests("irrelevance", 1)[0]
    assert test.gold == {} and test.gold_calls() == []
    assert test.check([])["valid"]
    name = test.functions[0]["name"]
    assert not test.check([ToolCall(name, {})])["valid"]
    with pytest.raises(ValueError, match="no call is right"):
        test.gold_call()


def test_bfcl_classes_filter_and_errors(bfcl: types.ModuleType) -> None:
    trading = bfcl_call_tests("multi_turn_base", classes=["TradingBot"])
    assert trading and all(api_pool(f"bfcl:TradingBot.{t.gold_name}") for t in trading)
    assert len(bfcl_call_tests("multi_turn_base", 3, classes=["TradingBot"])) == 3
    with pytest.raises(ValueError, match="Did you mean 'TradingBot'"):
        bfcl_call_tests("multi_turn_base", classes=["TradeBot"])
    with pytest.raises(ValueError, match="Did you mean 'simple_python'"):
        bfcl_call_tests("simple_pyton")


def test_missing_bfcl_package_is_a_data_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = bfcl_data.importlib.util.find_spec
    monkeypatch.setattr(bfcl_data.importlib.util, "find_spec", lambda name, *a: None if name == "bfcl_eval" else real(name, *a))
    caches = (bfcl_data.load_bfcl_multi_turn, bfcl_data.load_bfcl_single_turn, pool_module.bfcl_classes)
    for cached in caches:
        cached.cache_clear()
    try:
        for call in (lambda: bfcl_call_tests("multi_turn_base"), lambda: bfcl_call_tests("simple_python"),
                     lambda: api_pool("bfcl")):
            with pytest.raises(DataNotFoundError, match="pip install --no-deps bfcl-eval"):
                call()
    finally:
        for cached in caches:
            cached.cache_clear()
