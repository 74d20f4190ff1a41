"""Scripted episodes of the math env for each protocol: success, wrong answer, malformed call, truncation."""

from __future__ import annotations

import gymnasium as gym
import pytest

import toolenv  # noqa: F401
from tests.conftest import require
from toolenv.envs.math import MathEnv
from toolenv.protocols import make_protocol
from toolenv.types import ToolCall

PROTOCOLS = ["trice", "react", "json"]


def call(protocol: str, expression: str) -> str:
    return make_protocol(protocol).format_call(ToolCall("calculator", {"expression": expression}))


def answer(protocol: str, text: str) -> str:
    return make_protocol(protocol).format_answer(text)


@pytest.fixture(params=PROTOCOLS)
def protocol(request: pytest.FixtureRequest) -> str:
    return request.param


def make(protocol: str, **kwargs: object) -> gym.Env:
    env = gym.make("toolenv/Math-v0", protocol=protocol, **kwargs)
    env.reset(seed=0, options={"index": 3})
    return env


def test_success(protocol: str) -> None:
    env = make(protocol)
    task = env.unwrapped.task
    expression = task.solution[0].arguments["expression"]
    obs, reward, terminated, truncated, info = env.step(call(protocol, expression))
    assert not terminated and reward == 0.0
    assert info["action_kind"] == "call" and info["tool_outputs"] == [task.answer]
    assert info["reward_raw"]["call_wellformed"] == 1.0 and info["reward_raw"]["call_succeeded"] == 1.0
    assert task.answer in obs
    obs, reward, terminated, truncated, info = env.step(answer(protocol, f"The answer is {task.answer}."))
    assert terminated and not truncated and reward == 1.0 and info["success"]
    assert info["num_tool_calls"] == 1 and info["tool_used"] and info["turns"] == 2
    roles = [m["role"] for m in env.unwrapped.messages]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]


def test_tool_value_counts_when_the_answer_states_no_number(protocol: str) -> None:
    env = make(protocol)
    task = env.unwrapped.task
    env.step(call(protocol, task.solution[0].arguments["expression"]))
    *_, info = env.step(answer(protocol, "That is what the calculator said."))
    assert info["success"]


def test_wrong_answer(protocol: str) -> None:
    env = make(protocol)
    wrong = str(float(env.unwrapped.task.answer) + 1)
    obs, reward, terminated, truncated, info = env.step(answer(protocol, wrong))
    assert terminated and reward == 0.0 and not info["success"] and not info["tool_used"]
    assert info["reward_terms"]["answer_correct"] == 0.0


def test_malformed_call_is_feedback_with_a_penalty(protocol: str) -> None:
    env = make(protocol)
    bad = {
        "trice": "calculator((1+2)",
        "react": "Action: calculator\nAction Input: {oops",
        "json": "<tool_call>{not json}</tool_call>",
    }[protocol]
    obs, reward, terminated, truncated, info = env.step(bad)
    assert not terminated and reward == pytest.approx(-0.1)
    assert obs.startswith("Invalid action:") and info["reward_raw"]["format_error"] == 1.0
    assert info["num_format_errors"] == 1


def test_unknown_tool_gets_did_you_mean(protocol: str) -> None:
    env = make(protocol)
    text = make_protocol(protocol).format_call(ToolCall("calcuator", {"expression": "1+1"}))
    obs, reward, terminated, truncated, info = env.step(text)
    assert "unknown tool 'calcuator'. Did you mean 'calculator'?" in obs
    assert info["reward_raw"]["call_wellformed"] == 0.0 and info["reward_raw"]["format_error"] == 1.0


def test_tool_error_is_wellformed_but_not_succeeded(protocol: str) -> None:
    env = make(protocol)
    obs, reward, terminated, truncated, info = env.step(call(protocol, "1/0"))
    assert "Division by zero" in obs
    assert info["reward_raw"]["call_wellformed"] == 1.0 and info["reward_raw"]["call_succeeded"] == 0.0
    assert info["reward_raw"]["format_error"] == 0.0


def test_truncation_after_max_episode_steps(protocol: str) -> None:
    env = make(protocol)
    steps = env.spec.max_episode_steps
    for i in range(steps):
        obs, reward, terminated, truncated, info = env.step(call(protocol, f"{i}+1"))
    assert truncated and not terminated and not info["success"] and info["num_tool_calls"] == steps


def test_reward_weights_are_kwargs() -> None:
    env = make("trice", reward_weights={"call_succeeded": 0.25, "step_cost": -0.05})
    obs, reward, *_ = env.step("calculator(2+2)")
    assert reward == pytest.approx(0.2)
    with pytest.raises(ValueError, match=r"Unknown reward term 'call_sucess'.*Did you mean 'call_succeeded'\?"):
        gym.make("toolenv/Math-v0", reward_weights={"call_sucess": 1.0})


def test_custom_answer_reward() -> None:
    def always(completions: list[str], **kwargs: object) -> list[float]:
        return [1.0 for _ in completions]

    env = make("trice", answer_reward=always)
    assert env.step("no idea")[1] == 1.0


def test_reset_options_pick_tasks() -> None:
    env = gym.make("toolenv/Math-v0")
    _, a = env.reset(options={"index": 5})
    _, b = env.reset(seed=123, options={"task_id": a["task"]["id"]})
    assert a["task"] == b["task"]
    assert env.unwrapped.tasks.index_of(a["task"]["id"]) == 5
    assert a["task"]["answer"] not in env.reset(options={"index": 5})[0].split("\n")[-1].split()[-1:]
    with pytest.raises(ValueError, match=r"options\['index'\]"):
        env.reset(options={"index": 10**9})
    with pytest.raises(ValueError, match="Unknown reset option"):
        env.reset(options={"idx": 1})


def test_observation_never_shows_the_answer() -> None:
    env = gym.make("toolenv/Math-v0")
    for i in range(50):
        obs, info = env.reset(options={"index": i})
        assert info["task"]["question"] in obs
        assert f"answer: {info['task']['answer']}" not in obs.lower()


def test_step_after_end_raises() -> None:
    env = gym.make("toolenv/Math-v0").unwrapped
    with pytest.raises(gym.error.ResetNeeded):
        env.step("1")
    env.reset(seed=0)
    env.step("1")
    with pytest.raises(gym.error.ResetNeeded):
        env.step("1")


def test_non_string_action_is_feedback() -> None:
    env = make("trice")
    obs, reward, terminated, truncated, info = env.step(b"bytes")  # type: ignore[arg-type]
    assert obs == "Invalid action: Expected the action as text, got bytes." and not terminated


def test_json_protocol_messages_carry_tool_calls_and_schemas() -> None:
    env = make("json")
    env.step(call("json", "2*3"))
    assistant = env.unwrapped.messages[2]
    assert assistant["tool_calls"][0]["function"] == {"name": "calculator", "arguments": {"expression": "2*3"}}
    assert env.unwrapped.messages[3] == {"role": "tool", "name": "calculator", "content": "6"}
    schema = env.unwrapped.tool_schemas[0]["function"]
    assert schema["name"] == "calculator" and schema["parameters"]["required"] == ["expression"]


def test_chat_messages_render_with_a_chat_template() -> None:
    """The messages and schemas go straight into a Hugging Face chat template."""
    jinja2 = require("jinja2", "pip install jinja2 (a dependency of transformers chat templates)")
    template = (
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}"
        "{% if m.tool_calls %}{{ m.tool_calls | tojson }}{% endif %}\n{% endfor %}"
        "{% for t in tools %}{{ t.function.name }}{% endfor %}"
    )
    env = make("json")
    env.step(call("json", "2*3"))
    text = jinja2.Template(template).render(messages=env.unwrapped.messages, tools=env.unwrapped.tool_schemas)
    assert "<|tool|>6" in text and text.endswith("calculator")


def test_render_ansi_transcript() -> None:
    env = gym.make("toolenv/Math-v0", render_mode="ansi")
    env.reset(seed=0)
    env.step("calculator(2+2)")
    text = env.render()
    assert "[assistant]\ncalculator(2+2)" in text and "[tool (calculator)]\n4" in text
    with pytest.raises(ValueError, match="Unknown render_mode"):
        MathEnv(render_mode="human")
