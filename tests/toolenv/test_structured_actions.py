"""``step`` takes tool calls a trainer already parsed, with the same rewards, terms and errors as the equivalent text."""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import toolenv  # noqa: F401  (registers the env ids)
from toolenv.spaces import ToolAction


def _as_message(call: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": None,
            "tool_calls": [{"id": "c0", "type": "function", "function": {"name": call.name, "arguments": json.dumps(call.arguments)}}]}


def _play(env_id: str, protocol: str, actions: list[Any]) -> list[tuple[Any, ...]]:
    env = gym.make(env_id, protocol=protocol)
    env.reset(seed=0, options={"index": 1})
    out = []
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        out.append((obs, reward, terminated, truncated, info["reward_terms"], info["reward_raw"], info["success"], info.get("error"),
                    info.get("step_rewards")))
        if terminated or truncated:
            break
    messages = env.unwrapped.messages  # type: ignore[attr-defined]
    env.close()
    return out + [tuple(json.dumps(m, sort_keys=True) for m in messages)]


@pytest.mark.parametrize("protocol", ["trice", "react", "json", "python"])
@pytest.mark.parametrize("env_id", ["toolenv/APIChain-L1-v1", "toolenv/Math-v0"])
def test_structured_calls_step_like_their_text(env_id: str, protocol: str) -> None:
    env = gym.make(env_id, protocol=protocol)
    env.reset(seed=0, options={"index": 1})
    base: Any = env.unwrapped
    task = base.task
    text = base.gold_actions(task)
    env.close()
    answer = str(task.answer)
    as_lists = [[{"name": c.name, "arguments": dict(c.arguments)}] for c in task.solution] + [{"role": "assistant", "content": answer}]
    as_messages = [_as_message(c) for c in task.solution] + [{"role": "assistant", "content": answer, "tool_calls": []}]
    gold = _play(env_id, protocol, text)
    assert gold[-2][6] is True  # the gold episode succeeds
    assert _play(env_id, protocol, as_lists) == gold
    assert _play(env_id, protocol, as_messages) == gold


def test_a_wrong_call_and_a_wrong_tool_as_data_match_their_text() -> None:
    env_id, protocol = "toolenv/APIChain-L1-v1", "json"
    wrong = [{"name": "get_city", "arguments": {"city": "Atlantis"}}]
    unknown = [{"name": "get_wether", "arguments": {"city": "Oslo"}}]
    text = ['<tool_call>{"name": "get_city", "arguments": {"city": "Atlantis"}}</tool_call>',
            '<tool_call>{"name": "get_wether", "arguments": {"city": "Oslo"}}</tool_call>']
    assert _play(env_id, protocol, [wrong, unknown]) == _play(env_id, protocol, text)


@pytest.mark.parametrize("action, message", [
    ([{"arguments": {}}], "Invalid structured action: calls[0] has no tool name"),
    ([{"name": "get_city", "arguments": "{oops"}], "calls[0].arguments of get_city is not valid JSON"),
    ([{"name": "get_city", "arguments": [1, 2]}], "must be a JSON object, got list"),
    ({"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": "get_city"}]}, "tool_calls[0].function must be an object"),
    ({"role": "user", "content": "hi"}, "got role 'user'"),
    ({"role": "assistant", "content": "", "tool_calls": []}, "neither content nor tool_calls"),
    ({"role": "assistant", "contents": "42"}, "Unknown key(s) ['contents']"),
    ([], "Empty action"),
])
def test_malformed_structured_actions_are_invalid_actions_not_exceptions(action: Any, message: str) -> None:
    env = gym.make("toolenv/APIChain-L1-v1")
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(action)
    assert info["action_kind"] == "invalid" and message in info["error"] and obs.startswith("Invalid action")
    assert info["reward_raw"]["format_error"] == 1.0 and not terminated


def test_the_action_space_says_so_and_check_env_passes() -> None:
    env = gym.make("toolenv/APIChain-L1-v1")
    space = env.action_space
    assert isinstance(space, ToolAction)
    assert [{"name": "get_city", "arguments": {"city": "Oslo"}}] in space
    assert {"role": "assistant", "content": None, "tool_calls": []} in space and "get_city(Oslo)" in space
    assert 3 not in space and {"role": "user", "content": "x"} not in space
    check_env(env.unwrapped, skip_render_check=True)
