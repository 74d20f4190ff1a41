"""The README's "write your own tool-use env" example, verbatim in spirit: it must keep working."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from toolenv.core import ToolEnv
from toolenv.datasets import ListTaskSet
from toolenv.types import Task, ToolCall

CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Kenya": "Nairobi"}


def lookup_capital(country: str) -> str:
    """Look up the capital city of a country.

    Args:
        country: The country's English name, e.g. "France".
    """
    return CAPITALS[country]


def exact_match(completions: list[str], *, answer: list[str], **kwargs: Any) -> list[float]:
    return [float(c.strip().rstrip(".").lower() == a.lower()) for c, a in zip(completions, answer)]


class CapitalsEnv(ToolEnv):
    def __init__(self, protocol: str = "json", **kwargs: Any) -> None:
        tasks = ListTaskSet(
            [
                Task(f"capital-{c}", f"What is the capital of {c}?", city, (ToolCall("lookup_capital", {"country": c}),))
                for c, city in CAPITALS.items()
            ],
            name="capitals",
            split="train",
        )
        super().__init__(tasks, [lookup_capital], protocol=protocol, answer_reward=exact_match, **kwargs)


gym.register("mylab/Capitals-v0", entry_point=CapitalsEnv, max_episode_steps=3)


def test_custom_env_plays_and_checks() -> None:
    from gymnasium.utils.env_checker import check_env

    env = gym.make("mylab/Capitals-v0")
    check_env(env.unwrapped)
    obs, info = env.reset(seed=0, options={"task_id": "capital-Japan"})
    assert "lookup_capital" in obs and "What is the capital of Japan?" in obs
    obs, reward, *_ = env.step('<tool_call>{"name": "lookup_capital", "arguments": {"country": "Japan"}}</tool_call>')
    assert obs == "Tokyo"
    obs, reward, terminated, truncated, info = env.step("Tokyo.")
    assert terminated and info["success"] and reward == 1.0


def test_custom_tool_error_is_feedback() -> None:
    env = gym.make("mylab/Capitals-v0", protocol="react")
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step('Action: lookup_capital\nAction Input: {"country": "Atlantis"}')
    assert obs == "Observation: Error: KeyError: 'Atlantis'" and info["reward_raw"]["call_succeeded"] == 0.0
    assert env.unwrapped.gold_actions()[0].startswith("Thought: I should use lookup_capital.")
