"""toolenv in verifiers v1: the taskset and env load as verifiers builds them; an episode with a scripted player records each term by name.

verifiers runs a real episode's model through a harness program it installs with ``uv`` from the
network, which this machine cannot reach; the player here is a scripted stand-in with verifiers'
own ``Segment`` and ``Trace`` types, driving the env's real ``run``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import gymnasium as gym
import pytest

vf = pytest.importorskip("verifiers.v1")
from verifiers.v1.agent import AssistantMessage, Segment  # noqa: E402

import toolenv  # noqa: E402, F401
from toolenv.integrations.verifiers import load_environment  # noqa: E402


class ScriptedPlayer:
    """verifiers' ``agents.player`` for one episode: replies from a script, user turns recorded."""

    def __init__(self, replies: list[str]) -> None:
        self.replies = list(replies)
        self.user_turns: list[str | None] = []
        self.trace = vf.Trace.model_construct(rewards={}, metrics={}, info={})

    @contextlib.asynccontextmanager
    async def interaction(self, task: Any) -> AsyncIterator[Any]:
        player = self

        class Interaction:
            trace = player.trace

            async def turn(self, message: str | None = None) -> Segment:
                player.user_turns.append(message)
                if not player.replies:
                    return Segment(messages=[], terminated=True)
                return Segment(messages=[AssistantMessage(content=player.replies.pop(0))])

        yield Interaction()


class Agents:
    def __init__(self, player: ScriptedPlayer) -> None:
        self.player = player


def test_taskset_holds_the_envs_tasks_with_its_prompts() -> None:
    env = load_environment("toolenv/APIChain-L1-v1", episodes=4)
    tasks = list(env.taskset.load())
    reference = gym.make("toolenv/APIChain-L1-v1")
    _, info = reference.reset(options={"index": 2})
    assert len(tasks) == 4 and tasks[2].data.prompt == info["prompt"] and tasks[2].data.system_prompt == reference.unwrapped.system_prompt
    with pytest.raises(ValueError, match="Unknown env id"):
        load_environment("toolenv/APIChain-L1-v9")


def test_an_episode_records_each_reward_term_by_name() -> None:
    env = load_environment("toolenv/APIChain-L1-v1", episodes=3)
    task = list(env.taskset.load())[1]
    reference = gym.make("toolenv/APIChain-L1-v1")
    reference.reset(options={"index": 1})
    gold = reference.unwrapped.gold_actions()
    player = ScriptedPlayer(["<tool_call>{oops</tool_call>", *gold])  # a malformed turn first: an observation, not an error
    asyncio.run(env.run(task, Agents(player)))
    rewards = {name: r.score for name, r in player.trace.rewards.items()}
    returns = [reference.step(a)[1] for a in gold]
    assert set(rewards) == set(reference.unwrapped.reward_weights)  # every term, by name
    assert rewards["format_error"] == pytest.approx(-0.1) and sum(rewards.values()) == pytest.approx(sum(returns) - 0.1)
    assert player.trace.metrics["success"] == 1.0 and player.trace.metrics["num_format_errors"] == 1.0
    assert player.user_turns[0] is None and player.user_turns[1].startswith("Invalid action")  # the model opens; observations answer
    assert player.trace.info["toolenv"]["step_rewards"] is not None
