"""toolenv/Explore-v0: imagined queries, real tool calls, success, truncation, BFCL state, custom tools."""

from __future__ import annotations

import types

import gymnasium as gym
import pytest

import toolenv  # noqa: F401  (registers the ids)
from tests.conftest import require
from toolenv.envs.explore import EXPLORE_REWARD_WEIGHTS, ExploreEnv, explore_tasks
from toolenv.tools.pool import api_pool

ENV = "toolenv/Explore-v0"


def call(name: str, arguments: str) -> str:
    return f"Thought: try it\nAction: {name}\nAction Input: {arguments}"


def shout(text: str) -> str:
    """Upper-case a text.

    Args:
        text: What to shout.
    """
    return text.upper()


def test_registered_defaults() -> None:
    env = gym.make(ENV)
    assert env.spec is not None and env.spec.max_episode_steps == 5
    assert list(env.unwrapped.tools) == ["calculator"]
    assert env.unwrapped.protocol.name == "react"
    assert env.unwrapped.reward_weights == dict(EXPLORE_REWARD_WEIGHTS)


def test_query_option_sets_the_question() -> None:
    env = gym.make(ENV, apis=["apichain:get_city"])
    obs, info = env.reset(seed=0, options={"query": "How many people live in Oslo?"})
    assert obs.endswith("How many people live in Oslo?")
    assert "get_city(city: string)" in obs
    assert info["task"]["question"] == "How many people live in Oslo?"
    assert info["task"]["meta"] == {"imagined": True}
    assert env.unwrapped.messages[1] == {"role": "user", "content": info["prompt"]}
    same = gym.make(ENV, apis=["apichain:get_city"]).reset(options={"query": "How many people live in Oslo?"})[1]
    assert same["task"]["id"] == info["task"]["id"]


def test_successful_episode_records_history() -> None:
    env = gym.make(ENV, apis=["apichain:get_city"])
    env.reset(options={"query": "How many people live in Oslo?"})
    obs, reward, terminated, truncated, info = env.step(call("get_city", '{"city": "Oslo"}'))
    assert obs.startswith('Observation: {"city": "Oslo"')
    assert reward == pytest.approx(1.0) and not terminated
    assert info["reward_raw"]["call_wellformed"] == 1.0 and info["reward_raw"]["call_succeeded"] == 1.0
    assert not info["success"]
    obs, reward, terminated, truncated, info = env.step("Thought: done\nFinal Answer: About 700,000 people.")
    assert (obs, reward, terminated, info["success"]) == ("", 0.0, True, True)
    history = env.unwrapped.history
    assert [h["kind"] for h in history] == ["call", "answer"]
    assert history[0]["calls"] == [{"name": "get_city", "arguments": {"city": "Oslo"}}]
    assert history[0]["ok"] == [True] and '"country": "Norway"' in history[0]["outputs"][0]
    assert history[1]["answer"] == "About 700,000 people."


def test_failed_calls_and_format_errors() -> None:
    env = gym.make(ENV, apis=["apichain:get_city"])
    env.reset(options={"query": "Where is Atlantis?"})
    obs, reward, _, _, info = env.step(call("get_city", '{"city": "Atlantis"}'))
    assert "Unknown city 'Atlantis'" in obs
    assert reward == pytest.approx(0.5) and info["reward_raw"]["call_succeeded"] == 0.0
    obs, reward, _, _, info = env.step(call("get_city", '{"town": "Oslo"}'))
    assert "unexpected argument 'town'" in obs and reward == pytest.approx(-0.1)
    obs, reward, _, _, info = env.step("I think I should maybe call something")
    assert obs.startswith("Invalid action") and reward == pytest.approx(-0.1)
    obs, reward, terminated, _, info = env.step("Final Answer: It does not exist.")
    assert terminated and not info["success"]  # no successful call


def test_empty_final_answer_is_no_success() -> None:
    env = gym.make(ENV)
    env.reset(options={"query": "What is 6 times 7?"})
    env.step(call("calculator", '{"expression": "6*7"}'))
    _, _, terminated, _, info = env.step("Final Answer:   ")
    assert terminated and not info["success"]


def test_truncation_after_four_calls_and_an_answer_slot() -> None:
    env = gym.make(ENV)
    env.reset(options={"query": "Add some numbers."})
    for k in range(5):
        _, _, terminated, truncated, info = env.step(call("calculator", f'{{"expression": "{k}+1"}}'))
        assert not terminated
        assert truncated == (k == 4)
    assert info["num_tool_calls"] == 5


def test_reward_weights_are_kwargs() -> None:
    env = gym.make(ENV, reward_weights={"call_wellformed": 0.0, "call_succeeded": 1.0, "step_cost": -0.25})
    env.reset(options={"query": "What is 2+2?"})
    assert env.step(call("calculator", '{"expression": "2+2"}'))[1] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="Did you mean 'call_succeeded'"):
        gym.make(ENV, reward_weights={"call_succeded": 1.0})


def test_bad_query_options_raise() -> None:
    env = gym.make(ENV)
    with pytest.raises(ValueError, match="non-empty string"):
        env.reset(options={"query": "  "})
    with pytest.raises(ValueError, match="alone"):
        env.reset(options={"query": "x", "index": 0})
    with pytest.raises(ValueError, match="Did you mean 'get_city'"):
        gym.make(ENV, apis=["apichain:get_cty"])


def test_builtin_tasks_are_train_queries_with_gold_calls() -> None:
    from toolenv.datasets.ste import apichain_call_tests

    tasks = explore_tasks(api_pool(["apichain:get_country", "calculator"]))
    assert {t.meta["api"] for t in tasks} == {"get_country", "calculator"}
    held_out = {t.query for t in apichain_call_tests(1000, split="test", apis=["get_country", "calculator"], multi_step=0)}
    assert not {t.question for t in tasks} & held_out
    env = gym.make(ENV, apis=["apichain:get_country", "calculator"])
    for index in (0, len(tasks) - 1):
        env.reset(options={"index": index})
        *_, info = env.step(env.unwrapped.gold_actions()[0])
        assert info["calls_ok"] == [True]


def test_custom_function_and_generic_query() -> None:
    env = gym.make(ENV, apis=[shout])
    obs, info = env.reset(seed=0)
    assert "Show me what shout can do" in info["prompt"]
    obs, *_ = env.step(call("shout", '{"text": "hey"}'))
    assert obs == "Observation: HEY"
    assert env.step("Final Answer: HEY")[4]["success"]


def test_seeded_resets_are_deterministic() -> None:
    def ids(seed: int) -> list[str]:
        env = gym.make(ENV, apis=["apichain"])
        out = [env.reset(seed=seed)[1]["task"]["id"]]
        out += [env.reset()[1]["task"]["id"] for _ in range(5)]
        return out

    assert ids(3) == ids(3) and ids(3) != ids(4)


def test_repr() -> None:
    assert repr(ExploreEnv(["calculator"])) == "ExploreEnv(apis=['calculator'], protocol='react')"


@pytest.fixture(scope="module")
def bfcl() -> types.ModuleType:
    require("mpmath", "pip install --no-deps bfcl-eval==2026.3.23 && pip install mpmath")
    return require("bfcl_eval", "pip install --no-deps bfcl-eval==2026.3.23 && pip install mpmath")


def test_bfcl_class_state_is_shared_in_an_episode_and_fresh_after_reset(bfcl: types.ModuleType) -> None:
    env = gym.make(ENV, apis=["bfcl:GorillaFileSystem"])
    obs, info = env.reset(options={"query": "Make a folder called drafts inside document."})
    assert obs in env.observation_space and len(obs) > 5_000  # every function doc of the class
    env.step(call("cd", '{"folder": "document"}'))
    env.step(call("mkdir", '{"dir_name": "drafts"}'))
    obs, *_ = env.step(call("ls", "{}"))
    assert "drafts" in obs
    _, _, terminated, _, info = env.step("Final Answer: Created document/drafts.")
    assert terminated and info["success"]
    env.reset(options={"query": "List the folders."})
    obs, *_ = env.step(call("ls", "{}"))
    assert obs == 'Observation: {"current_directory_content": ["document", "archive"]}'


def test_bfcl_wrong_arguments_are_format_errors(bfcl: types.ModuleType) -> None:
    env = gym.make(ENV, apis=["bfcl:GorillaFileSystem.cd"])
    env.reset(seed=0)
    obs, reward, _, _, info = env.step(call("cd", '{"path": "document"}'))
    assert obs.startswith("Observation: Error during execution")
    assert info["reward_raw"]["format_error"] == 1.0 and reward == pytest.approx(-0.1)
