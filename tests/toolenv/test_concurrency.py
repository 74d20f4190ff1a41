"""Stepping many envs at once: from an event loop (toolenv.astep) and from threads, with the same results as one at a time and time limits kept."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import gymnasium as gym

import toolenv
from toolenv.core import ToolEnv
from toolenv.datasets import ListTaskSet
from toolenv.types import Task, ToolCall


def _episode(env: gym.Env, index: int) -> list[Any]:
    env.reset(options={"index": index})
    out = []
    for action in env.unwrapped.gold_actions():
        obs, reward, terminated, truncated, info = env.step(action)
        out.append((obs, reward, terminated, truncated, info["reward_terms"]))
    return out


def test_async_steps_equal_sequential_steps() -> None:
    ids = ["toolenv/APIChain-L1-v1", "toolenv/Math-v0"]
    expected = {(e, i): _episode(gym.make(e), i) for e in ids for i in range(4)}

    async def play(env_id: str, index: int) -> list[Any]:
        env = gym.make(env_id)
        env.reset(options={"index": index})
        out = []
        for action in env.unwrapped.gold_actions():
            obs, reward, terminated, truncated, info = await toolenv.astep(env, action)
            out.append((obs, reward, terminated, truncated, info["reward_terms"]))
        return out

    async def main() -> list[list[Any]]:
        return await asyncio.gather(*(play(e, i) for e, i in expected))

    assert asyncio.run(main()) == list(expected.values())


def test_threads_step_envs_at_once_and_time_limits_hold() -> None:
    def slow(seconds: float) -> str:
        """Sleep, then answer.

        Args:
            seconds: How long to sleep.
        """
        time.sleep(float(seconds))
        return "done"

    class SlowEnv(ToolEnv):
        def __init__(self, **kwargs: Any) -> None:
            task = Task("t", "Call slow(5).", "done", (ToolCall("slow", {"seconds": 5}),))
            super().__init__(ListTaskSet([task], name="slow", split="train"), [slow], tool_timeout=0.3, **kwargs)

    envs = [SlowEnv() for _ in range(6)]
    for e in envs:
        e.reset()
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda e: e.step("slow(5)"), envs))
    elapsed = time.perf_counter() - start
    assert all("time limit" in obs.lower() or "timed out" in obs.lower() for obs, *_ in results), results[0][0]
    assert elapsed < 3.0  # six 5-second calls, each cut at 0.3 s, in parallel

