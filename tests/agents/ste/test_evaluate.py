"""STE evaluation: first-action metrics on fixed replies, end-to-end episodes, continual rounds."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from agents.ste.chat import ScriptedChatModel
from agents.ste.continual import ContinualConfig, continual_learning, round_data
from agents.ste.evaluate import call_metrics, evaluate_calls, evaluate_end_to_end, first_call_prompt, score_first_action
from toolenv.datasets.ste import CallTest, apichain_call_tests


@pytest.fixture(scope="module")
def weather() -> CallTest:
    return apichain_call_tests(1, apis=["get_weather"], multi_step=0)[0]


def _react(name: str, args: Any) -> str:
    payload = json.dumps(args) if isinstance(args, dict) else args
    return f"Thought: I should call {name}.\nAction: {name}\nAction Input: {payload}"


def test_first_action_scores(weather: CallTest) -> None:
    gold = weather.gold_call()
    right = score_first_action(weather, _react(gold.name, dict(gold.arguments)))
    assert (right.well_formed, right.api_match, right.correct) == (True, True, True)
    wrong_args = score_first_action(weather, _react(gold.name, {**gold.arguments, "city": "Nowhere"}))
    assert (wrong_args.well_formed, wrong_args.api_match, wrong_args.correct) == (True, True, False)
    wrong_api = score_first_action(weather, _react("get_city", {"city": "Paris"}))
    assert (wrong_api.well_formed, wrong_api.api_match, wrong_api.correct) == (True, False, False)
    answered = score_first_action(weather, "Thought: easy\nFinal Answer: sunny")
    assert (answered.well_formed, answered.api_match, answered.correct) == (True, False, False)
    positional = score_first_action(weather, f"Action: {gold.name}\nAction Input: Paris, Monday")
    assert (positional.well_formed, positional.api_match, positional.correct) == (True, True, False)


@pytest.mark.parametrize("text", ["", "I think it will rain.", "Action:", "Action: get_weather\nAction Input: {not json}",
                                  "Action: get_weather\nAction Input: {\"city\": [1, 2]", "\x00" * 50 + "{" * 100, "}{" * 1000])
def test_malformed_first_actions_are_scored_not_raised(weather: CallTest, text: str) -> None:
    r = score_first_action(weather, text)
    assert not r.correct and not r.api_match and not r.well_formed


def test_irrelevance_is_right_only_without_a_call(weather: CallTest) -> None:
    nothing = CallTest("irr-0", "Tell me a joke.", weather.apis, weather.functions, {}, category="irrelevance")
    assert score_first_action(nothing, "Final Answer: no tool fits").correct
    assert not score_first_action(nothing, _react("get_weather", {"city": "Paris", "day": "Monday"})).correct


def test_prompt_is_the_explore_envs_system_prompt(weather: CallTest) -> None:
    import gymnasium as gym

    env = gym.make("toolenv/Explore-v0", apis=list(weather.apis), protocol="react")
    env.reset(options={"query": weather.query})
    prompt = first_call_prompt(weather)
    assert prompt[0]["content"] == env.unwrapped.messages[0]["content"]
    assert prompt[-1] == {"role": "user", "content": weather.query}
    with_demo = first_call_prompt(weather, [{"query": "q", "messages": [{"role": "user", "content": "Weather in Oslo?"}]}])
    assert "Weather in Oslo?" in with_demo[0]["content"]


def test_evaluate_calls_counts_and_splits_per_api() -> None:
    tests = apichain_call_tests(2, apis=["get_weather", "get_city"], multi_step=0)
    by_id = {t.id: t for t in tests}

    def reply(conversation: list[dict[str, str]]) -> str:
        test = next(t for t in by_id.values() if t.query == conversation[-1]["content"])
        call = test.gold_call()
        return _react(call.name, dict(call.arguments)) if call.name == "get_weather" else "no idea"

    seen: list[str] = []
    out = evaluate_calls(ScriptedChatModel(reply), tests, demonstrations=lambda q: seen.append(q) or [])
    assert out["metrics"] == {"well_formed": 50.0, "api_match": 50.0, "correct": 50.0, "n": 4.0}
    assert out["per_api"]["get_weather"]["correct"] == 100.0 and out["per_api"]["get_city"]["correct"] == 0.0
    assert sorted(seen) == sorted(t.query for t in tests)  # retrieval asked once per test query
    assert call_metrics([])["n"] == 0.0


def test_end_to_end_plays_the_task_in_its_env() -> None:
    tests = [t for t in apichain_call_tests(0, multi_step=3) if t.env_id is not None]
    assert tests and all(t.index is not None for t in tests)
    import gymnasium as gym

    scripts: dict[str, list[str]] = {}
    for t in tests:
        env = gym.make(t.env_id, **t.env_kwargs, protocol="react")
        env.reset(options={"index": t.index})
        scripts[t.query] = list(env.unwrapped.gold_actions())

    def reply(conversation: list[dict[str, str]]) -> str:
        user = next(m["content"] for m in conversation if m["role"] == "user")
        question = next(q for q in scripts if q in user)
        turn = sum(m["role"] == "assistant" for m in conversation)
        return scripts[question][turn]

    out = evaluate_end_to_end(ScriptedChatModel(reply), tests)
    assert out["n"] == len(tests) and out["success"] == 100.0
    wrong = evaluate_end_to_end(ScriptedChatModel(lambda c: "Final Answer: 0"), tests)
    assert wrong["success"] < 100.0


def test_round_data_replays_every_earlier_api() -> None:
    rounds = [[{"api": "a", "i": i} for i in range(20)] + [{"api": "b", "i": i} for i in range(2)],
              [{"api": "c", "i": i} for i in range(5)]]
    data = round_data(rounds, 1, replay=0.1, rng=random.Random(0))
    apis = [e["api"] for e in data]
    assert apis.count("c") == 5 and apis.count("a") == 2 and apis.count("b") == 1
    assert [e["api"] for e in round_data(rounds, 1, replay=0.0, rng=random.Random(0))] == ["c"] * 5
    general = [{"api": "", "g": i} for i in range(3)]
    assert len(round_data(rounds, 0, replay=0.5, general=general, general_count=2, rng=random.Random(0))) == 24
    with pytest.raises(ValueError, match="round index"):
        round_data(rounds, 2, replay=0.1, rng=random.Random(0))


def test_continual_config_names_bad_fields() -> None:
    with pytest.raises(ValueError, match=r"Expected replay in \[0, 1\], got 1.5"):
        ContinualConfig(replay=1.5)
    with pytest.raises(ValueError, match="general_data"):
        ContinualConfig(general_per_round=3)


def _examples(api: str, n: int) -> list[dict[str, Any]]:
    from toolenv.protocols.react import ReactProtocol
    from toolenv.tools.pool import api_pool

    tool = api_pool([f"apichain:{api}"])[0].make_tool()
    tests = apichain_call_tests(n, split="train", apis=[api], multi_step=0)
    out = []
    for t in tests:
        call = t.gold_call()
        result = tool(call)
        out.append({"api": api, "query": t.query, "messages": [
            {"role": "system", "content": ReactProtocol().instructions([tool])}, {"role": "user", "content": t.query},
            {"role": "assistant", "content": ReactProtocol().format_call(call)}, {"role": "tool", "content": result.output},
            {"role": "assistant", "content": ReactProtocol().format_answer("done")}]})
    return out


def test_continual_learning_runs_rounds_and_resumes(tiny_model_dir: Path, tmp_path: Path) -> None:
    rounds = [_examples("get_weather", 3), _examples("get_city", 3)]
    tests = [apichain_call_tests(2, apis=["get_weather"], multi_step=0), apichain_call_tests(2, apis=["get_city"], multi_step=0)]
    calls: list[tuple[str, int]] = []

    def evaluate(model: str, ts: Any) -> dict[str, Any]:
        calls.append((Path(model).parent.name, len(ts)))
        return {"metrics": {"correct": 0.0, "n": float(len(ts))}, "per_api": {}}

    cfg = ContinualConfig(model=str(tiny_model_dir), out=str(tmp_path / "cl"), steps=2, batch_size=2, lora_r=4, device="cpu",
                          progress=False)
    result = continual_learning(cfg, rounds, tests, evaluate=evaluate)
    assert [r["round"] for r in result["rounds"]] == [1, 2]
    assert [len(r["per_round"]) for r in result["rounds"]] == [1, 2]
    assert result["rounds"][1]["train_examples"] == 3 + 1 + 0  # new + ceil(0.1 * 3) replayed
    assert calls == [("round1", 2), ("round2", 2), ("round2", 2)]  # each round's tests once; "seen" pools them
    assert result["rounds"][1]["seen"] == {"correct": 0.0, "n": 4.0}
    calls.clear()
    continual_learning(cfg, rounds, tests, evaluate=evaluate)  # finished rounds are not repeated
    assert calls == []
    train = [json.loads(x) for x in (tmp_path / "cl" / "round2" / "train.jsonl").read_text().splitlines()]
    assert {e["api"] for e in train} == {"get_weather", "get_city"}
