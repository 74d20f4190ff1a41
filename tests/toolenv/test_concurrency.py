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
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda e: e.step("slow(5)"), envs))
    # every 5-second call was cut at its 0.3 s limit although no call ran on the main thread (no SIGALRM there)
    assert all("time limit" in obs.lower() or "timed out" in obs.lower() for obs, *_ in results), results[0][0]


def _meeting_env(concurrent: bool) -> ToolEnv:
    """Three calls that only succeed together: each waits at a barrier for the other two."""
    import threading

    barrier = threading.Barrier(3)

    def meet(key: str) -> str:
        """Wait for the other two calls, then answer.

        Args:
            key: The key.
        """
        barrier.wait(timeout=3.0)  # run one after another, the first call never meets the others
        return key.upper()

    meet.concurrent_safe = concurrent  # type: ignore[attr-defined]

    class Meeting(ToolEnv):
        def __init__(self, **kwargs: Any) -> None:
            task = Task("t", "Meet a, b and c.", "ABC")
            super().__init__(ListTaskSet([task], name="meet", split="train"), [meet], protocol="json", tool_timeout=5.0, **kwargs)

    env = Meeting()
    env.reset()
    return env


def test_calls_of_one_action_overlap_when_their_tools_allow() -> None:
    action = "".join(f'<tool_call>{{"name": "meet", "arguments": {{"key": "{k}"}}}}</tool_call>' for k in "abc")
    obs, reward, _, _, info = _meeting_env(True).step(action)
    assert info["tool_outputs"] == ["A", "B", "C"] and info["calls_ok"] == [True] * 3  # together, and in the calls' order
    _, _, _, _, info = _meeting_env(False).step(action)
    assert info["calls_ok"][0] is False  # one after another: the first call waited alone


def test_parallel_api_calls_score_as_one_after_another() -> None:
    """APIChain's tools are marked concurrent: a two-call action gives the same observation, reward and terms either way."""
    from toolenv.tools import apis

    env = gym.make("toolenv/APIChain-L1-v1", protocol="json")
    env.reset(options={"index": 0})
    calls = env.unwrapped.tasks[0].solution
    action = "".join(env.unwrapped.protocol.format_call(c) for c in [calls[0], calls[0]])
    together = env.step(action)
    for fn in apis.API_TOOLS.values():
        fn.concurrent_safe = False
    try:
        env2 = gym.make("toolenv/APIChain-L1-v1", protocol="json")
        env2.reset(options={"index": 0})
        apart = env2.step(action)
    finally:
        for fn in apis.API_TOOLS.values():
            fn.concurrent_safe = True
    assert together[0] == apart[0] and together[1] == apart[1] and together[4]["reward_terms"] == apart[4]["reward_terms"]
